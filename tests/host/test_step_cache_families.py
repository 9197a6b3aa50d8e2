"""The step cache on the DiTs of 2026 (host/tiny_image_families.py, host/tiny_video_families.py): the family is
told by the model's class, threshold 0 gives the plain model's latent exactly, a large threshold reuses the
cached residual (fewer computed evaluations, a finite latent that differs) and the base model is untouched.
Random weights: this says the hooks fit each family's blocks, nothing of speed or quality."""

from __future__ import annotations

import pytest
import torch
from family_helpers import TinyFamily

# tiny family -> the step cache's family (its preset)
FAMILIES = {"chroma": "chroma", "qwen_image": "qwen_image", "z_image": "lumina2", "hunyuan_video15": "hunyuan_video",
            "ltxv": "ltxv", "ltx2": "ltx2"}
STEPS = 6


@pytest.fixture
def tiny(comfy_host, request):
    return TinyFamily(comfy_host, request.param)


@pytest.mark.parametrize("tiny", list(FAMILIES), indirect=True)
def test_exact_at_zero_reuse_when_positive_and_base_untouched(comfy_host, tiny):
    hooks = comfy_host.module("host.step_cache")
    family = tiny.family
    base = tiny.build()
    assert hooks.detect_family(base) == FAMILIES[family]
    plain = tiny.sample(base, steps=STEPS)

    exact = base.clone()
    cache = hooks.install(exact, FAMILIES[family], 0.0, 0.0, 1.0, False)
    assert torch.equal(tiny.sample(exact, steps=STEPS), plain)
    assert cache.stats.reused == 0

    fast = base.clone()
    cache = hooks.install(fast, FAMILIES[family], 1e9, 0.0, 1.0, True)
    out = tiny.sample(fast, steps=STEPS)
    assert cache.stats.reused > 0, cache.stats.summary()
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert not torch.equal(out, plain)   # the reused evaluations added the cached residual, not the blocks' own
    assert torch.equal(tiny.sample(base, steps=STEPS), plain)


@pytest.mark.parametrize("tiny", list(FAMILIES), indirect=True)
def test_reuse_reproduces_the_computed_evaluation(comfy_host, tiny):
    """Two evaluations of the same input at the same sigma in one sampling run: the second skips the middle
    blocks and adds their cached residual, which equals what they computed (LTX-2: video and audio alike)."""
    import comfy.sample
    import comfy.samplers

    hooks = comfy_host.module("host.step_cache")
    family, shape = tiny.family, tiny.shape
    patched = tiny.build().clone()
    cache = hooks.install(patched, FAMILIES[family], 1e9, 0.0, 1.0, False)
    outs = []

    def twice(model, x, sigmas, extra_args=None, callback=None, disable=None):
        s = sigmas[0] * x.new_ones([x.shape[0]])
        outs.extend(model(x, s, **(extra_args or {})) for _ in range(2))
        return outs[0]

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    pos, neg = tiny.conditioning(1), tiny.conditioning(2)
    comfy.sample.sample_custom(patched, noise, 2.0, comfy.samplers.KSAMPLER(twice), torch.tensor([0.8, 0.0]), pos,
                               neg, torch.zeros(shape), seed=1, disable_pbar=True)
    assert (cache.stats.computed, cache.stats.reused) == (1, 1), cache.stats.summary()
    torch.testing.assert_close(outs[1], outs[0])


def test_gated_layers_keep_weight_patches_and_names(comfy_host):
    """Z-Image's layers are gated by object patches: a weight patch (a LoRA's) on a gated layer still applies, and
    the model's state dict keeps its names while the gates stand in the layers' place."""
    hooks = comfy_host.module("host.step_cache")
    tiny = TinyFamily(comfy_host, "z_image")
    base = tiny.build()
    names = set(base.model.state_dict())
    key = next(k for k in base.model_state_dict() if k.startswith("diffusion_model.layers.1.") and k.endswith("weight"))
    weight = base.model_state_dict()[key]
    lora = base.clone()
    lora.add_patches({key: (0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)),)}, 1.0)
    plain = tiny.sample(lora, steps=STEPS)
    assert not torch.equal(plain, tiny.sample(base, steps=STEPS))
    cached = lora.clone()
    hooks.install(cached, "lumina2", 0.0, 0.0, 1.0, False)
    assert "diffusion_model.layers.1" in cached.object_patches
    assert torch.equal(tiny.sample(cached, steps=STEPS), plain)
    cached.patch_model()
    try:
        assert isinstance(cached.model.diffusion_model.layers[1], hooks._LayerGate)
        assert set(cached.model.state_dict()) == names
    finally:
        cached.unpatch_model()
    assert not isinstance(base.model.diffusion_model.layers[1], hooks._LayerGate)
