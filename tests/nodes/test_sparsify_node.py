"""PyraSparsify in-process on the tiny SD1.5 model: reference path on CPU, clone safety, LoRA, low VRAM, bad input."""

from __future__ import annotations

import typing

import pytest
import torch
import torch.nn.functional as F
from sparse_helpers import kohya_lora

SHAPE = (1, 4, 8, 8)


@pytest.fixture(scope="module")
def env(comfy_host):
    return (comfy_host.module("host.sparsify"), comfy_host.module("host.demo_models"),
            comfy_host.module("host.demo_models").demo_conditioning, comfy_host.module("core.sparse"))


def denoised(patcher, cond) -> torch.Tensor:
    """x0 after one Euler step of the host's sampler from fixed noise."""
    import comfy.sample

    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    seen = {}
    comfy.sample.sample(patcher, noise, 1, 1.0, "euler", "simple", cond, cond, torch.zeros(SHAPE),
                        callback=lambda step, x0, x, total: seen.update(x0=x0.clone()), disable_pbar=True)
    return seen["x0"]


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def sparse_modules(patcher, cls) -> dict:
    return {k: v for k, v in patcher.object_patches.items() if isinstance(v, cls)}


def test_sparsify_changes_the_output_a_little_and_leaves_the_base_alone(env):
    sparsify, demo, cond_of, sp = env
    base = demo.build_tiny_model("sd15")
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    cond = cond_of("sd15", seed=1)
    ref = denoised(base, cond)
    patched, results = sparsify.sparsify_model(base, "all", rank=0)
    report = sparsify.format_report(results, 0, sparsify.backend_note(base))
    mods = sparse_modules(patched, sparsify.PyraSparseLinear)
    assert mods and all(sp.is_nm_sparse(m.weight) for m in mods.values())
    assert "reference path" in report and f"sparsified {len(mods)} of" in report
    out = denoised(patched, cond)
    assert 1e-4 < rel(out, ref) < 0.5, rel(out, ref)
    assert torch.equal(denoised(base, cond), ref), "the base model must give bit-identical results afterwards"
    assert all(torch.equal(v, before[k]) for k, v in base.model.state_dict().items())


def test_lowrank_compensation_lowers_the_error(env):
    sparsify, demo, cond_of, _ = env
    base = demo.build_tiny_model("sd15")
    cond = cond_of("sd15", seed=1)
    ref = denoised(base, cond)
    plain, res0 = sparsify.sparsify_model(base, "mlp", rank=0)
    comp, res16 = sparsify.sparsify_model(base, "mlp", rank=16)
    assert [r.name for r in res0] == [r.name for r in res16] and res0
    assert all(b.rel_err < a.rel_err for a, b in zip(res0, res16, strict=True))
    assert rel(denoised(comp, cond), ref) < rel(denoised(plain, cond), ref)


def test_a_stock_lora_still_applies_and_keeps_the_mask(env):
    import comfy.sd

    sparsify, demo, cond_of, sp = env
    base = demo.build_tiny_model("sd15")
    cond = cond_of("sd15", seed=1)
    patched, _ = sparsify.sparsify_model(base, "attention", rank=8)
    shapes = {k[len("diffusion_model."):]: tuple(v.shape) for k, v in base.model.state_dict().items()
              if k.startswith("diffusion_model.") and v.dim() == 2}
    lora = kohya_lora(shapes, scale=0.3, suffix="attn1.to_out.0.weight")
    with_lora, _ = comfy.sd.load_lora_for_models(patched, None, lora, 1.0, 0)
    assert len(with_lora.patches) == len(lora) // 3, "every LoRA key must match a layer"
    full, plain = denoised(with_lora, cond), denoised(patched, cond)
    assert rel(full, plain) > 1e-3, "the LoRA must change the output"
    key = next(iter(with_lora.patches))
    with_lora.patch_model()
    try:
        mod = with_lora.model.get_submodule(key[: -len(".weight")])
        assert isinstance(mod, sparsify.PyraSparseLinear) and sp.is_nm_sparse(mod.weight)
    finally:
        with_lora.unpatch_model()
    lowvram = with_lora.clone()
    lowvram.patch_model(lowvram_model_memory=1)
    try:
        mod = lowvram.model.get_submodule(key[: -len(".weight")])
        assert mod.weight_function, "low VRAM: the LoRA is applied at cast time"
        # 0.3.76 masks in LowVramPatch (it calls set_weight); 0.8.1+ returns W + delta dense: the layer must mask
        lora_w = mod.weight_function[0](mod.weight.detach().clone())  # a copy: the LoRA adds in place
        expect = F.linear(x := torch.randn(3, mod.in_features), lora_w * mod.sparse_mask, mod.bias)
        expect = expect + (x @ mod.lowrank_a) @ mod.lowrank_b
        assert rel(mod(x), expect) < 1e-6
        assert rel(F.linear(x, mod.weight, mod.bias), F.linear(x, lora_w * mod.sparse_mask, mod.bias)) > 1e-3
    finally:
        lowvram.unpatch_model()
    assert not isinstance(base.model.get_submodule(key[: -len(".weight")]), sparsify.PyraSparseLinear)


def test_unsupported_layers_are_skipped_with_a_reason(env):
    import comfy.ops

    sparsify, *_ = env
    odd = comfy.ops.disable_weight_init.Linear(6, 8)
    odd.weight = torch.nn.Parameter(torch.randn(8, 6))
    assert "not divisible by 4" in sparsify.skip_reason(odd)
    fp8 = comfy.ops.disable_weight_init.Linear(8, 8)
    fp8.weight = torch.nn.Parameter(torch.randn(8, 8).to(torch.float8_e4m3fn), requires_grad=False)
    assert "weight_dtype 'default'" in sparsify.skip_reason(fp8)
    ok = comfy.ops.disable_weight_init.Linear(8, 8)
    ok.weight = torch.nn.Parameter(torch.randn(8, 8))
    assert sparsify.skip_reason(ok) is None


def test_bad_regex_is_rejected_before_running(comfy_host):
    node = comfy_host.node("PyraSparsify")
    assert not hasattr(node, "VALIDATE_INPUTS") and "validate_inputs" not in vars(node), "the host checks all"
    with pytest.raises(ValueError, match="invalid layer regex"):
        node.execute(None, "regex", "(", "magnitude", 1, 0, 0)
    with pytest.raises(ValueError, match="needs a pattern"):
        node.execute(None, "regex", "", "magnitude", 1, 0, 0)


@pytest.mark.parametrize(("family", "shape"), [("flux", (1, 16, 8, 8)), ("wan21", (1, 16, 1, 8, 8))])
def test_dit_families_sparsify_and_run(env, family, shape):
    """Every layer kind of the DiTs is handled: one sampler step stays finite and changes the output."""
    import comfy.sample

    sparsify, demo, cond_of, _ = env
    base = demo.build_tiny_model(family)
    patched, results = sparsify.sparsify_model(base, "all", rank=4)
    assert sum(r.status == "sparse" for r in results) > 0.8 * len(results)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    cond = cond_of(family, seed=1)
    outs = [comfy.sample.sample(p, noise, 1, 1.0, "euler", "simple", cond, cond, torch.zeros(shape),
                                disable_pbar=True) for p in (base, patched)]
    assert torch.isfinite(outs[1]).all() and rel(outs[1], outs[0]) > 1e-4


def test_a_weight_written_without_set_weight_is_masked_again(env):
    """If something replaces the weight behind the module's back, the op still computes with the mask."""
    sparsify, demo, _, sp = env
    base = demo.build_tiny_model("sd15")
    patched, _ = sparsify.sparsify_model(base, "mlp", rank=0)
    mod = next(iter(sparse_modules(patched, sparsify.PyraSparseLinear).values()))
    x = torch.randn(5, mod.in_features)
    before = mod(x)
    mod.weight = torch.nn.Parameter(mod.weight + 0.5, requires_grad=False)  # dense now
    assert sp.is_nm_sparse(mod._sparse_op(x).weight)
    assert torch.allclose(mod(x), before + x @ (0.5 * mod.sparse_mask.float()).T, atol=1e-5)


def test_wanda_calibrates_on_the_first_steps_then_prunes(env):
    """Dense for the calibration steps (identical to the base there), then 2:4 by Wanda score: the masks differ
    from magnitude's, and a second run is sparse from its first step."""
    import comfy.sample

    sparsify, demo, cond_of, sp = env
    base = demo.build_tiny_model("sd15")
    cond = cond_of("sd15", seed=1)
    wanda, results = sparsify.sparsify_model(base, "all", rank=4, score="wanda", calibration_steps=2)
    mods = sparse_modules(wanda, sparsify.PyraSparseLinear)
    assert mods and all(r.rel_err is None for r in results if r.status == "sparse")
    assert all(m.norms is not None for m in mods.values())
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))

    def run(patcher, steps):
        seen = []
        comfy.sample.sample(patcher, noise, steps, 1.0, "euler", "simple", cond, cond, torch.zeros(SHAPE),
                            callback=lambda i, x0, x, n: seen.append(x0.clone()), disable_pbar=True)
        return seen

    base_x0, wanda_x0 = run(base, 4), run(wanda, 4)
    assert torch.equal(wanda_x0[0], base_x0[0]) and torch.equal(wanda_x0[1], base_x0[1]), "calibration is dense"
    assert rel(wanda_x0[2], base_x0[2]) > 1e-6, "after calibration the model is sparse (dense gives exactly 0)"
    assert all(m.norms is None and sp.is_nm_sparse(m.weight) for m in mods.values())
    magnitude = {k: sp.nm_mask(base.get_model_object(k).weight.abs()) for k in mods}
    assert any(not torch.equal(m.sparse_mask, magnitude[k]) for k, m in mods.items())
    assert all(m.lowrank_a is not None for m in mods.values())
    assert rel(run(wanda, 2)[0], base_x0[0]) > 1e-6, "a second run is sparse from its first step"


def lora_layer(env, scale=0.3):
    """A sparsified attention layer of the tiny SD1.5 and a LowVramPatch of a stock LoRA for it, as the host
    builds one per patched weight (dynamic VRAM: `weight_lowvram_function`; low VRAM: in `weight_function`)."""
    import comfy.model_patcher
    import comfy.sd

    sparsify, demo, _, _ = env
    base = demo.build_tiny_model("sd15")
    patched, _ = sparsify.sparsify_model(base, "attention", rank=4)
    shapes = {k[len("diffusion_model."):]: tuple(v.shape) for k, v in base.model.state_dict().items()
              if k.startswith("diffusion_model.") and v.dim() == 2}
    with_lora, _ = comfy.sd.load_lora_for_models(
        patched, None, kohya_lora(shapes, scale=scale, suffix="attn1.to_out.0.weight"), 1.0, 0)
    key = next(iter(with_lora.patches))
    mod = with_lora.object_patches[key[: -len(".weight")]]
    return mod, comfy.model_patcher.LowVramPatch(key, with_lora.patches), patched


def dynamic_cast(module, x, offloadable=False, **_):
    """comfy.ops.cast_bias_weight as 0.33.0 runs it for a module in a dynamic-VRAM vbar (GPU only, so emulated
    here): the weight cast to the input's dtype, then `weight_lowvram_function` (the LoRA), then `weight_function`."""
    w = module.weight.detach().to(x.dtype, copy=True)
    lowvram = getattr(module, "weight_lowvram_function", None)
    w = w if lowvram is None else lowvram(w)
    for f in module.weight_function:
        w = f(w)
    b = module.bias.to(x.dtype)
    return (w, b, None) if offloadable else (w, b)


def test_a_lora_applied_by_a_dynamic_vram_lowvram_function_keeps_the_mask(env, monkeypatch):
    """0.33.0 dynamic VRAM hands the LoRA over in `weight_lowvram_function`, not `weight_function`: the cast
    path masked only for the latter, so the LoRA's dense delta reached the matmul."""
    import comfy.ops

    mod, lowvram, _ = lora_layer(env)
    monkeypatch.setattr(comfy.ops, "cast_bias_weight", dynamic_cast)
    mod.comfy_cast_weights, mod.weight_lowvram_function = True, lowvram
    x = torch.randn(5, mod.in_features)
    lora_w = lowvram(mod.weight.detach().clone())
    assert rel(F.linear(x, lora_w, mod.bias), F.linear(x, lora_w * mod.sparse_mask, mod.bias)) > 1e-3
    expect = F.linear(x, lora_w * mod.sparse_mask, mod.bias) + (x @ mod.lowrank_a) @ mod.lowrank_b
    assert mod.path(x) == "cast" and rel(mod(x), expect) < 1e-6


class CompressedStandIn:
    """Stands in for the cuSPARSELt op on the CPU: keeps a private copy, drops the dense weight; counts builds."""

    built: typing.ClassVar[list] = []

    def __init__(self, weight, bias=None, lowrank=None, keep_dense=True, **_):
        self.private, self.bias, self.lowrank, self.weight = weight.detach().clone(), bias, lowrank, None
        self.device, self.dtype, self.backend = weight.device, weight.dtype, "stand-in"
        CompressedStandIn.built.append(self.private)

    def __call__(self, x, dense=None):
        y = F.linear(x, self.private, self.bias)
        return y if self.lowrank is None else y + (x @ self.lowrank[0]) @ self.lowrank[1]


def test_dynamic_vram_layers_run_one_compressed_op_built_from_the_cast_weight(env, comfy_host, monkeypatch):
    """Dynamic VRAM sets comfy_cast_weights on every module, which sent the layer down the masked-dense path.
    Where the kernel applies, the layer now builds the compressed op once from the weight as the host would cast
    it (LoRA applied, masked) and never asks the host to stream the dense weight."""
    import comfy.model_patcher
    import comfy.ops
    import comfy.patcher_extension

    sl = comfy_host.module("host.sparse_linear")
    sp = env[3]
    mod, lowvram, patched = lora_layer(env)
    monkeypatch.setattr(sl, "fast_kernel_reason", lambda *a: None)
    monkeypatch.setattr(sl, "Sparse24Linear", CompressedStandIn)

    def no_cast(*a, **k):
        raise AssertionError("the host's per-call cast of the dense weight must not run")

    monkeypatch.setattr(comfy.ops, "cast_bias_weight", no_cast)
    CompressedStandIn.built = []
    (on_load,) = patched.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_LOAD)
    on_load(type("DynamicPatcher", (), {"is_dynamic": lambda self: True})())
    assert mod.streamed, "the ON_LOAD callback marks the layers of a dynamic-VRAM load"
    mod.comfy_cast_weights, mod.weight_lowvram_function = True, lowvram
    x = torch.randn(5, mod.in_features)
    lora_w = lowvram(mod.weight.detach().clone())
    expect = F.linear(x, lora_w * mod.sparse_mask, mod.bias) + (x @ mod.lowrank_a) @ mod.lowrank_b
    before = mod.weight.detach().clone()
    assert mod.path(x) == "streamed"
    assert rel(mod(x), expect) < 1e-6 and rel(mod(x), expect) < 1e-6
    assert len(CompressedStandIn.built) == 1 and sp.is_nm_sparse(CompressedStandIn.built[0])
    assert torch.equal(mod.weight, before), "the stored weight is not patched in place"
    # The next prompt: load_models_gpu detaches the loaded model (without unpatching), loads it again and makes a
    # new LowVramPatch over the same patch entries.
    dynamic = type("DynamicPatcher", (), {"is_dynamic": lambda self: True})()
    (on_detach,) = patched.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_DETACH)
    on_detach(dynamic, False)
    on_load(dynamic)
    mod.weight_lowvram_function = comfy.model_patcher.LowVramPatch(lowvram.key, lowvram.patches)
    assert rel(mod(x), expect) < 1e-6 and len(CompressedStandIn.built) == 1, "an unchanged LoRA keeps its op"
    entries = lowvram.patches[lowvram.key]
    lowvram.patches[lowvram.key] = [(2 * e[0], *e[1:]) for e in entries]  # the LoRA's strength changed
    assert len(CompressedStandIn.built) == 1
    mod(x)
    assert len(CompressedStandIn.built) == 2, "new patch entries rebuild the op"
    lowvram.patches[lowvram.key] = entries
    mod.weight_lowvram_function = lowvram
    assert rel(mod(x), expect) < 1e-6 and len(CompressedStandIn.built) == 3
    mod.weight_lowvram_function = None  # another load without the LoRA: rebuilt from the plain weight
    plain = F.linear(x, mod.weight, mod.bias) + (x @ mod.lowrank_a) @ mod.lowrank_b
    assert rel(mod(x), plain) < 1e-6 and len(CompressedStandIn.built) == 4
    on_detach(dynamic, True)  # an unload (model_unload): the compressed weight leaves the GPU
    assert mod._op is None
    assert rel(mod(x), plain) < 1e-6 and len(CompressedStandIn.built) == 5
    monkeypatch.setattr(sl, "fast_kernel_reason", lambda *a: "no kernel here")
    assert mod.path(x) == "cast", "without a kernel the host streams the masked dense weight"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_layer_where_the_dense_matmul_is_faster_keeps_its_masked_weight_dense(env, comfy_host, monkeypatch,
                                                                                  streamed):
    """The 2:4 kernel has a floor of ~80 us: a one-token modulation layer ran 2.4-3.4x slower on it than dense.
    The op is chosen at the first call's token count: dense with the same masked weight where that is faster
    (asked of the kernel module with the layer's shape and tokens), compressed elsewhere."""
    sl = comfy_host.module("host.sparse_linear")
    sparsify, demo, _, sp = env
    patched, _ = sparsify.sparsify_model(demo.build_tiny_model("sd15"), "mlp", rank=4)
    mod = next(iter(sparse_modules(patched, sparsify.PyraSparseLinear).values()))
    asked = []

    def dense_faster(out_f, in_f, tokens, device, dtype):
        asked.append((out_f, in_f, tokens))
        return tokens < 8

    monkeypatch.setattr(sl, "dense_is_faster", dense_faster)
    monkeypatch.setattr(sl, "fast_kernel_reason", lambda *a: None)
    monkeypatch.setattr(sl.Sparse24Linear, "__init__", _stand_in_unless_reference(sl.Sparse24Linear.__init__))
    mod.streamed = streamed
    for tokens, kind in ((2, "reference"), (16, "stand-in")):
        mod.invalidate()
        x = torch.randn(1, tokens, mod.in_features)
        expect = F.linear(x, mod.weight * mod.sparse_mask, mod.bias) + (x @ mod.lowrank_a) @ mod.lowrank_b
        assert rel(mod(x), expect) < 1e-6
        assert mod._op.backend == kind and asked[-1] == (mod.out_features, mod.in_features, tokens)
        if kind == "reference":
            assert sp.is_nm_sparse(mod._op.weight), "the dense-run op holds the 2:4 matrix"


def _stand_in_unless_reference(init):
    """Sparse24Linear.__init__ that makes a CompressedStandIn-like op unless backend="reference" is asked for."""
    def wrapped(self, weight, bias=None, lowrank=None, backend="auto", order="row", keep_dense=True):
        init(self, weight, bias, lowrank, backend="reference", order=order, keep_dense=True)
        if backend != "reference":
            self.backend = "stand-in"
    return wrapped
