"""Tiny video models of the 2026 families (host/tiny_video_families.py): built from the host's classes, sampled,
detected from their files, decoded by their VAEs, and their LoRA key maps."""

from __future__ import annotations

import importlib

import pytest
import torch

# family -> (BaseModel class, diffusion model "module:class")
MODELS = {
    "wan22_ti2v_5b": ("WAN22", "comfy.ldm.wan.model:WanModel"),
    "wan22_a14b_high": ("WAN21", "comfy.ldm.wan.model:WanModel"),
    "wan22_a14b_low": ("WAN21", "comfy.ldm.wan.model:WanModel"),
    "hunyuan_video15": ("HunyuanVideo15", "comfy.ldm.hunyuan_video.model:HunyuanVideo"),
    "ltxv": ("LTXV", "comfy.ldm.lightricks.model:LTXVModel"),
    "ltx2": ("LTXAV", "comfy.ldm.lightricks.av_model:LTXAVModel"),
}
# family -> host config class the detection must pick
CONFIGS = {"wan22_ti2v_5b": "WAN22_T2V", "wan22_a14b_high": "WAN21_T2V", "wan22_a14b_low": "WAN21_T2V",
           "hunyuan_video15": "HunyuanVideo15", "ltxv": "LTXV", "ltx2": "LTXAV"}
# family -> (VAE module class "module:class" (HunyuanVideo 1.5: of its decoder), latent channels, t, s compression)
VAES = {
    "wan22_ti2v_5b": ("comfy.ldm.wan.vae2_2:WanVAE", 48, 4, 16),
    "wan22_a14b_high": ("comfy.ldm.wan.vae:WanVAE", 16, 4, 8),
    "hunyuan_video15": ("comfy.ldm.hunyuan_video.vae_refiner:Decoder", 32, 4, 16),
    "ltxv": ("comfy.ldm.lightricks.vae.causal_video_autoencoder:VideoVAE", 128, 8, 32),
    "ltx2": ("comfy.ldm.lightricks.vae.causal_video_autoencoder:VideoVAE", 128, 8, 32),
}
# family -> (a key of the host's generic `lora_unet_*` style, of the `diffusion_model.*` style, of the family's own
# style or None): Wan has only the generic ones; HunyuanVideo adds diffusion-pipe `transformer.*` keys, LTX bare keys.
LORA_STYLES = {
    "wan22_ti2v_5b": ("lora_unet_blocks_0_self_attn_q", "diffusion_model.blocks.0.self_attn.q", None),
    "wan22_a14b_high": ("lora_unet_blocks_0_cross_attn_k", "diffusion_model.blocks.0.cross_attn.k", None),
    "hunyuan_video15": ("lora_unet_double_blocks_0_img_attn_qkv", "diffusion_model.double_blocks.0.img_attn.qkv",
                        "transformer.double_blocks.0.img_attn_qkv"),
    "ltxv": ("lora_unet_transformer_blocks_0_attn1_to_q", "diffusion_model.transformer_blocks.0.attn1.to_q",
             "transformer_blocks.0.attn1.to_q"),
    "ltx2": ("lora_unet_transformer_blocks_0_audio_attn1_to_q",
             "diffusion_model.transformer_blocks.0.audio_to_video_attn.to_q",
             "transformer_blocks.0.audio_to_video_attn.to_q"),
}


def host_class(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="module")
def tv(comfy_host):
    return comfy_host.module("host.tiny_video_families")


@pytest.fixture
def family(request, tv):
    missing = tv.missing_host_classes(request.param)
    if missing:
        pytest.skip(f"this host lacks {', '.join(missing)}, which the {request.param} family needs")
    return request.param


def sample(tv, patcher, family: str, cond_seed: int, steps: int = 2) -> torch.Tensor:
    import comfy.sample

    shape = tv.latent_shape(family)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    return comfy.sample.sample(patcher, noise, steps, 1.0, "euler", "simple", tv.conditioning(family, cond_seed),
                               tv.conditioning(family, cond_seed + 100), torch.zeros(shape), disable_pbar=True,
                               seed=0)


@pytest.mark.parametrize("family", list(MODELS), indirect=True)
def test_builds_through_the_host_config_class(tv, family):
    patcher = tv.build(family)
    base, dm = MODELS[family]
    assert type(patcher.model.model_config) is tv.config_class(family)
    assert type(patcher.model.model_config).__name__ == CONFIGS[family]
    assert type(patcher.model).__name__ == base
    assert type(patcher.model.diffusion_model) is host_class(dm)
    assert sum(p.numel() for p in patcher.model.diffusion_model.parameters()) < 5_000_000, "not tiny"
    again = tv.build(family).model.diffusion_model.state_dict()
    for k, v in patcher.model.diffusion_model.state_dict().items():
        assert torch.equal(v, again[k]), f"{k} differs between two builds with the same seed"


def test_a14b_experts_share_a_layout_not_weights(tv):
    if missing := tv.missing_host_classes("wan22_a14b_high"):
        pytest.skip(f"this host lacks {', '.join(missing)}")
    high = tv.build("wan22_a14b_high").model.diffusion_model.state_dict()
    low = tv.build("wan22_a14b_low").model.diffusion_model.state_dict()
    assert {k: v.shape for k, v in high.items()} == {k: v.shape for k, v in low.items()}
    assert not torch.equal(high["blocks.0.self_attn.q.weight"], low["blocks.0.self_attn.q.weight"])


@pytest.mark.parametrize("family", list(MODELS), indirect=True)
def test_samples_a_video_latent(tv, family):
    patcher = tv.build(family)
    out_a = sample(tv, patcher, family, cond_seed=1)
    out_b = sample(tv, patcher, family, cond_seed=2)
    shape = tv.latent_shape(family)
    assert shape[1] == VAES.get(family, VAES["wan22_a14b_high"])[1]
    assert tuple(out_a.shape) == shape and torch.isfinite(out_a).all()
    assert out_a.float().std() > 1e-3, "sampled latent is (nearly) constant"
    assert (out_a - out_b).abs().max() > 1e-4, "the model ignores its conditioning"


@pytest.mark.parametrize("family", list(MODELS), indirect=True)
def test_host_detects_the_file(tv, family):
    loaded = tv.detect(family)
    assert loaded is not None, "the host detected no model in the file"
    assert type(loaded.model.model_config).__name__ == CONFIGS[family]
    built = tv.build(family).model.diffusion_model.state_dict()
    got = loaded.model.diffusion_model.state_dict()
    assert set(got) == set(built)
    for k, v in built.items():
        assert got[k].shape == v.shape, k
        assert torch.allclose(got[k].float(), v.half().float()), f"{k} did not load from the file"


def test_ltx2_file_needs_its_config_metadata(tv):
    """Without the config metadata the host reads LTX-2's size from the class defaults and fails to match it."""
    if missing := tv.missing_host_classes("ltx2"):
        pytest.skip(f"this host lacks {', '.join(missing)}")
    import comfy.model_detection

    sd = tv.state_dict("ltx2")
    detected = comfy.model_detection.detect_unet_config(sd, "")
    assert detected["attention_head_dim"] != tv.unet_config("ltx2")["attention_head_dim"]
    with_metadata = comfy.model_detection.detect_unet_config(sd, "", metadata=tv.file_metadata("ltx2"))
    assert {k: with_metadata[k] for k in tv.unet_config("ltx2")} == tv.unet_config("ltx2")


@pytest.mark.parametrize("family", list(VAES), indirect=True)
def test_vae_decodes_frames(tv, family):
    spec, channels, t_ratio, s_ratio = VAES[family]
    vae = tv.tiny_vae(family)
    first_stage = vae.first_stage_model
    module = first_stage.decoder if spec.endswith(":Decoder") else first_stage
    assert type(module) is host_class(spec)
    assert vae.latent_channels == channels == tv.LATENT[family][0]
    sd = tv.vae_state_dict(family)
    loaded = first_stage.state_dict()
    for k, v in sd.items():  # the host's branch loaded every weight of the tiny file
        assert torch.equal(loaded[k].float(), v.float()), k
    z = torch.randn((1, channels, 2, 2, 3), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        frames = vae.decode(z)
    assert tuple(frames.shape) == (1, 1 + t_ratio, 2 * s_ratio, 3 * s_ratio, 3)
    assert tv.pixel_frames(family, 2) == 1 + t_ratio
    assert torch.isfinite(frames).all() and frames.float().std() > 1e-3


@pytest.mark.parametrize("family", list(LORA_STYLES), indirect=True)
def test_lora_key_map(tv, family):
    patcher = tv.build(family)
    keys = tv.lora_key_map(patcher)
    model_keys = set(patcher.model.state_dict())
    assert keys and set(keys.values()) <= model_keys
    *generic, specific = LORA_STYLES[family]
    for style in generic:
        assert style in keys, f"{style} not in the host's key map"
    if specific is None:
        return
    if family.startswith("ltx") and not host_maps_bare_ltx_keys():
        pytest.skip("this host's comfy.lora.model_lora_keys_unet has no LTXV/LTXAV branch (bare key style)")
    assert specific in keys, f"{specific} not in the host's key map"


def host_maps_bare_ltx_keys() -> bool:
    import inspect

    import comfy.lora

    return "model_base.LTXV" in inspect.getsource(comfy.lora.model_lora_keys_unet)


def test_a14b_expert_switch(tv):
    """The workflows' split: high-noise expert to step 10 of 20 (shift 5), low-noise expert after; the sigma there."""
    if missing := tv.missing_host_classes("wan22_a14b_high"):
        pytest.skip(f"this host lacks {', '.join(missing)}")
    high = tv.with_shift(tv.build("wan22_a14b_high"))
    low = tv.with_shift(tv.build("wan22_a14b_low"))
    shift, t = tv.A14B_SHIFT, 1 - tv.A14B_SPLIT / tv.A14B_STEPS
    assert tv.switch_sigma(high) == pytest.approx(shift * t / (1 + (shift - 1) * t), abs=1e-4)
    assert tv.switch_sigma(high, 4, 2) == pytest.approx(tv.switch_sigma(high), abs=1e-6)
    shape = tv.latent_shape("wan22_a14b_high")
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    cond, neg = tv.conditioning("wan22_a14b_high", 1), tv.conditioning("wan22_a14b_high", 2)
    both = tv.sample_two_experts(high, low, noise, cond, neg, steps=4, split=2)
    only_high = tv.sample_two_experts(high, high, noise, cond, neg, steps=4, split=2)
    assert tuple(both.shape) == shape and torch.isfinite(both).all()
    assert (both - only_high).abs().max() > 1e-4, "the low-noise expert did not run"
    import comfy.sample

    full = comfy.sample.sample(high, noise, 4, 1.0, "euler", "simple", cond, neg, torch.zeros(shape),
                               disable_pbar=True, seed=0)
    assert torch.allclose(only_high, full, atol=1e-5), "split sampling with one expert differs from one run"
