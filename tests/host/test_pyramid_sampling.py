"""Pyramid sampling in-process: exact against direct sampling on the analytic model, masks, areas, models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def mods(comfy_host):
    return (comfy_host.module("host.pyramid"), comfy_host.module("core.samplers.pyramid"),
            comfy_host.module("core.analytic"), comfy_host.module("host.analytic"))


def analytic_guider(analytic_node, parametrisation: str, shift: float = 3.0):
    prior = analytic_node.NaturalImagePrior()
    return (prior, *analytic_node.analytic_guider(prior, parametrisation, shift))


def worst_band_error(core, prior, samples, reference) -> float:
    return float((core.band_ratio(samples.float(), prior, 8, reference=reference.float())[0] - 1).abs().max())


@pytest.mark.parametrize(("ladder", "tolerance"), [("2:0.4", 0.02), ("4:0.35, 2:0.25", 0.04)])
def test_pyramid_matches_direct_sampling_per_band(mods, ladder, tolerance):
    """Same noise (common random numbers): pyramid/direct band power within a few percent in every band;
    the same run with the lift's noise correction switched off fails the same check."""
    import comfy.samplers

    pyr_sampling, pyr, core, analytic = mods
    prior, patcher, guider = analytic_guider(analytic, "flow")
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 30).cpu()
    noise = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    latent, sampler = torch.zeros_like(noise), comfy.samplers.sampler_object("dpmpp_2m")
    direct = guider.sample(noise, latent, sampler, sigmas, seed=0)
    levels = pyr.parse_ladder(ladder)
    ours = pyr_sampling.pyramid_sample(guider, noise, latent, sampler, sigmas, levels, seed=0)
    off = pyr_sampling.pyramid_sample(guider, noise, latent, sampler, sigmas, levels, seed=0, noise_correction=False)
    assert worst_band_error(core, prior, ours, direct) < tolerance
    assert worst_band_error(core, prior, off, direct) > 0.3


def test_inpainting_keeps_the_unmasked_latent(comfy_host, mods):
    import comfy.samplers

    pyr_sampling, pyr, _, _ = mods
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd3")
    guider = comfy.samplers.CFGGuider(patcher)
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd3", 1)
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    latent = torch.randn(2, 16, 16, 24, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, 16, 24)
    mask[..., :12] = 1.0
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(2))
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 8).cpu()
    out = pyr_sampling.pyramid_sample(guider, noise, latent, comfy.samplers.sampler_object("euler"), sigmas,
                                      pyr.parse_ladder("2:0.5"), denoise_mask=mask, seed=0)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert torch.allclose(out[..., 12:], latent[..., 12:], atol=1e-5), "the unmasked half must be kept"
    assert (out[..., :12] - latent[..., :12]).abs().mean() > 0.1, "the masked half must be resampled"


def test_odd_sizes_are_padded_and_cropped(comfy_host, mods):
    import comfy.samplers

    pyr_sampling, pyr, _, analytic = mods
    _, patcher, guider = analytic_guider(analytic, "eps")
    noise = torch.randn(1, 3, 37, 50, generator=torch.Generator().manual_seed(3))
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", 8).cpu()
    out = pyr_sampling.pyramid_sample(guider, noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"),
                                      sigmas, pyr.parse_ladder("4:0.3, 2:0.3"), seed=0)
    assert out.shape == noise.shape and torch.isfinite(out).all()


def test_absolute_areas_are_scaled_per_level(mods):
    pyr_sampling = mods[0]
    conds = {"positive": [{"area": (8, 8, 0, 8)}, {"area": ("percentage", 0.5, 0.5, 0, 0)}, {}]}
    scaled = pyr_sampling.scale_areas(conds, 1 / 2)["positive"]
    assert scaled[0]["area"] == (4, 4, 0, 4)
    assert pyr_sampling.scale_areas({"p": [{"area": (5, 3, 3, 1)}]}, 1 / 2)["p"][0]["area"] == (3, 2, 1, 0)
    assert pyr_sampling.scale_areas({"p": [{"area": (5, 3, 3, 1)}]}, 1.5)["p"][0]["area"] == (8, 5, 4, 1)
    assert scaled[1]["area"] == ("percentage", 0.5, 0.5, 0, 0)
    assert conds["positive"][0]["area"] == (8, 8, 0, 8), "the caller's conditioning must not be modified"


def test_unsupported_sampler_state_is_a_clear_error(comfy_host, mods):
    import comfy.samplers

    pyr_sampling, pyr, _, analytic = mods
    _, patcher, guider = analytic_guider(analytic, "flow")
    noise = torch.randn(1, 3, 32, 32)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 8).cpu()
    with pytest.raises(pyr_sampling.PyramidError, match="does not report its state"):
        pyr_sampling.pyramid_sample(guider, noise, torch.zeros_like(noise), comfy.samplers.sampler_object("dpm_fast"),
                                    sigmas, pyr.parse_ladder("2:0.4"), seed=0)


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_in_process_models(comfy_host, mods, family):
    """The families that cannot be loaded from a demo file (tiny SDXL UNet, tiny Flux DiT)."""
    import comfy.samplers

    pyr_sampling, pyr, _, _ = mods
    patcher = comfy_host.module("host.demo_models").build_tiny_model(family)
    guider = comfy.samplers.CFGGuider(patcher)
    cond = comfy_host.module("host.demo_models").demo_conditioning(family, 1)
    guider.set_conds(cond, comfy_host.module("host.demo_models").demo_conditioning(family, 2, 0.0))
    guider.set_cfg(2.0)
    channels = 4 if family == "sdxl" else 16
    noise = torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(4))
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 6).cpu()
    out = pyr_sampling.pyramid_sample(guider, noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"),
                                      sigmas, pyr.parse_ladder("4:0.3, 2:0.3"), seed=0)
    assert out.shape == noise.shape and torch.isfinite(out).all() and out.std() > 0
