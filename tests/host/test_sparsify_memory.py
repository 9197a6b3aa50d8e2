"""PyraSparsify's memory rules (issue 6): on the fast op a layer keeps only the compressed weight on the GPU; the
mask is bit-packed on the offload device; LoRA, unpatch and unload keep working. CPU checks use a stand-in for
the compressed op (it keeps its own copy of the weight, as cuSPARSELt does); the GPU tests use the real one."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from sparse_helpers import kohya_lora

MODULES = ("host.sparsify", "host.sparse_linear", "host.demo_models", "core.sparse", "kernels.sparse24_linear")


@pytest.fixture(scope="module")
def env(comfy_host):
    return tuple(comfy_host.module(name) for name in MODULES)


@pytest.fixture(scope="module")
def gpu_env(gpu_host):
    return tuple(gpu_host(name) for name in MODULES)


@pytest.fixture
def on_the_kernel(gpu_env, monkeypatch):
    """Every layer on cuSPARSELt: these small test layers are ones where the dense matmul is faster, so the node
    would keep them dense. The GPU tests here check the kernel path's memory and results; the choice itself is
    tested in tests/kernels/test_sparse24_linear.py."""
    monkeypatch.setattr(gpu_env[1], "dense_is_faster", lambda *args, **kwargs: False)


def materialised_weights():
    """The pack's host/features.materialised_weights, from the package the fixture loaded (dynamic VRAM, the GPU
    default of 0.16+, builds comfy.ops layers without weights)."""
    pack = next(n for n in sys.modules if n.endswith(".host.sparsify")).rsplit(".", 1)[0]
    return importlib.import_module(f"{pack}.features").materialised_weights()


def linear(out_f: int, in_f: int, dtype=torch.float32, seed=0):
    import comfy.ops

    with materialised_weights():
        src = comfy.ops.disable_weight_init.Linear(in_f, out_f, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        src.weight.copy_(torch.randn(out_f, in_f, generator=g) / in_f**0.5)
        src.bias.copy_(torch.randn(out_f, generator=g))
    return src


def sparse_layer(env, src, home="cpu"):
    _, sl, _, sp, _ = env
    sparse, mask = sp.prune_nm(src.weight.detach())
    return sl.PyraSparseLinear.from_linear(src, sparse, mask, None, home), sparse, mask


def test_the_mask_is_packed_and_no_dense_buffer_is_registered(env):
    mod, sparse, mask = sparse_layer(env, linear(32, 64))
    assert mod.mask.nbytes * 8 == mask.numel() and torch.equal(mod.sparse_mask, mask)
    tensors = dict(mod.named_parameters()) | dict(mod.named_buffers())
    assert set(tensors) == {"weight", "bias"}, "the host moves every parameter and buffer to the GPU"
    assert torch.equal(mod.weight, sparse)


def test_a_compressed_op_sends_the_dense_format_home_and_is_rebuilt_for_a_patched_weight(env, monkeypatch):
    """Stand-in op: holds a private copy and drops the dense weight, as the cuSPARSELt backend does."""
    _, sl, _, _, k24 = env

    class Compressed(k24.Sparse24Linear):
        def __init__(self, weight, bias=None, lowrank=None, keep_dense=True, **kw):
            super().__init__(weight, bias, lowrank, backend="reference")
            self.private = weight.detach().clone()
            self.weight = None if not keep_dense else weight

        def __call__(self, x, dense=None):
            return k24.sparse24_linear(x, self.private, self.bias, self.lowrank)

    monkeypatch.setattr(sl, "Sparse24Linear", Compressed)
    mod, sparse, mask = sparse_layer(env, linear(32, 64))
    x = torch.randn(5, 64)
    assert torch.allclose(mod(x), x @ sparse.T + mod.bias, atol=1e-5)
    first = mod._op
    assert first.weight is None and mod.weight.data_ptr() == mod._home[2].data_ptr()
    mod(x)
    assert mod._op is first, "the op is reused while the weight is unchanged"
    patched = sparse + 0.3  # what the host hands set_weight: W + LoRA delta, dense
    mod.set_weight(patched)
    expect = patched * mask
    assert torch.allclose(mod(x), x @ expect.T + mod.bias, atol=1e-5), "re-masked and re-compressed"
    assert mod._op is not first and torch.equal(mod._home[2], expect)
    mod.to(torch.float64)
    assert mod._op is None, "an op left behind by a move (here: a dtype change) is dropped"


def test_lora_on_a_sparsified_model_is_the_masked_lora_weight_and_unpatch_restores(env):
    import comfy.sd

    sparsify, sl, demo, _, _ = env
    base = demo.build_tiny_model("sd15")
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    patched, _ = sparsify.sparsify_model(base, "attention", rank=0)
    shapes = {k[len("diffusion_model."):]: tuple(v.shape) for k, v in base.model.state_dict().items()
              if k.startswith("diffusion_model.") and v.dim() == 2}
    lora = kohya_lora(shapes, scale=0.3, suffix="attn1.to_out.0.weight")
    with_lora, _ = comfy.sd.load_lora_for_models(patched, None, lora, 1.0, 0)
    dense_lora, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0)
    key = next(iter(with_lora.patches))
    name = key[: -len(".weight")]
    dense_lora.patch_model()
    try:
        lora_weight = dense_lora.model.get_submodule(name).weight.detach().clone()
    finally:
        dense_lora.unpatch_model()
    mod = with_lora.object_patches[name]
    sparse_before = mod.weight.detach().clone()
    for _ in range(2):  # a second load after an unpatch gives the same weight
        with_lora.patch_model()
        try:
            assert with_lora.model.get_submodule(name) is mod
            expect = lora_weight * mod.sparse_mask
            assert torch.allclose(mod.weight, expect, atol=1e-6)
            x = torch.randn(3, mod.in_features)
            assert torch.allclose(mod(x), x @ expect.T + mod.bias, atol=1e-5)
        finally:
            with_lora.unpatch_model()
        assert torch.equal(mod.weight, sparse_before), "unpatch restores the sparse weight"
        assert not isinstance(base.model.get_submodule(name), sl.PyraSparseLinear)
    assert all(torch.equal(v, before[k]) for k, v in base.model.state_dict().items()), "base untouched"


def test_replaced_base_linears_go_to_the_offload_device_on_load(env):
    """A stand-in patcher: the base Linear our module replaced moves to the offload device (here `meta`, to see
    the move on a CPU-only machine); a backup we did not replace stays where it is."""
    from types import SimpleNamespace

    sparsify = env[0]
    ours, _, _ = sparse_layer(env, linear(32, 64))
    replaced, other = linear(32, 64), linear(32, 64)
    patcher = SimpleNamespace(offload_device=torch.device("meta"),
                              object_patches={"a": ours, "b": torch.nn.Identity()},
                              object_patches_backup={"a": replaced, "b": other})
    sparsify.offload_replaced(patcher, [ours])
    assert replaced.weight.device.type == "meta" and other.weight.device.type == "cpu"


@pytest.mark.gpu
def test_gpu_steady_state_holds_only_the_compressed_weights(gpu_env, on_the_kernel):
    """Four 4096x4096 bf16 layers: after the first call the GPU holds the compressed weights, biases and the
    plans' workspaces; before this fix it held the dense 2:4 weight and a bool mask too (3x the compressed)."""
    torch.cuda.empty_cache()
    mods = [sparse_layer(gpu_env, linear(4096, 4096, torch.bfloat16, seed=i)) for i in range(4)]
    stack = torch.nn.Sequential(*[m for m, _, _ in mods])
    base = torch.cuda.memory_allocated()
    stack.to("cuda")
    x = torch.randn(512, 4096, device="cuda", dtype=torch.bfloat16)
    y = stack(x)
    torch.cuda.synchronize()
    del y
    steady = torch.cuda.memory_allocated() - base - x.numel() * x.element_size()
    ops = [m._op for m in stack]
    assert all(op is not None and op.backend == "cusparselt" for op in ops), [m._op for m in stack]
    assert all(m.weight.device.type == "cpu" for m in stack), "the dense format lives on the offload device"
    compressed = sum(op.fast.compressed.numel() for op in ops)
    workspaces = sum(p.workspace.numel() for op in ops for p in op.fast._plans.values())
    biases = sum(m.bias.numel() * 2 for m in stack)
    dense = sum(m.weight.numel() * 2 for m in stack)
    assert steady <= compressed + biases + workspaces + 4 * 2**20, (steady, compressed, workspaces)
    assert steady < 0.7 * dense, (steady, dense)
    del ops  # the ops' compressed weights are freed with the last reference
    stack.to("cpu")
    assert all(m._op is None for m in stack), "unloading drops the ops"
    assert torch.cuda.memory_allocated() - base <= x.numel() * x.element_size() + 2**20


@pytest.mark.gpu
def test_gpu_outputs_and_a_patched_weight_match_the_masked_reference(gpu_env, on_the_kernel):
    mod, sparse, mask = sparse_layer(gpu_env, linear(1024, 2048, torch.bfloat16))
    mod.to("cuda")
    x = torch.randn(333, 2048, device="cuda", dtype=torch.bfloat16)  # ragged: padded onto the fast op
    ref = x.float() @ sparse.cuda().float().T + mod.bias.float()
    out = mod(x)
    assert mod._op.backend == "cusparselt" and mod.weight.device.type == "cpu"
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-2
    delta = 0.05 * torch.randn_like(sparse)
    mod.set_weight((sparse + delta).cuda())  # as the host's patch_weight_to_device does on a full load
    expect = ((sparse + delta) * mask).cuda().float()
    ref2 = x.float() @ expect.T + mod.bias.float()
    out2 = mod(x)
    assert mod.weight.device.type == "cpu" and float((out2.float() - ref2).norm() / ref2.norm()) < 2e-2
    assert float((out2.float() - ref).norm() / ref.norm()) > 2e-2, "the patch must change the output"


@pytest.mark.gpu
def test_gpu_input_with_the_weight_left_on_the_offload_device_runs_the_fast_op(gpu_env, on_the_kernel):
    """A model the host counts as loaded does not move modules swapped in later: their weight stays on the
    offload device, and the op is still built (and kept) on the input's GPU."""
    mod, sparse, _ = sparse_layer(gpu_env, linear(1024, 2048, torch.bfloat16))
    x = torch.randn(256, 2048, device="cuda", dtype=torch.bfloat16)
    ref = x.float() @ sparse.cuda().float().T + mod.bias.cuda().float()
    out = mod(x)
    assert mod._op.backend == "cusparselt" and mod._op.device.type == "cuda"
    assert mod.weight.device.type == "cpu"
    assert float((out.float() - ref).norm() / ref.norm()) < 2e-2
    op = mod._op
    mod(x)
    assert mod._op is op, "the op is reused while the weight is unchanged"


@pytest.mark.gpu
def test_gpu_dynamic_vram_runs_the_compressed_op_and_keeps_a_loras_mask(gpu_env, on_the_kernel, gpu_host):
    """Dynamic VRAM (0.16+: ModelPatcherDynamic, the host's default on NVIDIA) sets comfy_cast_weights on every
    module. The sparsified layers must still run cuSPARSELt, built from the weight as the host casts it (with a
    stock LoRA's delta, masked), and leave the stored weight on the offload device."""
    import comfy.model_management
    import comfy.sd

    sparsify, sl, demo, sp, _ = gpu_env
    hf = gpu_host("host.features")
    from _host import model_patcher

    tiny = demo.build_tiny_model("flux", torch.bfloat16)
    base = model_patcher(tiny.model, tiny.load_device, tiny.offload_device)
    if not hf.patcher_is_dynamic(base):
        pytest.skip("this host or device runs without dynamic VRAM (ModelPatcherDynamic)")
    patched, _ = sparsify.sparsify_model(base, "all", rank=0, check_tokens=0)
    shapes = {k[len("diffusion_model."):]: tuple(v.shape) for k, v in base.model.state_dict().items()
              if k.startswith("diffusion_model.") and v.dim() == 2}
    lora = kohya_lora(shapes, scale=0.3, suffix="img_mlp.0.weight")
    with_lora, _ = comfy.sd.load_lora_for_models(patched, None, lora, 1.0, 0)
    key = next(iter(with_lora.patches))
    name = key[: -len(".weight")]
    comfy.model_management.load_models_gpu([with_lora])
    mod = with_lora.model.get_submodule(name)
    assert isinstance(mod, sl.PyraSparseLinear) and mod.streamed and mod.comfy_cast_weights
    x = torch.randn(256, mod.in_features, device="cuda", dtype=torch.bfloat16)
    assert mod.path(x) == "streamed", sl.fast_kernel_reason(tuple(mod.weight.shape), x.device, x.dtype)
    lowvram = getattr(mod, "weight_lowvram_function", None)
    w = mod.weight.detach().to("cuda", torch.bfloat16, copy=True)
    lora_w = (lowvram(w) if lowvram is not None else w).float()
    for f in mod.weight_function:
        lora_w = f(lora_w)
    expect = x.float() @ (lora_w * mod.sparse_mask.cuda()).T + mod.bias.cuda().float()
    dense = x.float() @ lora_w.T + mod.bias.cuda().float()
    out = mod(x)
    assert mod._op.backend == "cusparselt" and sp.is_nm_sparse(lora_w * mod.sparse_mask.cuda())
    assert float((out.float() - expect).norm() / expect.norm()) < 2e-2
    assert float((dense - expect).norm() / expect.norm()) > 5e-2, "the LoRA's dense delta differs from the masked"
    assert mod.weight.device.type == "cpu", "the stored weight stays on the offload device (it streams no more)"
    op = mod._op
    mod(x)
    assert mod._op is op, "one compressed op per load"
    with_lora.detach(unpatch_all=False)
    assert mod._op is op, "the detach load_models_gpu makes before every load keeps the compressed weights"
    with_lora.detach(unpatch_all=True)
    assert mod._op is None, "an unload (detach with unpatch_all) drops the compressed weights"
