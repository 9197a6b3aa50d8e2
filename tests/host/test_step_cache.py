"""PyraStepCache in-process on the tiny models of every family: exact at threshold 0, reuse at a positive
threshold with a close output, the base model untouched, per-family block plans, the pyramid sampler."""

from __future__ import annotations

import pytest
import torch

# family -> (conditioning family, latent shape, config overrides so the middle has blocks to skip)
FAMILIES = {
    "sd15": ("sd15", (1, 4, 16, 16), {}),
    "sdxl": ("sdxl", (1, 4, 16, 16), {}),
    "sd3": ("sd3", (1, 16, 16, 16), {}),
    "flux": ("flux", (1, 16, 16, 16), {}),
    "wan21": ("wan21", (1, 16, 1, 16, 16), {"num_layers": 3}),  # the demo file has one block: nothing to skip
}
STEPS = 8


@pytest.fixture(scope="module")
def mods(comfy_host):
    return (comfy_host.module("host.demo_models"), comfy_host.module("host.demo_models"),
            comfy_host.module("host.step_cache"))


def tiny(demo, family, overrides, monkeypatch):
    monkeypatch.setitem(demo.TINY_CONFIGS, family, {**demo.TINY_CONFIGS[family], **overrides})
    return demo.build_tiny_model(family)


def sample(patcher, cond_mod, cond_family, shape, steps=STEPS, cfg=2.0):
    import comfy.sample

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    pos, neg = cond_mod.demo_conditioning(cond_family, seed=1), cond_mod.demo_conditioning(cond_family, seed=2)
    return comfy.sample.sample(patcher, noise, steps, cfg, "euler", "simple", pos, neg, torch.zeros(shape),
                               disable_pbar=True, seed=3)


def cached(hooks, base, family, threshold, **kw):
    patched = base.clone()
    cache = hooks.install(patched, family, threshold, kw.get("start", 0.0), kw.get("end", 1.0),
                          kw.get("cpu", False))
    return patched, cache


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_at_zero_reuse_when_positive_and_base_untouched(mods, family, monkeypatch):
    demo, cond, hooks = mods
    cond_family, shape, overrides = FAMILIES[family]
    base = tiny(demo, family, overrides, monkeypatch)
    assert hooks.detect_family(base) == family
    plain = sample(base, cond, cond_family, shape)

    exact, cache = cached(hooks, base, family, 0.0)
    assert torch.equal(sample(exact, cond, cond_family, shape), plain)
    assert cache.stats.reused == 0 and cache.stats.computed == STEPS  # cond and uncond in one batch per step

    fast, cache = cached(hooks, base, family, 5.0, cpu=True)
    out = sample(fast, cond, cond_family, shape)
    assert cache.stats.reused >= STEPS // 2, cache.stats.summary()
    assert not torch.equal(out, plain)
    deviation = float((out - plain).norm() / plain.norm())
    assert deviation < 0.5, deviation
    assert torch.equal(sample(base, cond, cond_family, shape), plain)  # the base model is untouched


def test_unet_shallow_blocks_out_of_range_is_a_clear_error(mods, monkeypatch):
    import dataclasses

    demo, _, hooks = mods
    presets = hooks.PRESETS
    base = tiny(demo, "sd15", {}, monkeypatch)
    with pytest.raises(hooks.StepCacheError, match="input blocks"):
        hooks.install(base.clone(), "sd15", 0.2, 0.0, 1.0, False,
                      dataclasses.replace(presets["sd15"], shallow=99))


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_extrapolation_changes_only_the_reused_values(mods, family, monkeypatch):
    """Same threshold, same decisions (at most 2 reused in a row, so rows have two computed values to extend):
    the extrapolating cache reuses the same evaluations and gives a different result close to the uncached one."""
    import dataclasses

    demo, cond, hooks = mods
    cond_family, shape, overrides = FAMILIES[family]
    base = tiny(demo, family, overrides, monkeypatch)
    plain_out = sample(base, cond, cond_family, shape)
    outs, stats = [], []
    for extrapolate in (False, True):
        patched = base.clone()
        preset = dataclasses.replace(hooks.PRESETS[family], extrapolate=extrapolate)
        cache = hooks.install(patched, family, 5.0, 0.0, 1.0, False, preset, max_in_a_row=2)  # 2+ computed
        outs.append(sample(patched, cond, cond_family, shape))
        stats.append((cache.stats.computed, cache.stats.reused))
    assert stats[0] == stats[1] and stats[0][1] >= STEPS // 2
    assert not torch.equal(outs[0], outs[1])
    assert float((outs[1] - plain_out).norm() / plain_out.norm()) < 0.5


def test_window_limits_reuse(mods, monkeypatch):
    demo, cond, hooks = mods
    base = tiny(demo, "sd3", {}, monkeypatch)
    patched_all, cache_all = cached(hooks, base, "sd3", 5.0)
    sample(patched_all, cond, "sd3", (1, 16, 16, 16))
    patched, cache = cached(hooks, base, "sd3", 5.0, start=0.5, end=0.9)
    sample(patched, cond, "sd3", (1, 16, 16, 16))
    assert 0 < cache.stats.reused < cache_all.stats.reused


@pytest.mark.parametrize("shallow", [0, 1])
def test_unet_deep_feature_is_reused_exactly(mods, monkeypatch, shallow):
    """Two evaluations of the same input: the second reuses the deep blocks and equals the first bitwise, and
    the deep blocks really were skipped (a forward hook on the first deep block does not fire). shallow 0 puts
    the boundary at the first downsampling (input block 2 of the tiny SD1.5), 1 right after the input conv."""
    import dataclasses

    import comfy.model_management

    demo, _, hooks = mods
    presets = hooks.PRESETS
    base = tiny(demo, "sd15", {}, monkeypatch)
    patched = base.clone()
    cache = hooks.install(patched, "sd15", 5.0, 0.0, 1.0, False,
                          dataclasses.replace(presets["sd15"], shallow=shallow))
    comfy.model_management.load_models_gpu([patched])
    dm = patched.model.diffusion_model
    assert hooks.shallow_depth(dm) == 2
    first_deep = dm.input_blocks[hooks.unet_depth(dm, shallow)][0]
    calls = []
    handle = first_deep.register_forward_hook(lambda *a: calls.append(1))
    try:
        x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        ctx = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([500.0, 500.0])
        opts = {**patched.model_options["transformer_options"], "cond_or_uncond": [0, 1], "uuids": ["c", "u"]}
        first = dm(x, t, context=ctx, transformer_options=dict(opts))
        second = dm(x, t, context=ctx, transformer_options=dict(opts))
    finally:
        handle.remove()
    assert len(calls) == 1 and (cache.stats.computed, cache.stats.reused) == (1, 1)
    assert torch.equal(first, second)


@pytest.mark.parametrize("family", ["sd3", "flux", "wan21"])
def test_dit_change_indicator_moves_between_steps(mods, family, monkeypatch):
    """The decision feature of every DiT changes between steps (the host's Flux blocks update their input in
    place: measured after the call, the first block's residual was zero and every evaluation in the window
    reused)."""
    demo, cond, hooks = mods
    cond_family, shape, overrides = FAMILIES[family]
    probe, cache = cached(hooks, tiny(demo, family, overrides, monkeypatch), family, 0.0)
    sample(probe, cond, cond_family, shape)
    changes = [c for c in cache.stats.changes if c == c]
    assert len(changes) == STEPS - 1 and min(changes) > 1e-3, changes


def test_flux_reuse_reproduces_the_computed_evaluation(mods, monkeypatch):
    """Two evaluations of the same input on Flux (blocks that update in place): the second reuses the skipped
    block's cached residual and equals the first."""
    import comfy.model_management

    demo, _, hooks = mods
    patched, cache = cached(hooks, tiny(demo, "flux", {}, monkeypatch), "flux", 5.0)
    comfy.model_management.load_models_gpu([patched])
    dm = patched.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x, ctx, y = torch.randn(2, 16, 16, 16, generator=g), torch.randn(2, 8, 4096, generator=g), torch.randn(2, 768)
    t, guidance = torch.tensor([0.5, 0.5]), torch.tensor([3.5, 3.5])
    opts = {**patched.model_options["transformer_options"], "cond_or_uncond": [0, 1], "uuids": ["c", "u"]}
    first = dm(x, t, ctx, y=y, guidance=guidance, transformer_options=dict(opts))
    second = dm(x, t, ctx, y=y, guidance=guidance, transformer_options=dict(opts))
    assert (cache.stats.computed, cache.stats.reused) == (1, 1)
    torch.testing.assert_close(second, first)


def test_pyramid_sampler_resets_per_level(mods, comfy_host, monkeypatch):
    """Pyramid stages run at different sizes: each stage starts with a computed evaluation, and the cached
    pyramid run stays close to the uncached pyramid run."""
    import comfy.samplers

    demo, cond, hooks = mods
    pyramid = comfy_host.module("host.pyramid")
    base = tiny(demo, "sd3", {}, monkeypatch)
    shape = (1, 16, 32, 32)

    def run(model):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(cond.demo_conditioning("sd3", seed=1), cond.demo_conditioning("sd3", seed=2))
        guider.set_cfg(2.0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 12).cpu()
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        return pyramid.pyramid_sample(guider, noise, torch.zeros(shape), comfy.samplers.sampler_object("euler"),
                                      sigmas, [(2, 0.5)], disable_pbar=True, seed=3)

    plain = run(base)
    exact, _ = cached(hooks, base, "sd3", 0.0)
    assert torch.equal(run(exact), plain)
    patched, cache = cached(hooks, base, "sd3", 5.0)
    decisions = []
    original = cache.decide

    def spy(keys, feature, active=True):
        decisions.append((tuple(feature.shape), original(keys, feature, active)))
        return decisions[-1][1]

    cache.decide = spy
    out = run(patched)
    sizes = [s for s, _ in decisions]
    change = next(i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1])
    assert decisions[0][1] is False and decisions[change][1] is False  # computed at the start of each level
    assert any(r for _, r in decisions[1:change]) and any(r for _, r in decisions[change + 1:])
    assert float((out - plain).norm() / plain.norm()) < 0.5


def test_node_clones_and_rejects_unsupported(mods, comfy_host, monkeypatch):
    demo, _, hooks = mods
    node = comfy_host.node("PyraStepCache")
    base = tiny(demo, "flux", {}, monkeypatch)
    (out,) = node.execute(base, "auto", -1.0, 0.15, 0.95, False).result
    assert out is not base and not base.model_options["transformer_options"].get("patches_replace")
    assert out.model_options["transformer_options"]["patches_replace"]["dit"]
    with pytest.raises(hooks.StepCacheError, match="preset 'sdxl'"):
        node.execute(base, "sdxl", -1.0, 0.15, 0.95, False)
    with pytest.raises(hooks.StepCacheError, match="start_percent"):
        node.execute(base, "auto", -1.0, 0.9, 0.5, False)
    analytic = comfy_host.module("host.analytic")
    model = analytic.analytic_model_patcher(comfy_host.module("core.analytic").NaturalImagePrior(), "flow")
    with pytest.raises(hooks.StepCacheError, match=r"supports SD1\.5, SDXL, SD3, Flux, Wan 2\.1, Chroma, Qwen-Image"):
        node.execute(model, "auto", -1.0, 0.15, 0.95, False)
