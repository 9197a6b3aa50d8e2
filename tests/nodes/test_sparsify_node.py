"""PyraSparsify in-process on the tiny SD1.5 model: reference path on CPU, clone safety, LoRA, low VRAM, bad input."""

from __future__ import annotations

import pytest
import torch
from sparse_helpers import kohya_lora

SHAPE = (1, 4, 8, 8)


@pytest.fixture(scope="module")
def env(comfy_host):
    return (comfy_host.module("nodes.sparsify_apply"), comfy_host.module("nodes.demo_models"),
            comfy_host.module("nodes.demo_conditioning").demo_conditioning, comfy_host.module("core.sparse"))


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
        assert sp.is_nm_sparse(mod.weight_function[0](mod.weight.float()))
        x = torch.randn(3, mod.in_features)
        cast = mod.forward_comfy_cast_weights(x)
        assert rel(mod(x), cast + (x @ mod.lowrank_a) @ mod.lowrank_b) < 1e-6
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
    assert "invalid layer regex" in node.validate_inputs(layers="regex", name_regex="(")
    assert "needs a pattern" in node.validate_inputs(layers="regex", name_regex="")
    assert node.validate_inputs(layers="mlp", name_regex="(") is True


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
    assert sp.is_nm_sparse(mod._sparse_op(x.device).weight)
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
