"""core/sparse: N:M masks (magnitude, Wanda) and low-rank compensation against straightforward references."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
from packload import load_pack_package

load_pack_package()
sp = importlib.import_module("pyra_pack.core.sparse")


def loop_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Reference: for every row and every group of m input channels, keep the n largest by a Python sort."""
    mask = torch.zeros(score.shape, dtype=torch.bool)
    for row, start in itertools.product(range(score.shape[0]), range(0, score.shape[1], m)):
        group = score[row, start:start + m].tolist()
        for j in sorted(range(m), key=lambda j: -group[j])[:n]:
            mask[row, start + j] = True
    return mask


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(8, 16), (5, 24), (32, 64)])
def test_magnitude_mask_matches_loop_reference(n, m, shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape) + n))
    sparse, mask = sp.prune_nm(w, n, m)
    assert torch.equal(mask, loop_mask(w.abs(), n, m))
    assert torch.equal(sparse, w * mask) and sp.is_nm_sparse(sparse, n, m)
    assert int(mask.sum()) == shape[0] * shape[1] * n // m


def test_wanda_mask_matches_loop_reference_and_differs_from_magnitude():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, generator=g)
    stats = sp.ActivationNorms(32)
    batches = [torch.randn(2, 10, 32, generator=g) * torch.linspace(0.01, 10, 32) for _ in range(3)]
    for x in batches:
        stats.update(x)
    assert stats.tokens == 60
    assert torch.allclose(stats.norm, torch.cat(batches).reshape(-1, 32).norm(dim=0), rtol=1e-5)
    _, mask = sp.prune_nm(w, 2, 4, score="wanda", act_norm=stats.norm)
    assert torch.equal(mask, loop_mask(w.abs() * stats.norm, 2, 4))
    assert not torch.equal(mask, sp.prune_nm(w, 2, 4)[1]), "loud channels must change the Wanda mask"


def test_wrong_mask_axis_is_detected():
    """A mask grouped along the output dim (the wrong axis for sparse tensor cores) fails the 2:4 check."""
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    wrong = w * sp.nm_mask(w.abs().T, 2, 4).T  # groups of 4 output rows per input column
    assert sp.is_nm_sparse(wrong.T, 2, 4)
    assert not sp.is_nm_sparse(wrong, 2, 4)
    assert sp.is_nm_sparse(sp.prune_nm(w)[0], 2, 4)


@pytest.mark.parametrize("bad", [dict(shape=(8, 18)), dict(shape=(8,)), dict(shape=(8, 16), n=5)])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"divisible|2-D|N <= M"):
        sp.prune_nm(torch.randn(bad["shape"]), bad.get("n", 2), 4)
    with pytest.raises(ValueError, match="calibration"):
        sp.prune_nm(torch.randn(8, 16), score="wanda")


def test_lowrank_compensation_is_the_truncated_svd():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(48, 64, generator=g, dtype=torch.float64)
    s, _ = sp.prune_nm(w)
    a, b = sp.lowrank_compensation(w, s, 8)
    assert a.shape == (64, 8) and b.shape == (8, 48) and a.dtype == torch.float64
    # reference: best rank-8 approximation of the residual from a full SVD, compared as a product
    u, sig, vh = torch.linalg.svd(w - s)
    best = (u[:, :8] * sig[:8]) @ vh[:8]
    assert torch.allclose((a @ b).T, best, atol=1e-5)
    x = torch.randn(32, 64, generator=g, dtype=torch.float64)
    err_plain = (x @ s.T - x @ w.T).norm()
    err_comp = (x @ s.T + (x @ a) @ b - x @ w.T).norm()
    assert err_comp < err_plain
    full_a, full_b = sp.lowrank_compensation(w, s, 64)
    assert torch.allclose(x @ s.T + (x @ full_a) @ full_b, x @ w.T, atol=1e-8), "full rank restores W exactly"


@pytest.mark.parametrize(("name", "kind"), [
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_q", "attention"),
    ("input_blocks.1.1.transformer_blocks.0.ff.net.0.proj", "mlp"),
    ("double_blocks.0.img_attn.qkv", "attention"), ("double_blocks.0.txt_mlp.2", "mlp"),
    ("single_blocks.3.linear1", "mlp"), ("blocks.0.self_attn.o", "attention"), ("blocks.0.ffn.0", "mlp"),
    ("time_embed.0", "other"), ("input_blocks.1.1.proj_in", "other"), ("double_blocks.0.img_mod.lin", "other"),
])
def test_layer_kinds(name, kind):
    assert sp.layer_kind(name) == kind
    assert sp.compile_filter("all")(name)
    for other in ("attention", "mlp"):
        assert sp.compile_filter(other)(name) == (other == kind)


def test_regex_filter_and_its_errors():
    keep = sp.compile_filter("regex", r"img_mlp\.\d")
    assert keep("double_blocks.1.img_mlp.0") and not keep("double_blocks.1.txt_mlp.0")
    for kind, pattern, msg in [("regex", "", "needs a pattern"), ("regex", "(", "invalid"), ("mlps", "", "unknown")]:
        with pytest.raises(ValueError, match=msg):
            sp.compile_filter(kind, pattern)


@pytest.mark.parametrize("shape", [(7, 12), (64, 128), (3, 4)])
def test_packed_mask_round_trips_at_one_bit_per_entry(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = sp.PackedMask(mask)
    assert packed.bits.dtype == torch.uint8 and packed.nbytes == -(-mask.numel() // 8)
    assert torch.equal(packed.unpack(), mask)
    flipped = mask.clone()
    flipped[0, 0] = ~flipped[0, 0]
    assert not torch.equal(sp.PackedMask(flipped).unpack(), mask), "a one-entry change must survive packing"
    with pytest.raises(ValueError, match="bool"):
        sp.PackedMask(mask.float())


def test_packed_mask_keeps_a_kept_exact_zero():
    """The reason to store the mask: a kept weight that is exactly 0 is lost by re-deriving it from w != 0."""
    sparse, mask = sp.prune_nm(torch.tensor([[0.0, 3.0, 0.0, 0.0]]))  # keeps 3.0 and one of the zeros
    assert int(mask.sum()) == 2 and int((sparse != 0).sum()) == 1
    assert torch.equal(sp.PackedMask(mask).unpack(), mask)
