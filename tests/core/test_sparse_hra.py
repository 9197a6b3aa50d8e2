"""core/adapters sparse.py, householder.py, sara.py, train.py: exactness against dense references, file checks,
SaRA's checkpoint layout and optimizer."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
sparse = importlib.import_module("pyra_pack.core.adapters.sparse")
hra = importlib.import_module("pyra_pack.core.adapters.householder")
sara = importlib.import_module("pyra_pack.core.adapters.sara")
train = importlib.import_module("pyra_pack.core.adapters.train")
LoraFileError = importlib.import_module("pyra_pack.core.adapters.lora_file").LoraFileError

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def rand_delta(shape, n, seed=0) -> sparse.SparseDelta:
    g = torch.Generator().manual_seed(seed)
    numel = torch.Size(shape).numel()
    idx = torch.randperm(numel, generator=g)[: min(n, numel // 2)].sort().values
    return sparse.SparseDelta(idx, torch.randn(idx.numel(), generator=g), tuple(shape))


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("shape", [(37, 23), (8, 5, 3, 3), (11,)])
@pytest.mark.parametrize("strength", [1.0, -0.7])
def test_sparse_apply_equals_the_dense_delta(shape, strength):
    w = torch.randn(shape)
    d = rand_delta(shape, 40)
    ref = w + strength * sparse.dense_delta(d)
    out = sparse.apply_sparse(w.clone(), d, strength)
    assert torch.equal(out, ref)
    assert not torch.equal(out, w)
    strided = w.clone().mT if w.ndim == 2 else None  # a non-contiguous target takes the dense route
    if strided is not None:
        d_t = sparse.SparseDelta(d.idx, d.val, tuple(strided.shape))
        assert torch.equal(sparse.apply_sparse(strided.clone(), d_t, strength),
                           strided + strength * sparse.dense_delta(d_t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_merged_weight_equals_the_activation_path(dtype):
    w, b = torch.randn(48, 40), torch.randn(48)
    d = rand_delta((48, 40), 200, seed=1)
    x = torch.randn(3, 5, 40)
    merged = torch.nn.functional.linear(x.to(dtype), sparse.apply_sparse(w.to(dtype, copy=True), d, 0.8), b.to(dtype))
    bypass = sparse.sparse_linear(x.to(dtype), w.to(dtype), b.to(dtype), d, 0.8)
    base = torch.nn.functional.linear(x, w, b)
    assert rel(bypass, merged) <= sparse.SPARSE_RTOL[dtype]
    assert rel(merged, base) > 10 * sparse.SPARSE_RTOL[dtype]


def test_sparse_files_round_trip_and_reject_bad_tensors():
    d = rand_delta((6, 7), 9)
    sd = sparse.to_tensors("diffusion_model.a", d)
    back = sparse.from_tensors(sd, "diffusion_model.a")
    assert torch.equal(back.idx, d.idx) and torch.equal(back.val, d.val) and back.shape == (6, 7)
    assert sparse.from_tensors(sd, "diffusion_model.b") is None
    with pytest.raises(sparse.SparseFormatError, match=r"diffusion_model\.a: .*made for shape \(6, 7\)"):
        sparse.check(back, "diffusion_model.a", (7, 6))
    bad = dict(sd, **{"diffusion_model.a.sparse_idx": d.idx + 42})
    with pytest.raises(sparse.SparseFormatError, match="outside"):
        sparse.from_tensors(bad, "diffusion_model.a")
    bad = dict(sd, **{"diffusion_model.a.sparse_val": d.val[:-1]})
    with pytest.raises(sparse.SparseFormatError, match="same length"):
        sparse.from_tensors(bad, "diffusion_model.a")
    bad = dict(sd, **{"diffusion_model.a.sparse_idx": d.idx.float()})
    with pytest.raises(sparse.SparseFormatError, match="int32/int64"):
        sparse.from_tensors(bad, "diffusion_model.a")
    with pytest.raises(sparse.SparseFormatError, match="incomplete"):
        sparse.from_tensors({"diffusion_model.a.sparse_idx": d.idx}, "diffusion_model.a")


def noisy_vectors(d, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    return hra.init_vectors(d, r, g) + 0.3 * torch.randn(d, r, generator=g)


def test_hra_is_orthogonal_and_matches_the_reference():
    u = noisy_vectors(30, 6)
    h = hra.householder_matrix(u)
    assert torch.allclose(h.mT @ h, torch.eye(30, dtype=torch.float64), atol=1e-12)
    w = torch.randn(17, 30, dtype=torch.float64)
    assert rel(hra.apply_hra(w, u), w @ h) < 1e-13
    assert rel(w @ h, w) > 0.1
    # H is orthogonal, so W' keeps W's singular values
    assert torch.allclose(torch.linalg.svdvals(w @ h), torch.linalg.svdvals(w), atol=1e-10)


def test_hra_paper_init_is_the_identity_and_zero_vectors_are_rejected():
    u = hra.init_vectors(24, 8, torch.Generator().manual_seed(3))
    assert torch.allclose(hra.householder_matrix(u), torch.eye(24, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="even"):
        hra.init_vectors(24, 3)
    u[:, 2] = 0
    with pytest.raises(hra.HouseholderFormatError, match="column 2 has zero"):
        hra.check(u, "diffusion_model.x")
    with pytest.raises(hra.HouseholderFormatError, match=r"diffusion_model\.x: .*length 24.*\(5, 7\)"):
        hra.check(noisy_vectors(24, 2), "diffusion_model.x", (5, 7))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_hra_merged_weight_equals_the_activation_path(dtype, strength):
    w, b, u = torch.randn(20, 32), torch.randn(20), noisy_vectors(32, 4, seed=2)
    x = torch.randn(4, 32)
    ref = torch.nn.functional.linear(x.double(), torch.lerp(w.double(), w.double() @ hra.householder_matrix(u),
                                                            strength), b.double())
    merged = torch.nn.functional.linear(x.to(dtype), hra.apply_hra(w.to(dtype, copy=True), u, strength), b.to(dtype))
    bypass = hra.hra_linear(x.to(dtype), w.to(dtype), b.to(dtype), u, strength)
    assert rel(merged, ref) <= hra.HRA_RTOL[dtype]
    assert rel(bypass, ref) <= hra.HRA_RTOL[dtype]
    assert rel(ref, torch.nn.functional.linear(x.double(), w.double(), b.double())) > 0.05


def test_hra_conv_weight_reflects_the_flattened_input_space():
    w, u = torch.randn(6, 4, 3, 3, dtype=torch.float64), noisy_vectors(36, 2)
    out = hra.apply_hra(w, u)
    assert out.shape == w.shape
    assert rel(out.flatten(1), w.flatten(1) @ hra.householder_matrix(u)) < 1e-13


# diffusers UNet2DConditionModel.parameters() of SD1.5, first and some later entries (read from diffusers).
SD15_ORDER_FACTS = [
    "conv_in.weight", "conv_in.bias", "time_embedding.linear_1.weight", "time_embedding.linear_1.bias",
    "time_embedding.linear_2.weight", "time_embedding.linear_2.bias", "down_blocks.0.attentions.0.norm.weight",
    "down_blocks.0.attentions.0.norm.bias", "down_blocks.0.attentions.0.proj_in.weight",
]


def test_diffusers_order_follows_module_registration():
    names = [
        "mid_block.resnets.0.conv1.weight", "up_blocks.0.resnets.0.norm1.weight", "conv_out.bias",
        "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.attentions.0.proj_in.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", "down_blocks.0.attentions.0.norm.bias",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight", "time_embedding.linear_1.bias",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight", "mid_block.attentions.0.norm.weight",
        "down_blocks.10.resnets.0.conv1.weight", "down_blocks.2.resnets.0.conv1.weight",
        "conv_in.weight", "down_blocks.0.downsamplers.0.conv.weight", "down_blocks.0.attentions.0.norm.weight",
        "time_embedding.linear_1.weight", "conv_in.bias",
    ]
    order = sara.diffusers_order(names)
    assert order[:4] == ["conv_in.weight", "conv_in.bias", "time_embedding.linear_1.weight",
                         "time_embedding.linear_1.bias"]
    assert order[4:10] == ["down_blocks.0.attentions.0.norm.weight", "down_blocks.0.attentions.0.norm.bias",
                           "down_blocks.0.attentions.0.proj_in.weight",
                           "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight",
                           "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                           "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"]
    assert order.index("down_blocks.2.resnets.0.conv1.weight") < order.index("down_blocks.10.resnets.0.conv1.weight")
    assert order.index("up_blocks.0.resnets.0.norm1.weight") < order.index("mid_block.attentions.0.norm.weight")
    assert order.index("mid_block.attentions.0.norm.weight") < order.index("mid_block.resnets.0.conv1.weight")
    assert order[-1] == "conv_out.bias"
    with pytest.raises(ValueError, match="not part of an SD-family"):
        sara.diffusers_order(["transformer_blocks.0.attn.to_q.weight"])


def write_sara_checkpoint(path, params, threshold, seed=0):
    """A file as SaRA's optimizer.save_params() + torch.save write it: final weights at the initial mask."""
    g = torch.Generator().manual_seed(seed)
    data = {"threshold": threshold}
    for i, (_, w) in enumerate(params):
        vals = w.flatten()[w.abs() .flatten() < threshold]
        data[i] = vals + 1e-3 * torch.randn(vals.shape, generator=g)
    torch.save(data, path)
    return data


def test_sara_checkpoint_converts_to_deltas(tmp_path):
    g = torch.Generator().manual_seed(0)
    params = [("a.weight", 0.01 * torch.randn(70, 80, generator=g)), ("a.bias", torch.zeros(70)),
              ("b.weight", torch.ones(5))]
    data = write_sara_checkpoint(tmp_path / "sara.pt", params, 2e-3)
    threshold, values = sara.read_checkpoint(tmp_path / "sara.pt")
    assert threshold == 2e-3 and sorted(values) == [0, 1, 2]
    deltas = sara.to_sparse(values, threshold, params)
    assert set(deltas) == {"a.weight", "a.bias"}  # b has no small entries
    for i, (name, w) in enumerate(params[:2]):
        final = sparse.apply_sparse(w.clone(), deltas[name])
        mask = w.abs() < threshold
        assert torch.allclose(final[mask], data[i], atol=1e-7) and torch.equal(final[~mask], w[~mask])
    # a base in a lower precision selects other entries: the count check names the parameter
    with pytest.raises(LoraFileError, match=r"a\.weight has .* values"):
        sara.to_sparse(values, threshold, [(n, (w + 1e-3).half().float()) for n, w in params])
    with pytest.raises(LoraFileError, match="another architecture"):
        sara.to_sparse(values, threshold, params[:2])


def test_sara_checkpoint_loading_is_safe(tmp_path):
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(LoraFileError, match="corrupt"):
        sara.read_checkpoint(tmp_path / "trunc.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    torch.save({"threshold": 1e-3, 0: Evil()}, tmp_path / "evil.pt")
    with pytest.raises(LoraFileError, match="holds Python code"):
        sara.read_checkpoint(tmp_path / "evil.pt")
    torch.save({0: torch.zeros(3)}, tmp_path / "nothr.pt")
    with pytest.raises(LoraFileError, match="threshold"):
        sara.read_checkpoint(tmp_path / "nothr.pt")


def test_sparse_trainable_and_sara_optimizer():
    g = torch.Generator().manual_seed(0)
    w = 0.01 * torch.randn(96, 80, generator=g)
    a = train.SparseTrainable(w, 5e-3)
    assert torch.equal(a(w), w)  # zero-initialised delta
    target = w.flatten().index_add(0, a.idx, 0.01 * torch.randn(a.idx.shape, generator=g)).view(w.shape)
    opt = train.SaraOptimizer([a], 5e-3, lr=1e-3, lambda_rank=1e-5, reselect_step=30, seed=0)
    assert opt.matrices == [a]
    # the host's TrainSampler (0.11+) reads the groups before each step
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(a.delta)]
    losses = []
    for _ in range(60):
        loss = (a(w) - target).square().sum()
        loss.backward()
        losses.append(float(loss.detach()))
        if opt.steps == 40:
            frozen_before = a.delta[a.frozen].clone()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.5 * losses[0]
    assert len(opt.rank_losses) == 60
    assert 0 < opt.frozen_fraction() < 1  # entries that grew past the threshold at step 30 are frozen
    assert torch.equal(a.delta[a.frozen], frozen_before)
    out = a(w)
    assert torch.equal(out.flatten()[a.idx], (w.flatten()[a.idx] + a.delta).detach())
    unselected = torch.ones(w.numel(), dtype=torch.bool)
    unselected[a.idx] = False
    assert torch.equal(out.flatten()[unselected], w.flatten()[unselected])


def test_householder_trainable_starts_at_identity_and_learns():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 16, generator=g)
    a = train.HouseholderTrainable(w, 4, g)
    assert torch.allclose(a(w), w, atol=1e-5)
    target = w @ hra.householder_matrix(noisy_vectors(16, 2)).float()
    opt = torch.optim.Adam(a.parameters(), lr=2e-2)
    first = None
    for _ in range(50):
        loss = (a(w) - target).square().mean()
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward of fn() (each saved tensor counted once)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_householder_training_keeps_no_copy_of_the_weight_per_reflection():
    """The rank-1 loop kept one (out, d) intermediate per reflection for the backward (0.19 GB per reflection on
    the demo UNet, a server killed at 256). The compact WY form keeps the weight and (out, r)/(d, r)/(r, r) terms."""
    out, d, r = 512, 512, 256
    w = torch.randn(out, d)
    a = train.HouseholderTrainable(w, r, torch.Generator().manual_seed(0))
    kept = saved_bytes(lambda: a(w).square().sum())
    weight_bytes = w.numel() * w.element_size()
    small = (out * r + d * r + r * r) * 4
    assert kept <= weight_bytes + 4 * small, (kept, weight_bytes, small)
    assert kept < r * weight_bytes / 8, "far below one copy of the weight per reflection"


@pytest.mark.parametrize("dtype", DTYPES)
def test_compact_wy_product_equals_the_reflections_one_by_one(dtype):
    """reflect_rows (three matmuls) against the fp64 product of the r reflections, incl. the identity pairs of the
    paper's init and nearly parallel vectors (T^-1 stays triangular with diagonal 1/2)."""
    g = torch.Generator().manual_seed(3)
    u = torch.randn(40, 10, generator=g)
    u[:, 5] = u[:, 4] + 1e-3 * torch.randn(40, generator=g)
    w = torch.randn(24, 40, generator=g)
    truth = w.double() @ hra.householder_matrix(u)
    assert rel(hra.reflect_rows(w.to(dtype), u), truth) <= hra.HRA_RTOL[dtype]
    x = torch.randn(7, 40, generator=g)
    assert rel(hra.reflect_inputs(x.to(dtype), u), x.double() @ hra.householder_matrix(u).mT) <= hra.HRA_RTOL[dtype]
    pairs = hra.init_vectors(40, 10, g)
    assert rel(hra.reflect_rows(w, pairs), w.double()) < 1e-6
