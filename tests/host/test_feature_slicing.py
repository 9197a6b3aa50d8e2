"""PyraFeatureSlicing on the tiny models of every family (Wan: grouped blocks): same output, base untouched,
weight patches still apply."""

from __future__ import annotations

import pytest
import torch

SHAPES = {"sd15": (1, 4, 16, 16), "sdxl": (1, 4, 16, 16), "sd3": (1, 16, 16, 16), "flux": (1, 16, 16, 16),
          "wan21": (1, 16, 2, 16, 16)}


def predict(comfy_host, patcher, family, shape):
    import comfy.sample

    cond = comfy_host.module("host.demo_models").demo_conditioning(family, 1)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    return comfy.sample.sample(patcher, noise, 2, 2.0, "euler", "simple", cond, cond, torch.zeros(shape),
                               disable_pbar=True, seed=0)


@pytest.mark.parametrize("family", list(SHAPES))
def test_sliced_model_matches_and_base_is_untouched(comfy_host, family):
    slicing = comfy_host.module("host.feature_slicing")
    patcher = comfy_host.module("host.demo_models").build_tiny_model(family)
    base_out = predict(comfy_host, patcher, family, SHAPES[family])
    sliced, report = slicing.slice_features(patcher, 8)
    assert bool(report.grouped) == (family == "wan21") and bool(report.ffn_sliced) == (family != "wan21")
    first = patcher.model.diffusion_model.get_submodule(slicing.feed_forward_paths(patcher.model.diffusion_model)[0])
    seen = []
    hook = next(m for m in first.modules() if isinstance(m, torch.nn.Linear) or "Linear" in type(m).__name__)
    handle = hook.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-2]))
    try:
        out = predict(comfy_host, sliced, family, SHAPES[family])
    finally:
        handle.remove()
    assert seen and max(seen) <= 8, "the feed-forward network did not run in slices"
    assert torch.allclose(out, base_out, atol=1e-4, rtol=1e-4)
    assert not patcher.object_patches
    assert torch.equal(predict(comfy_host, patcher, family, SHAPES[family]), base_out)


def test_weight_patches_reach_the_sliced_modules(comfy_host):
    slicing = comfy_host.module("host.feature_slicing")
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd3")
    path = slicing.feed_forward_paths(patcher.model.diffusion_model)[0]
    key = next(k for k in patcher.model.state_dict() if k.startswith(f"diffusion_model.{path}.")
               and k.endswith("weight"))
    patched = patcher.clone()
    patched.add_patches({key: (torch.ones_like(patcher.model.state_dict()[key]) * 0.05,)}, 1.0)
    sliced, _ = slicing.slice_features(patched, 8)
    shape = SHAPES["sd3"]
    assert torch.allclose(predict(comfy_host, sliced, "sd3", shape), predict(comfy_host, patched, "sd3", shape),
                          atol=1e-4, rtol=1e-4)
    assert not torch.allclose(predict(comfy_host, patched, "sd3", shape), predict(comfy_host, patcher, "sd3", shape))


def test_a_model_without_transformer_blocks_is_a_clear_error(comfy_host):
    slicing = comfy_host.module("host.feature_slicing")
    analytic = comfy_host.module("host.analytic")
    patcher = analytic.analytic_model_patcher(analytic.NaturalImagePrior(), "flow")
    with pytest.raises(ValueError, match=r"no transformer feed-forward modules found in .*leave this node out"):
        slicing.slice_features(patcher, 64)


def test_z_image_feed_forwards_run_in_slices(comfy_host):
    """Z-Image (Lumina 2's NextDiT, host 0.33.0's tiny family): the feed-forward of its layers and both refiners
    runs in 8-token slices and the sampled latent is the plain model's."""
    from family_helpers import TinyFamily

    slicing = comfy_host.module("host.feature_slicing")
    tiny = TinyFamily(comfy_host, "z_image")
    patcher = tiny.build()
    plain = tiny.sample(patcher)
    sliced, report = slicing.slice_features(patcher, 8)
    assert {p.split(".")[0] for p in report.ffn_sliced} == {"layers", "noise_refiner", "context_refiner"}
    first = patcher.model.diffusion_model.get_submodule(report.ffn_sliced[0])
    seen = []
    hook = next(m for m in first.modules() if "Linear" in type(m).__name__)
    handle = hook.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-2]))
    try:
        out = tiny.sample(sliced)
    finally:
        handle.remove()
    assert seen and max(seen) <= 8, "the feed-forward network did not run in slices"
    torch.testing.assert_close(out, plain, atol=1e-4, rtol=1e-4)
    assert torch.equal(tiny.sample(patcher), plain)
