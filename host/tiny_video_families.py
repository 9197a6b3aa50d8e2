"""Tiny random-weight video models of the 2026 families, built from the host's own classes (issue 18, first slice).

Families (`FAMILIES`): Wan 2.2 TI2V-5B, Wan 2.2 A14B as two experts (high noise, low noise), HunyuanVideo 1.5,
LTX-Video (LTXV) and LTX-2 (LTXAV). Each goes through the host's model-config class (comfy/supported_models.py) and
so its BaseModel, latent format and model sampling, at 1-2 blocks and a small hidden size, with seeded weights
(host/demo_models.init_random_). `state_dict` gives the file layout the host's detection reads; `file_metadata` the
safetensors metadata the file needs where the host reads the size from there (LTX-2). `tiny_vae` builds the
family's VAE through `comfy.sd.VAE(sd=...)`.

Only on hosts that have these families (0.33.0): `missing_host_classes` names what a host lacks.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch

from .demo_models import init_random_, model_from_config, patcher_of

_WAN = {
    "image_model": "wan2.1", "model_type": "t2v", "dim": 128, "num_heads": 1, "ffn_dim": 256, "num_layers": 2,
    "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True,
    "eps": 1e-6,
}

# family -> (host config class, tiny unet_config). Sizes the host's detection reads back exactly (see
# `state_dict`): Wan and HunyuanVideo set num_heads = hidden // 128 (comfy/model_detection.py), so hidden is 128.
TINY_VIDEO_CONFIGS: dict[str, tuple[str, dict]] = {
    # TI2V-5B: 48-channel Wan 2.2 latent in and out (real: dim 3072, 30 layers, ffn 14336).
    "wan22_ti2v_5b": ("WAN22_T2V", {**_WAN, "in_dim": 48, "out_dim": 48}),
    # A14B: two Wan 2.1-architecture experts with the Wan 2.1 latent (real: dim 5120, 40 layers, ffn 13824); the
    # host has no separate config class for them, each file loads as WAN21_T2V.
    "wan22_a14b_high": ("WAN21_T2V", {**_WAN, "in_dim": 16, "out_dim": 16}),
    "wan22_a14b_low": ("WAN21_T2V", {**_WAN, "in_dim": 16, "out_dim": 16}),
    # 65 = 32 noise + 32 image + 1 mask channels (concat_cond); double-stream blocks only, as the real model
    # (real: hidden 2048, 16 heads, 54 double blocks). byt5 off: its mapper is 1472 -> 2048 -> 2048 wide.
    "hunyuan_video15": ("HunyuanVideo15", {
        "image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32, "vec_in_dim": None,
        "context_in_dim": 3584, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 2,
        "depth_single_blocks": 0, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 1, 1], "qkv_bias": True,
        "guidance_embed": False, "byt5": False, "meanflow": False, "use_cond_type_embedding": True,
        "vision_in_dim": 1152, "meanflow_sum": True,
    }),
    # Detection fixes 32 heads and the caption width 4096 (the class defaults), so the tiny model has 32 heads of 2.
    "ltxv": ("LTXV", {
        "image_model": "ltxv", "num_layers": 2, "attention_head_dim": 2, "cross_attention_dim": 64,
        "use_keyframes_abs_pos_embedding": False,
    }),
    # LTX-2: video and audio streams; the text connectors' width must equal caption_channels.
    "ltx2": ("LTXAV", {
        "image_model": "ltxav", "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 32,
        "cross_attention_dim": 64, "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,
        "audio_cross_attention_dim": 32, "caption_channels": 32, "connector_num_attention_heads": 2,
        "connector_attention_head_dim": 16, "connector_num_layers": 1, "use_keyframes_abs_pos_embedding": False,
    }),
}
FAMILIES = tuple(TINY_VIDEO_CONFIGS)

# What each family needs of the host, as "module:attribute[.attribute]" (a dataclass field counts as an attribute),
# probed by `missing_host_classes`. The tiny configs are 0.33.0's: HunyuanVideo 1.5 needs the `meanflow_sum`
# parameter, LTX-2 its text connectors inside the diffusion model (older hosts run them in the text encoder).
_HOST_CLASSES = {
    "wan22_ti2v_5b": ("comfy.supported_models:WAN22_T2V", "comfy.ldm.wan.vae2_2:WanVAE"),
    "wan22_a14b_high": ("comfy.supported_models:WAN21_T2V", "comfy.ldm.wan.vae:WanVAE"),
    "wan22_a14b_low": ("comfy.supported_models:WAN21_T2V", "comfy.ldm.wan.vae:WanVAE"),
    "hunyuan_video15": ("comfy.supported_models:HunyuanVideo15", "comfy.ldm.hunyuan_video.vae_refiner:Encoder",
                        "comfy.ldm.hunyuan_video.model:HunyuanVideoParams.meanflow_sum"),
    "ltxv": ("comfy.supported_models:LTXV", "comfy.ldm.lightricks.vae.causal_video_autoencoder:VideoVAE"),
    "ltx2": ("comfy.supported_models:LTXAV", "comfy.ldm.lightricks.av_model:LTXAVModel.preprocess_text_embeds"),
}

# family -> (latent channels, temporal compression, spatial compression) of the family's VAE and latent format
LATENT = {
    "wan22_ti2v_5b": (48, 4, 16), "wan22_a14b_high": (16, 4, 8), "wan22_a14b_low": (16, 4, 8),
    "hunyuan_video15": (32, 4, 16), "ltxv": (128, 8, 32), "ltx2": (128, 8, 32),
}

# family -> (text tokens, text width, extras); widths are the real text encoders' (umT5-XXL 4096, Qwen2.5-VL-7B
# 3584, T5-XXL 4096) except LTX-2's, whose Gemma width (3840) is the tiny caption_channels here.
_CONDITIONING = {
    "wan22_ti2v_5b": (12, 4096, {}),
    "wan22_a14b_high": (12, 4096, {}),
    "wan22_a14b_low": (12, 4096, {}),
    # The stock encoder gives pooled_output None (no vector input); HunyuanVideo.encode_adm reads the key.
    "hunyuan_video15": (12, 3584, {"pooled_output": None}),
    # LTXV's forward takes the text attention mask positionally; its T5 encoder returns one.
    "ltxv": (12, 4096, {"frame_rate": 25, "attention_mask": (12,)}),
    "ltx2": (12, 32, {"frame_rate": 25}),
}

# A14B experts: the same architecture, different weights.
_SEED_OFFSET = {"wan22_a14b_high": 0, "wan22_a14b_low": 7919}


def missing_host_classes(family: str) -> list[str]:
    """The host classes `family` needs that this host lacks ("module:attribute"); empty when it has them all."""
    return [spec for spec in _HOST_CLASSES[_check(family)] if not _host_has(spec)]


def _host_has(spec: str) -> bool:
    module, path = spec.split(":")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    for name in path.split("."):
        if hasattr(obj, name):
            obj = getattr(obj, name)
        elif name in getattr(obj, "__dataclass_fields__", {}):
            obj = None
        else:
            return False
    return True


def _check(family: str) -> str:
    if family not in TINY_VIDEO_CONFIGS:
        raise ValueError(f"unknown tiny video family {family!r}; choose one of {', '.join(FAMILIES)}")
    return family


def config_class(family: str) -> type:
    """The host's model-config class of `family`."""
    return getattr(comfy.supported_models, TINY_VIDEO_CONFIGS[_check(family)][0])


def unet_config(family: str) -> dict:
    """A copy of the tiny unet_config of `family`."""
    return copy.deepcopy(TINY_VIDEO_CONFIGS[_check(family)][1])


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> comfy.model_patcher.ModelPatcher:
    """ModelPatcher around the host's BaseModel for `family`, built through its config class, seeded weights."""
    model = model_from_config(config_class(family)(unet_config(family)), dtype)
    # Unit-gain (fan-in scaled) weights: with demo_models' fixed std 0.02 the text path of LTX-2 (connector, caption
    # projection, cross-attention: six linears) shrinks the conditioning's effect below float precision.
    init_random_(model.diffusion_model, seed + _SEED_OFFSET.get(family, 0), std=1.0, fan_in=True)
    return patcher_of(model)


def state_dict(family: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The diffusion model's weights in the layout of a diffusion_models/ file (no prefix), in `dtype`."""
    sd = build(family, seed).model.diffusion_model.state_dict()
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def file_metadata(family: str) -> dict[str, str] | None:
    """Safetensors metadata the file of `family` needs for the host to detect its size, else None.

    LTX: detection reads only the block count, attention width and cross-attention width from the weights and
    takes the rest from the file's `config` metadata (comfy/model_detection.py, the Lightricks branch), as the
    real LTX-2 files carry it. The tiny LTXV has the class defaults detection assumes and needs none."""
    if _check(family) != "ltx2":
        return None
    transformer = {k: v for k, v in unet_config(family).items() if k != "image_model"}
    return {"config": json.dumps({"transformer": transformer})}


def detect(family: str, seed: int = 0) -> comfy.model_patcher.ModelPatcher | None:
    """What the host's UNETLoader path makes of the file of `family`: comfy.sd.load_diffusion_model_state_dict."""
    return comfy.sd.load_diffusion_model_state_dict(state_dict(family, seed), metadata=file_metadata(family))


def conditioning(family: str, seed: int = 0, scale: float = 1.0) -> list:
    """CONDITIONING `[[cross_attn (1, T, D), extras]]` with seeded random text features for `family`."""
    tokens, width, spec = _CONDITIONING[_check(family)]
    g = torch.Generator().manual_seed(int(seed))
    cross = torch.randn((1, tokens, width), generator=g) * scale
    extras = {k: (torch.ones((1, *v), dtype=torch.long) if isinstance(v, tuple) else v) for k, v in spec.items()}
    return [[cross, extras]]


def latent_shape(family: str, frames: int = 2, height: int = 4, width: int = 4, batch: int = 1) -> tuple:
    """(B, C, T, H, W) of a video latent of `family` with T latent frames of H x W."""
    return (batch, LATENT[_check(family)][0], frames, height, width)


def pixel_frames(family: str, latent_frames: int) -> int:
    """Frames a VAE of `family` decodes from `latent_frames` (causal: the first latent frame is one frame)."""
    return 1 + (latent_frames - 1) * LATENT[_check(family)][1]


# --- Wan 2.2 A14B: the official expert switch ---------------------------------------------------------------------

# The host's Wan 2.2 A14B workflows (blueprints "Text to Video (Wan 2.2)" / "Image to Video (Wan 2.2)" and the
# templates video_wan2_2_14B_t2v / _i2v) load the two experts with two UNETLoaders, give both ModelSamplingSD3
# shift 5, and run two KSamplerAdvanced over one schedule: the high-noise expert steps [0, split) with noise added
# and the leftover noise returned, the low-noise expert steps [split, steps) without new noise. split = steps / 2
# (20 steps split 10, cfg 3.5; or 4 steps split 2, cfg 1 with the lightx2v LoRAs). The switch is a step index, not
# a sigma; no host node switches experts at a sigma.
A14B_SHIFT = 5.0
A14B_STEPS, A14B_SPLIT = 20, 10


def switch_sigma(patcher, steps: int = A14B_STEPS, split: int = A14B_SPLIT, scheduler: str = "simple") -> float:
    """The sigma at which the workflows hand over from the high- to the low-noise expert: sigmas[split] of the
    schedule `scheduler` over `steps` under `patcher`'s model sampling (the last high step ends there)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), scheduler, steps)
    return float(sigmas[split])


def with_shift(patcher, shift: float = A14B_SHIFT):
    """A clone with the model sampling the A14B workflows set (ModelSamplingSD3 node, `shift`)."""
    import comfy_extras.nodes_model_advanced as advanced

    return advanced.ModelSamplingSD3().patch(patcher, shift)[0]


def sample_two_experts(high, low, noise: torch.Tensor, positive, negative, cfg: float = 1.0,
                       steps: int = A14B_STEPS, split: int = A14B_SPLIT, sampler: str = "euler",
                       scheduler: str = "simple", seed: int = 0) -> torch.Tensor:
    """The two KSamplerAdvanced of the official workflow as comfy.sample.sample calls: `high` for steps
    [0, split) from noise, leftover noise kept; then `low` for [split, steps) on that latent, no new noise."""
    import comfy.sample

    latent = torch.zeros_like(noise)
    x = comfy.sample.sample(high, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                            start_step=0, last_step=split, force_full_denoise=False, disable_pbar=True, seed=seed)
    return comfy.sample.sample(low, torch.zeros_like(noise), steps, cfg, sampler, scheduler, positive, negative, x,
                               start_step=split, last_step=10000, force_full_denoise=False, disable_pbar=True,
                               seed=seed)


# --- VAEs -----------------------------------------------------------------------------------------------------------

# comfy/sd.py builds the Wan 2.2 VAE at dim 160 and the HunyuanVideo 1.5 VAE at block_out_channels
# [128, 256, 512, 1024, 1024] whatever the file holds (705M and 1.26B parameters): no tiny file loads. `tiny_vae`
# runs the host's own branch of comfy.sd.VAE on a tiny state dict while the family's class, for that one call, is
# built narrower (`_narrowed`); the instance is of the host's class and keeps its compression.
_WAN22_VAE_TINY = {"dim": 16, "dec_dim": 32}
_WAN22_VAE = {"z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}
_WAN21_VAE = {"dim": 16, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}
_HV15_VAE_TINY = {"block_out_channels": [32, 32, 64, 64, 64]}
_HV15_VAE = {"in_channels": 3, "out_channels": 3, "num_res_blocks": 2, "ffactor_spatial": 16, "ffactor_temporal": 4,
             "downsample_match_channel": True, "upsample_match_channel": True, "z_channels": 32}
# LTX video VAE: the host takes the layout from the file's `config` metadata (sd.py, "lightricks ltxv"); this is
# the LTX-2 (version 2) layout with 8 base channels and one layer per stage. Timestep conditioning off: the host's
# decode would add unseeded noise.
_LTX_VAE = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128,
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 1}]],
    "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}],
                       ["compress_all", {"residual": True, "multiplier": 2}],
                       ["res_x", {"num_layers": 1, "inject_noise": False}]],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
    "encoder_base_channels": 8, "decoder_base_channels": 8,
}


@contextlib.contextmanager
def _narrowed(module_name: str, attr: str, overrides: dict):
    """Within the block, `module.attr(**kw)` builds `module.attr(**{**kw, **overrides})` (the same class)."""
    module = importlib.import_module(module_name)
    original = getattr(module, attr)

    def narrow(*args, **kwargs):
        return original(*args, **{**kwargs, **overrides})

    setattr(module, attr, narrow)
    try:
        yield
    finally:
        setattr(module, attr, original)


def _vae_state_dict(family: str, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    if family == "wan22_ti2v_5b":
        import comfy.ldm.wan.vae2_2

        model = comfy.ldm.wan.vae2_2.WanVAE(**_WAN22_VAE, **_WAN22_VAE_TINY)
        return init_random_(model, seed, std=1.0, fan_in=True).state_dict(), None
    if family in ("wan22_a14b_high", "wan22_a14b_low"):
        import comfy.ldm.wan.vae

        return init_random_(comfy.ldm.wan.vae.WanVAE(**_WAN21_VAE), seed, std=1.0, fan_in=True).state_dict(), None
    if family == "hunyuan_video15":
        import comfy.ldm.hunyuan_video.vae_refiner as refiner

        model = torch.nn.Module()
        model.encoder = refiner.Encoder(**_HV15_VAE, **_HV15_VAE_TINY)
        model.decoder = refiner.Decoder(**_HV15_VAE, **_HV15_VAE_TINY)
        return init_random_(model, seed, std=1.0, fan_in=True).state_dict(), None
    return _ltx_vae_file(_LTX_VAE, seed)


def _ltx_vae_file(config: dict, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import comfy.ldm.lightricks.vae.causal_video_autoencoder as ltx_vae

    model = init_random_(ltx_vae.VideoVAE(config=copy.deepcopy(config)), seed, std=1.0, fan_in=True)
    stats = model.per_channel_statistics
    with torch.no_grad():  # identity latent normalisation; the host's timestep scale
        for name, buf in stats.named_buffers():
            buf.fill_(1.0 if "std" in name else 0.0)
        if config.get("timestep_conditioning"):
            model.decoder.timestep_scale_multiplier.fill_(1000.0)
    return model.state_dict(), {"config": json.dumps({"vae": config})}


LTX2_VAE_CLASS = "comfy.ldm.lightricks.vae.causal_video_autoencoder:SpaceToDepthDownsample"   # LTX-2's layout


def has_ltx2_vae() -> bool:
    """Whether this host's LTX video VAE builds the LTX-2 layout (0.8.1 and later; the LTX-2 model needs 0.33.0)."""
    return _host_has(LTX2_VAE_CLASS)


def ltx_vae(seed: int = 0, inject_noise: bool = False, **changes) -> comfy.sd.VAE:
    """The tiny LTX video VAE with entries of its config changed, loaded as a file with that config metadata:
    timestep_conditioning=True is LTX-2's decoder (the host's decode then mixes unseeded noise into the latent);
    inject_noise=True adds spatial noise in every decoder res_x stage, as LTXV 0.9.1's decoder does."""
    config = {**copy.deepcopy(_LTX_VAE), **changes}
    if inject_noise:
        config["decoder_blocks"] = [[name, {**params, "inject_noise": True}] if name == "res_x" else [name, params]
                                    for name, params in config["decoder_blocks"]]
    sd, metadata = _ltx_vae_file(config, seed)
    return comfy.sd.VAE(sd=sd, metadata=metadata)


def vae_file(family: str, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """(state dict, safetensors metadata or None) of a VAE file of `family` (LTX: its `config` metadata)."""
    return _vae_state_dict(_check(family), seed)


def vae_state_dict(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny VAE of `family` in a VAE file's layout (what comfy.sd.VAE(sd=...) reads)."""
    return _vae_state_dict(_check(family), seed)[0]


def tiny_vae(family: str, seed: int = 0) -> comfy.sd.VAE:
    """The host's comfy.sd.VAE of `family`, tiny, seeded: Wan 2.2 VAE (TI2V-5B), Wan 2.1 VAE (A14B), the
    HunyuanVideo 1.5 VAE (narrowed, see above) and the LTX video VAE (size from the file's config metadata)."""
    sd, metadata = _vae_state_dict(_check(family), seed)
    if family == "wan22_ti2v_5b":
        with _narrowed("comfy.ldm.wan.vae2_2", "WanVAE", _WAN22_VAE_TINY):
            return comfy.sd.VAE(sd=sd)
    if family == "hunyuan_video15":
        module = "comfy.ldm.hunyuan_video.vae_refiner"
        with _narrowed(module, "Encoder", _HV15_VAE_TINY), _narrowed(module, "Decoder", _HV15_VAE_TINY):
            return comfy.sd.VAE(sd=sd)
    return comfy.sd.VAE(sd=sd, metadata=metadata)


def lora_key_map(patcher) -> dict[str, str]:
    """The host's LoRA key map of a built model: comfy.lora.model_lora_keys_unet."""
    import comfy.lora

    return comfy.lora.model_lora_keys_unet(patcher.model, {})
