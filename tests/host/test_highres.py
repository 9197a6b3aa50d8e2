"""Structure-guided high resolution in-process: structure kept on the analytic model, every family, bad input."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def hr(comfy_host):
    return comfy_host.module("host.highres")


def settings(hr, **kw):
    base = dict(scales=[2.0], cfgs=[1.0], steps=6, denoise=0.4, sampler_name="dpmpp_2m", scheduler="simple")
    return hr.HighResSettings(**{**base, **kw})


def test_guidance_keeps_the_base_structure_on_the_analytic_model(comfy_host, hr):
    """Same seeds: the guided result's 2x2 means stay closer to the base than the hires fix's (no guidance)."""
    analytic = comfy_host.module("host.analytic")
    prior = analytic.NaturalImagePrior()
    patcher = analytic.analytic_model_patcher(prior, "flow")
    cond = [[torch.zeros(1, 1, 8), {}]]
    base = prior.sample(4, 32, 32, generator=torch.Generator().manual_seed(0))

    def error(guidance_steps: int) -> float:
        out = hr.highres_sample(patcher, cond, cond, {"samples": base}, 1,
                                settings(hr, guidance_steps=guidance_steps, sharpen=0.0), disable_pbar=True)
        assert out.shape == (4, 3, 64, 64)
        return float((torch.nn.functional.avg_pool2d(out, 2) - base).pow(2).sum() / base.pow(2).sum())

    plain, guided, all_steps = error(0), error(3), error(6)
    assert guided < 0.8 * plain
    assert all_steps < 0.4 * plain


def test_haar_guidance_keeps_the_block_means_exactly(comfy_host, hr):
    """Haar on a 2x stage, every step guided: the result's 2x2 means ARE the base (dpmpp_2m ends on x0)."""
    analytic = comfy_host.module("host.analytic")
    prior = analytic.NaturalImagePrior()
    patcher = analytic.analytic_model_patcher(prior, "eps")
    cond = [[torch.zeros(1, 1, 8), {}]]
    base = prior.sample(2, 32, 32, generator=torch.Generator().manual_seed(1))
    s = settings(hr, guidance_steps=6, wavelet="haar", sharpen=1.0)
    out = hr.highres_sample(patcher, cond, cond, {"samples": base}, 1, s, disable_pbar=True)
    assert torch.allclose(torch.nn.functional.avg_pool2d(out, 2), base, atol=1e-4)
    s_db4 = settings(hr, guidance_steps=6, wavelet="db4", sharpen=1.0)
    out = hr.highres_sample(patcher, cond, cond, {"samples": base}, 1, s_db4, disable_pbar=True)
    assert not torch.allclose(torch.nn.functional.avg_pool2d(out, 2), base, atol=1e-2), "db4 is not exact"


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux", "wan21"])
def test_every_family_runs_in_latent_mode(comfy_host, hr, family):
    patcher = comfy_host.module("host.demo_models").build_tiny_model(family)
    cond = comfy_host.module("host.demo_models").demo_conditioning(family, 1)
    shape = (1, 16, 2, 8, 8) if family == "wan21" else (1, patcher.model.latent_format.latent_channels, 8, 8)
    out = hr.highres_sample(patcher, cond, cond, {"samples": torch.randn(shape)}, 0,
                            settings(hr, steps=2, guidance_steps=1, cfgs=[2.0]), disable_pbar=True)
    assert out.shape == (*shape[:-2], 16, 16) and torch.isfinite(out).all()


def test_pixel_mode_through_the_demo_vae_and_a_mask(comfy_host, hr):
    import comfy.sd
    import comfy.utils
    import folder_paths

    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd15", 1)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(folder_paths.get_full_path("vae", "pyra-demo-taesd.safetensors")))
    base = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    for mode, upscale in (("pixel", "latent"), ("latent", "pixels"), ("pixel", "pixels")):
        s = settings(hr, steps=2, guidance_steps=2, guidance_mode=mode, upscale_method=upscale, cfgs=[2.0])
        out = hr.highres_sample(patcher, cond, cond, {"samples": base, "noise_mask": mask}, 0, s, vae=vae,
                                disable_pbar=True)
        assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_bad_requests_are_clear_errors(comfy_host, hr):
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd15", 1)
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    with pytest.raises(hr.HighResError, match="needs a VAE"):
        hr.highres_sample(patcher, cond, cond, latent, 0, settings(hr, guidance_mode="pixel"))
    with pytest.raises(hr.HighResError, match="upscale_model input"):
        hr.highres_sample(patcher, cond, cond, latent, 0, settings(hr, upscale_method="upscale model"), vae=object())
    with pytest.raises(hr.HighResError, match="guidance_steps"):
        hr.highres_sample(patcher, cond, cond, latent, 0, settings(hr, guidance_steps=9))


def test_node_validation_names_the_problem(comfy_host):
    node = comfy_host.node("PyraDiffuseHigh")
    assert node.validate_inputs(scales="2") is True
    assert "larger than the base" in node.validate_inputs(scales="0.5")
    assert "finite" in node.validate_inputs(scales="2, inf")
    hr_core = comfy_host.module("core.samplers.highres")
    with pytest.raises(ValueError, match="numbers"):
        hr_core.parse_per_stage("high", 1, "cfg")
    with pytest.raises(ValueError, match="nan is not a finite number"):
        hr_core.parse_per_stage("7, nan", 2, "cfg")


def test_concat_models_get_their_latent_at_every_stage(comfy_host, hr):
    """An edit/inpainting model concatenates a latent: it is resized per stage, and it matters."""
    import comfy.samplers

    pyramid = comfy_host.module("host.pyramid")
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15_inpaint")
    assert patcher.model.concat_keys, "the tiny inpainting model should concatenate a latent"
    base = comfy_host.module("host.demo_models").demo_conditioning("sd15", 1)
    mask = torch.ones(1, 1, 8, 8)

    def conds(seed: int):
        image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
        return [[base[0][0], {**base[0][1], "concat_latent_image": image, "concat_mask": mask}]]

    def run_both(cond):
        up = hr.highres_sample(patcher, cond, cond, {"samples": torch.randn(1, 4, 8, 8)}, 0,
                               settings(hr, steps=2, guidance_steps=1, cfgs=[1.0]), disable_pbar=True)
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(cond, cond)
        guider.set_cfg(1.0)
        sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 4).cpu()
        noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
        pyr = pyramid.pyramid_sample(guider, noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"),
                                     sigmas, [(2, 0.5)], seed=0, disable_pbar=True)
        return up, pyr

    (up_a, pyr_a), (up_b, pyr_b) = run_both(conds(1)), run_both(conds(2))
    assert up_a.shape == (1, 4, 16, 16) and pyr_a.shape == (1, 4, 16, 16)
    assert (up_a - up_b).abs().max() > 1e-4 and (pyr_a - pyr_b).abs().max() > 1e-4
