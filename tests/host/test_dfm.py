"""DFM nodes in-process: one level samples exactly as the host's euler; two levels run, save and load."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def setup(comfy_host):
    demo = comfy_host.module("host.demo_models")
    patcher = demo.build_tiny_model("sd3")
    demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd3", 1)
    return comfy_host, patcher, cond


def _run(comfy_host, model, cond, steps, levels_latent=16, cfg=2.0, solver="euler"):
    node = comfy_host.node("PyraDFMSampler")
    latent = {"samples": torch.zeros(1, 16, levels_latent, levels_latent)}
    return node.execute(model, 3, steps, "0.3", solver, cfg, "simple", cond, cond, latent).result[0]["samples"]


def _stock_euler(patcher, cond):
    """What the stock sampler gives for `_run`'s settings (6 Euler steps, seed 3, CFG 2, 16x16 latent)."""
    import comfy.sample

    latent = torch.zeros(1, 16, 16, 16)
    return comfy.sample.sample(patcher, comfy.sample.prepare_noise(latent, 3), 6, 2.0, "euler", "simple", cond, cond,
                               latent, disable_pbar=True, seed=3)


def test_one_level_equals_the_stock_euler_sampler(setup):
    comfy_host, patcher, cond = setup
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 1).result[0]
    ours = _run(comfy_host, dfm, cond, "6")
    ref = _stock_euler(patcher, cond)
    assert torch.equal(ours, ref)
    assert dfm.model is patcher.model  # the base is shared, not copied or changed


def test_two_levels_sample_save_and_load(setup, tmp_path):
    comfy_host, patcher, cond = setup
    dfm_model = comfy_host.module("host.dfm")
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    out = _run(comfy_host, dfm, cond, "3, 2")
    assert out.shape == (1, 16, 16, 16) and torch.isfinite(out).all()
    heun = _run(comfy_host, dfm, cond, "3, 2", solver="heun")
    assert not torch.equal(out, heun)
    path = dfm_model.save(dfm, tmp_path / "d.safetensors")
    again = _run(comfy_host, dfm_model.load(patcher, path), cond, "3, 2")
    assert torch.equal(out, again)


def test_stock_sampler_on_a_dfm_model_is_a_clear_error(setup):
    import comfy.sample

    comfy_host, patcher, cond = setup
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    latent = torch.zeros(1, 16, 16, 16)
    with pytest.raises(Exception, match="PyraDFMSampler"):
        comfy.sample.sample(dfm, torch.randn_like(latent), 2, 1.0, "euler", "simple", cond, cond, latent,
                            disable_pbar=True, seed=0)


@pytest.fixture(scope="module")
def flux(comfy_host):
    demo = comfy_host.module("host.demo_models")
    patcher = demo.build_tiny_model("flux")
    demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
    cond = comfy_host.module("host.demo_models").demo_conditioning("flux", 1)  # guidance 3.5, pooled
    return comfy_host, patcher, cond


def test_flux_one_level_equals_the_stock_euler_sampler(flux):
    comfy_host, patcher, cond = flux
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 1).result[0]
    ours = _run(comfy_host, dfm, cond, "6")
    ref = _stock_euler(patcher, cond)
    assert torch.equal(ours, ref)
    other = [[c[0], {**c[1], "guidance": 1.0}] for c in cond]  # the guidance reaches the DFM model
    assert not torch.equal(_run(comfy_host, dfm, other, "6"), ours)


def test_flux_two_levels_sample_save_and_load_record_the_family(flux, tmp_path):
    from safetensors import safe_open

    comfy_host, patcher, cond = flux
    dfm_model = comfy_host.module("host.dfm")
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    out = _run(comfy_host, dfm, cond, "3, 2")
    assert out.shape == (1, 16, 16, 16) and torch.isfinite(out).all()
    path = dfm_model.save(dfm, tmp_path / "f.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert '"family": "flux"' in f.metadata()["pyra_dfm"]
    assert torch.equal(out, _run(comfy_host, dfm_model.load(patcher, path), cond, "3, 2"))


def test_convert_names_the_supported_families(comfy_host):
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    with pytest.raises(Exception, match=r"MMDiT, Flux\.1 .*and Wan 2\.1"):
        comfy_host.node("PyraDFMConvert").execute(patcher, 2)


@pytest.fixture(scope="module")
def wan(comfy_host):
    demo = comfy_host.module("host.demo_models")
    patcher = demo.build_tiny_model("wan21")
    demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
    cond = comfy_host.module("host.demo_models").demo_conditioning("wan21", 1)
    return comfy_host, patcher, cond


def _run_video(comfy_host, model, cond, steps, frames=3):
    latent = {"samples": torch.zeros(1, 16, frames, 8, 8)}
    return comfy_host.node("PyraDFMSampler").execute(model, 3, steps, "0.3", "euler", 2.0, "simple", cond, cond,
                                                     latent).result[0]["samples"]


@pytest.mark.parametrize("frames", [1, 3])
def test_wan_one_level_equals_the_stock_euler_sampler(wan, frames):
    import comfy.sample

    comfy_host, patcher, cond = wan
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 1).result[0]
    ours = _run_video(comfy_host, dfm, cond, "4", frames)
    latent = torch.zeros(1, 16, frames, 8, 8)
    ref = comfy.sample.sample(patcher, comfy.sample.prepare_noise(latent, 3), 4, 2.0, "euler", "simple", cond, cond,
                              latent, disable_pbar=True, seed=3)
    assert ours.shape == latent.shape and torch.equal(ours, ref)
    assert dfm.model is patcher.model


def test_wan_two_levels_sample_save_and_load_record_the_family(wan, tmp_path):
    from safetensors import safe_open

    comfy_host, patcher, cond = wan
    dfm_model = comfy_host.module("host.dfm")
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    out = _run_video(comfy_host, dfm, cond, "3, 2")
    assert out.shape == (1, 16, 3, 8, 8) and torch.isfinite(out).all()
    path = dfm_model.save(dfm, tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert '"family": "wan21"' in f.metadata()["pyra_dfm"]
    assert torch.equal(out, _run_video(comfy_host, dfm_model.load(patcher, path), cond, "3, 2"))
