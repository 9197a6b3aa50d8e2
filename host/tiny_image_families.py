"""Tiny random-weight image models of the 2026 families, built from the host's own classes: Flux.2 (dev layout and
the klein size), Chroma, Qwen-Image and Z-Image (the Lumina2-class NextDiT), with their VAEs and conditioning.

`build(family)` goes through the host's model-config class and BaseModel, as `host.demo_models.build_tiny_model`
does for the older families. `state_dict(family)` is the diffusion model's state dict, in the layout that
`comfy.sd.load_diffusion_model_state_dict` reads. How far the host's detection gets at a tiny size is in DETECTION:

- Flux.2 (dev, klein): detected and loaded. comfy/model_detection.py reads hidden_size from img_in, depth and
  depth_single_blocks by counting blocks, context_in_dim from txt_in, guidance_embed from guidance_in, and
  num_heads = hidden_size / sum(axes_dim) = hidden_size / 128; every other field is Flux.2's constant
  (model_detection.py:265-279). hidden_size 128 therefore gives one head of 128.
- Chroma: the config class is detected, the weights do not load. Detection hard-codes the modulation
  approximator's out_dim 3072, hidden_dim 5120 and n_layers 5 (model_detection.py:324-326); out_dim must equal
  hidden_size (the approximator's outputs modulate the blocks), so only a 3072-wide model loads.
- Qwen-Image: the config class is detected, the weights do not load. Detection reads only in_channels and
  num_layers (model_detection.py:952-955); the width comes from QwenImageTransformer2DModel's defaults, 24 heads
  of 128 and joint_attention_dim 3584 (comfy/ldm/qwen_image/model.py:342-353).
- Z-Image: not detected as Z-Image. The ZImage config class matches only dim 3840 (comfy/supported_models.py:1203-
  1206), so a tiny file is taken for Lumina2, whose fields are set only for dims 2304 and 3840
  (model_detection.py:587-604); at another dim NextDiT's defaults (32 heads, rope axes 16+56+56) fail its
  head-width assert (comfy/ldm/lumina/model.py:622) unless dim is 4096.

The VAEs are the classes comfy.sd.VAE builds from a state dict (`tiny_vae`): Flux.2's is the KL autoencoder with a
batch-normalised 2x2-patchified latent (32 z channels -> 128 latent channels, 16x); Chroma and Z-Image use the
16-channel Flux VAE (8x); Qwen-Image uses the Wan 2.1 VAE class (8x, a latent frame axis). The host always builds
the KL encoder at its real width (ch 128: comfy/sd.py:663) and reads only the decoder's width from
decoder.conv_in (comfy/sd.py:682), so those VAEs have a real-size encoder and a tiny decoder; the Wan VAE is tiny
throughout (its dim is read from the file).
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import comfy.ldm.models.autoencoder
import comfy.ldm.modules.diffusionmodules.model
import comfy.ldm.wan.vae
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch

from . import demo_models, features

log = logging.getLogger("pyra")

# Flux.2 as the host's detection writes it (comfy/model_detection.py, the "flux2" branch), at hidden_size 128.
_FLUX2 = {
    "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "hidden_size": 128,
    "mlp_ratio": 3.0, "num_heads": 1, "axes_dim": [32, 32, 32, 32], "theta": 2000, "patch_size": 1,
    "qkv_bias": False, "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
    "default_ref_method": "index", "ref_index_scale": 10.0, "txt_ids_dims": [3], "yak_mlp": False, "txt_norm": False,
}

# family -> unet_config for the host config class in CONFIG_CLASSES
TINY_CONFIGS: dict[str, dict] = {
    # dev: guidance-distilled (guidance_in), text from Mistral-3 24B (three layers of 5120 -> 15360); real 8 + 48 blocks
    "flux2": {**_FLUX2, "context_in_dim": 15360, "depth": 2, "depth_single_blocks": 2, "guidance_embed": True},
    # klein 4B: no guidance embedding, text from Qwen3-4B (three layers of 2560 -> 7680); real 5 + 20 blocks
    "flux2_klein": {**_FLUX2, "context_in_dim": 7680, "depth": 1, "depth_single_blocks": 2, "guidance_embed": False},
    # Chroma: Flux.1 blocks without per-block modulation; the approximator (distilled_guidance_layer) maps
    # (timestep, guidance, block index) to every block's modulation, so its out_dim is hidden_size
    "chroma": {
        "image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096, "hidden_size": 128,
        "mlp_ratio": 4.0, "num_heads": 1, "depth": 1, "depth_single_blocks": 2, "axes_dim": [16, 56, 56],
        "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 128, "hidden_dim": 128,
        "n_layers": 2, "txt_ids_dims": [], "vec_in_dim": None,
    },
    # Qwen-Image: 60 joint blocks of 24 x 128 in the real model; the latent is patchified 2x2 before img_in (64)
    "qwen_image": {
        "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
        "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 3584, "axes_dims_rope": [8, 12, 12],
    },
    # Z-Image: the Lumina2 NextDiT with Z-Image's fields (model_detection.py, dim 3840) at dim 256, two heads of 128
    # (Z-Image's head). dim >= 256: with z_image_modulation the blocks' adaLN reads min(dim, 256) features and the
    # timestep embedder gives 256 (comfy/ldm/lumina/model.py:291-294, 524).
    "z_image": {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": 2560, "n_layers": 2,
        "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48],
        "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
        "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32,
    },
}

CONFIG_CLASSES = {
    "flux2": "Flux2", "flux2_klein": "Flux2", "chroma": "Chroma", "qwen_image": "QwenImage", "z_image": "ZImage",
}

# family -> the config class the host's detection picks from state_dict(family), and whether the weights load
DETECTION: dict[str, tuple[str, bool]] = {
    "flux2": ("Flux2", True), "flux2_klein": ("Flux2", True), "chroma": ("Chroma", False),
    "qwen_image": ("QwenImage", False), "z_image": ("Lumina2", False),
}

# family -> (cross-attention shape without batch, extras). Flux.2's text is 512 tokens (its tokenizers' min_length;
# Flux2.extra_conds pads shorter text on the left); Chroma's guidance defaults to 0 and klein has no guidance
# embedding. None of these text encoders pools: CLIPTextEncode gives pooled_output None, which the Flux class of
# 0.8.1 and older reads unconditionally (Flux.encode_adm).
CONDITIONING: dict[str, tuple[tuple[int, int], dict]] = {
    "flux2": ((512, 15360), {"pooled_output": None, "guidance": 4.0}),
    "flux2_klein": ((512, 7680), {"pooled_output": None}),
    "chroma": ((16, 4096), {"pooled_output": None}),
    "qwen_image": ((16, 3584), {"pooled_output": None}),
    "z_image": ((16, 2560), {"pooled_output": None}),
}

# family -> latent shape of a 64x64 image (Qwen-Image's latent has a frame axis: latent_formats.Wan21)
LATENT_SHAPES = {
    "flux2": (1, 128, 4, 4), "flux2_klein": (1, 128, 4, 4), "chroma": (1, 16, 8, 8),
    "qwen_image": (1, 16, 1, 8, 8), "z_image": (1, 16, 8, 8),
}

# family -> the VAE kind comfy.sd.VAE builds for the family's VAE file
VAE_KINDS = {"flux2": "flux2", "flux2_klein": "flux2", "chroma": "flux", "z_image": "flux", "qwen_image": "wan21"}
# the decoder width of the tiny KL VAEs (the host reads it from decoder.conv_in; the encoder is ch 128 regardless)
_KL_DECODER_CH = 32
_KL = {"double_z": True, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
       "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def _check(family: str) -> None:
    if family not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny image family {family!r}; choose one of {', '.join(TINY_CONFIGS)}")


def missing_host_class(family: str) -> str | None:
    """The host class this ComfyUI lacks for `family` (e.g. 'comfy.supported_models.ZImage'), or None."""
    _check(family)
    import comfy.model_base

    name = CONFIG_CLASSES[family]
    if not hasattr(comfy.supported_models, name):
        return f"comfy.supported_models.{name}"
    base = {"Flux2": "Flux2", "Chroma": "Chroma", "QwenImage": "QwenImage", "ZImage": "Lumina2"}[name]
    if not hasattr(comfy.model_base, base):
        return f"comfy.model_base.{base}"
    return None


def _params_fields(family: str) -> frozenset[str] | None:
    """The fields of the host's parameter dataclass for `family` (FluxParams, ChromaParams), or None."""
    if family.startswith("flux2"):
        return features.flux_params_fields()
    if family == "chroma":
        from comfy.ldm.chroma.model import ChromaParams

        return frozenset(f.name for f in dataclasses.fields(ChromaParams))
    return None


def unet_config(family: str) -> dict:
    """TINY_CONFIGS[family] less the fields this host's parameter dataclass lacks (older FluxParams, ChromaParams)."""
    _check(family)
    config = copy.deepcopy(TINY_CONFIGS[family])
    fields = _params_fields(family)
    if fields is not None:
        config = {k: v for k, v in config.items() if k in fields or k == "image_model"}
    return config


def host_config(family: str):
    """The host's model-config object for `family`."""
    return getattr(comfy.supported_models, CONFIG_CLASSES[family])(unet_config(family))


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> comfy.model_patcher.ModelPatcher:
    """ModelPatcher around the host's BaseModel for tiny `family`, weights seeded random in `dtype`."""
    _check(family)
    missing = missing_host_class(family)
    if missing is not None:
        raise RuntimeError(f"this ComfyUI ({features.comfyui_version()}) has no {missing}: update it for {family}")
    model = demo_models.model_from_config(host_config(family), dtype)
    demo_models.init_random_(model.diffusion_model, seed)
    with torch.no_grad():  # learned pad tokens are plain parameters, drawn like weights; keep them of order 0.02
        for name, p in model.diffusion_model.named_parameters():
            if name.endswith("pad_token"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.02)
    return demo_models.patcher_of(model)


def state_dict(family: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The diffusion model's state dict in `dtype`, as a diffusion_models file holds it (see DETECTION)."""
    sd = build(family, seed).model.diffusion_model.state_dict()
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def detect(sd: dict[str, torch.Tensor]):
    """The host's model config for a diffusion-model state dict (comfy.model_detection, as the UNETLoader reads)."""
    import comfy.model_detection

    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} or sd
    return comfy.model_detection.model_config_from_unet(sd, "")


def detection_mismatch(family: str, sd: dict[str, torch.Tensor] | None = None) -> dict[str, tuple]:
    """{field: (detected, tiny)} where the host's detection of `family`'s state dict fixes a field otherwise than
    the tiny model has it (empty: the file loads as built). E.g. Chroma: the approximator's out_dim 3072."""
    config = detect(state_dict(family) if sd is None else sd)
    if config is None:
        return {"image_model": (None, TINY_CONFIGS[family]["image_model"])}
    detected, tiny = config.unet_config, unet_config(family)
    return {k: (detected.get(k), v) for k, v in tiny.items() if detected.get(k) != v}


def conditioning(family: str, seed: int = 0, scale: float = 1.0) -> list:
    """CONDITIONING `[[cross_attn (1, T, D), extras]]` with seeded random tensors for `family`."""
    _check(family)
    (tokens, dim), extras = CONDITIONING[family]
    g = torch.Generator().manual_seed(int(seed))
    return [[torch.randn((1, tokens, dim), generator=g) * scale, dict(extras)]]


def _kl_vae_state_dict(z_channels: int, batch_norm: bool, seed: int, decoder_ch: int) -> dict[str, torch.Tensor]:
    """A KL VAE as the host builds one: the encoder at ch 128, the decoder at `decoder_ch`. Flux.2's (batch_norm)
    has quant convolutions and the latent batch norm; the Flux VAE has neither."""
    dd = {**_KL, "z_channels": z_channels}
    dec = {**dd, "ch": decoder_ch}
    if batch_norm:
        dd["batch_norm_latent"] = True
        model = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dd, embed_dim=z_channels, decoder_ddconfig=dec)
    else:
        model = torch.nn.Module()
        model.encoder = comfy.ldm.modules.diffusionmodules.model.Encoder(**dd)
        model.decoder = comfy.ldm.modules.diffusionmodules.model.Decoder(**dec)
    demo_models.init_random_(model, seed, std=1.0, fan_in=True)
    if batch_norm:  # running statistics: a variance must be positive
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + 1)
            model.bn.running_mean.copy_(torch.randn(model.bn.running_mean.shape, generator=g) * 0.1)
            model.bn.running_var.copy_(1.0 + torch.rand(model.bn.running_var.shape, generator=g))
    return model.state_dict()


def vae_state_dict(family: str, seed: int = 0, decoder_ch: int = _KL_DECODER_CH) -> dict[str, torch.Tensor]:
    """The state dict of `family`'s tiny VAE, in the layout comfy.sd.VAE detects (`decoder_ch`: the KL decoder's
    width; the Wan VAE is tiny throughout)."""
    _check(family)
    kind = VAE_KINDS[family]
    if kind == "flux2":
        return _kl_vae_state_dict(32, True, seed, decoder_ch)
    if kind == "flux":
        return _kl_vae_state_dict(16, False, seed, decoder_ch)
    wan = comfy.ldm.wan.vae.WanVAE(**demo_models._WAN21_VAE)
    return demo_models.init_random_(wan, seed, std=1.0, fan_in=True).state_dict()


def tiny_vae(family: str, seed: int = 0) -> comfy.sd.VAE:
    """The host's VAE for `family`, built by comfy.sd.VAE from vae_state_dict(family). A host that reads no KL
    decoder width from the file (0.8.1 and older build the decoder at ch 128) gets a real-width decoder."""
    try:
        return comfy.sd.VAE(sd=vae_state_dict(family, seed))
    except RuntimeError:
        if VAE_KINDS[family] == "wan21":
            raise
    log.info("this ComfyUI builds KL VAE decoders at ch %d: the tiny %s VAE gets a real-width decoder", _KL["ch"],
             family)
    return comfy.sd.VAE(sd=vae_state_dict(family, seed, decoder_ch=_KL["ch"]))
