"""Tiny image models of the 2026 families (Flux.2 dev and klein, Chroma, Qwen-Image, Z-Image) from the host's own
classes: each builds through its config class, samples, is detected from its state dict where the host can, has
its VAE and a LoRA key map."""

from __future__ import annotations

import pytest
import torch

FAMILIES = ("flux2", "flux2_klein", "chroma", "qwen_image", "z_image")

# family -> (config class, diffusion model class, latent channels, spatial compression, patch size)
EXPECTED = {
    "flux2": ("Flux2", "comfy.ldm.flux.model.Flux", 128, 16, 1),
    "flux2_klein": ("Flux2", "comfy.ldm.flux.model.Flux", 128, 16, 1),
    "chroma": ("Chroma", "comfy.ldm.chroma.model.Chroma", 16, 8, 2),
    "qwen_image": ("QwenImage", "comfy.ldm.qwen_image.model.QwenImageTransformer2DModel", 16, 8, 2),
    "z_image": ("ZImage", "comfy.ldm.lumina.model.NextDiT", 16, 8, 2),
}
# family -> (model_sampling class name, shift)
SAMPLING = {
    "flux2": ("ModelSamplingFlux", 2.02), "flux2_klein": ("ModelSamplingFlux", 2.02),
    "chroma": ("ModelSamplingFlux", 1.15), "qwen_image": ("ModelSamplingFlux", 1.15),
    "z_image": ("ModelSamplingDiscreteFlow", 3.0),
}
# family -> the first_stage_model class of its VAE and the decoded image of LATENT_SHAPES[family]
VAES = {
    "flux2": ("AutoencoderKL", (1, 64, 64, 3)), "flux2_klein": ("AutoencoderKL", (1, 64, 64, 3)),
    "chroma": ("AutoencodingEngine", (1, 64, 64, 3)), "z_image": ("AutoencodingEngine", (1, 64, 64, 3)),
    "qwen_image": ("WanVAE", (1, 1, 64, 64, 3)),
}
# family -> the key styles of the host's LoRA key map (comfy.lora.model_lora_keys_unet), by prefix
LORA_STYLES = {
    "flux2": {"lora_unet_", "diffusion_model.", "transformer.", "lycoris_", "lora_transformer_"},
    "chroma": {"lora_unet_", "diffusion_model.", "transformer.", "lycoris_", "lora_transformer_"},
    "qwen_image": {"lora_unet_", "diffusion_model.", "transformer.", "lycoris_"},
    "z_image": {"lora_unet_", "diffusion_model.", "transformer.", "lycoris_"},
}
LORA_STYLES["flux2_klein"] = LORA_STYLES["flux2"]
# family -> how the host's load of its tiny file fails: the approximator (Chroma) or the width (Qwen-Image) that
# detection fixes does not match; Z-Image is taken for Lumina2, whose default 32 heads do not divide into 128-wide
# rope axes at dim 256 (NextDiT's assert)
# (0.8.1 and older also fix Chroma's num_heads at 24: FluxParams' divisibility check fails first)
LOAD_FAILURES = {"chroma": ((RuntimeError, ValueError), "size mismatch|num_heads"),
                 "qwen_image": (RuntimeError, "size mismatch"), "z_image": (AssertionError, "")}


@pytest.fixture(scope="module")
def fam(comfy_host):
    return comfy_host.module("host.tiny_image_families")


@pytest.fixture(scope="module")
def built(fam):
    cache = {}

    def get(family):
        reason = fam.missing_host_class(family)
        if reason is not None:
            pytest.skip(f"this host has no {reason}")
        if family not in cache:
            cache[family] = fam.build(family, seed=0)
        return cache[family]

    return get


def sample(patcher, cond, shape, steps=2):
    import comfy.sample

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    out = comfy.sample.sample(patcher, noise, steps, 1.0, "euler", "simple", cond, cond, torch.zeros(shape),
                              disable_pbar=True, seed=7)
    return noise, out


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_through_the_host_config_class(fam, built, family):
    patcher = built(family)
    config_cls, dm_cls, channels, _, patch = EXPECTED[family]
    assert type(patcher.model.model_config).__name__ == config_cls
    dm = patcher.model.diffusion_model
    assert f"{type(dm).__module__}.{type(dm).__name__}" == dm_cls
    assert patcher.model.latent_format.latent_channels == channels == fam.LATENT_SHAPES[family][1]
    assert dm.patch_size == patch
    ms = patcher.get_model_object("model_sampling")
    assert (type(ms).__mro__[1].__name__, pytest.approx(ms.shift)) == SAMPLING[family]
    assert sum(p.numel() for p in dm.parameters()) < 8_000_000, "not tiny"


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_a_finite_latent_that_listens_to_the_text(fam, built, family):
    patcher = built(family)
    shape = fam.LATENT_SHAPES[family]
    noise, a = sample(patcher, fam.conditioning(family, seed=1), shape)
    _, b = sample(patcher, fam.conditioning(family, seed=2), shape)
    assert a.shape == shape and torch.isfinite(a).all()
    # flow: the sample is the noise less the integrated velocity. With random weights attention is near uniform, so
    # the text moves the sample little (1e-4 to 1e-2 of the velocity); a model that ignored it would give a == b
    # bit for bit.
    velocity = (noise - a).float()
    assert velocity.std() > 1e-3, "the model predicts (nearly) nothing"
    assert (a - b).abs().max() > 1e-5 * velocity.std(), "the sample ignores the conditioning"


@pytest.mark.parametrize("family", FAMILIES)
def test_host_detection_from_the_state_dict(fam, built, family):
    built(family)
    import comfy.sd

    sd = fam.state_dict(family)
    detected, loads = fam.DETECTION[family]
    assert type(fam.detect(sd)).__name__ == detected
    mismatch = fam.detection_mismatch(family, sd)
    assert bool(mismatch) != loads or "num_heads" in mismatch, mismatch
    if loads and mismatch:  # 0.8.1 and older: Flux.2's detection fixes num_heads at 48 (Chroma's at 24)
        pytest.skip(f"this host's comfy.model_detection fixes {mismatch} (detected, tiny): no tiny file loads")
    if not loads:  # see the module docstring: the host's detection fixes widths a tiny model does not have
        error, match = LOAD_FAILURES[family]
        with pytest.raises(error, match=match):
            comfy.sd.load_diffusion_model_state_dict(sd)
        return
    patcher = comfy.sd.load_diffusion_model_state_dict(dict(sd))  # the host pops what it loads
    assert type(patcher.model.model_config).__name__ == fam.CONFIG_CLASSES[family]
    config = {k: v for k, v in patcher.model.model_config.unet_config.items() if k != "dtype"}
    assert config == fam.unet_config(family)
    loaded = patcher.model.diffusion_model.state_dict()
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k].to(sd[k].dtype), sd[k]) for k in sd)


def test_detection_tells_flux2_dev_from_klein(fam, built):
    built("flux2")
    dev = fam.detect(fam.state_dict("flux2")).unet_config
    klein = fam.detect(fam.state_dict("flux2_klein")).unet_config
    assert (dev["guidance_embed"], dev["context_in_dim"]) == (True, 15360)
    assert (klein["guidance_embed"], klein["context_in_dim"]) == (False, 7680)


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_decodes_to_the_image_size(fam, built, family):
    built(family)
    vae = fam.tiny_vae(family)
    cls, image_shape = VAES[family]
    assert type(vae.first_stage_model).__name__ == cls
    assert vae.latent_channels == fam.LATENT_SHAPES[family][1]
    ratio = vae.downscale_ratio
    assert (ratio[-1] if isinstance(ratio, tuple) else ratio) == EXPECTED[family][3]
    latent = torch.randn(fam.LATENT_SHAPES[family], generator=torch.Generator().manual_seed(3))
    image = vae.decode(latent)
    assert tuple(image.shape) == image_shape
    assert torch.isfinite(image).all() and image.std() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_key_map(built, family):
    import comfy.lora

    model = built(family).model
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    assert key_map
    styles = {p for p in ("lora_unet_", "diffusion_model.", "transformer.", "lycoris_", "lora_transformer_")
              if any(k.startswith(p) for k in key_map)}
    # 0.3.76-dev maps no transformer. keys for Lumina2-class models (its comfy/lora.py:316-323); 0.8.1 on do
    assert LORA_STYLES[family] - styles <= ({"transformer."} if family == "z_image" else set())
    assert styles <= LORA_STYLES[family]
    weights = model.state_dict()
    targets = [v[0] if isinstance(v, tuple) else v for v in key_map.values()]
    assert sum(t in weights for t in targets) > len(targets) // 2
