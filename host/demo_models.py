"""Deterministic random-weight tiny models of real architectures, built from the host's own classes, and demo files.

Every weight comes from a seeded `torch.Generator`, so nothing is downloaded and the same seed gives the same bytes.
The files `write_demo_models` writes load through the stock UNETLoader and VAELoader, which detect them as SD1.5,
SD3, Wan 2.1 T2V, TAESD (4 and 16 latent channels), the Wan 2.1 VAE, an SD1.5 ControlNet (ControlNetLoader) and an
SD1.5 LoRA (LoraLoader).
The weights are random: the models are for exercising samplers, patches and decoders end to end, not for making
pictures.

Self-contained on purpose (torch, safetensors, comfy and the sibling features.py only): `tools/demo_models.py`
loads this file by path, without importing the pack.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import comfy.cldm.cldm
import comfy.ldm.flux.model
import comfy.ldm.models.autoencoder
import comfy.ldm.modules.diffusionmodules.model
import comfy.ldm.wan.vae
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd1_clip
import comfy.supported_models
import comfy.taesd.taesd
import torch
from safetensors.torch import save

if __package__:
    from . import features
else:  # loaded by file path (tools/demo_models.py): features.py imports nothing of the pack either
    _spec = importlib.util.spec_from_file_location("_pyra_host_features", Path(__file__).with_name("features.py"))
    features = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(features)

_SD15_TINY = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
    "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

# family -> unet_config for the host's model-config class in _CONFIG_CLASSES.
TINY_CONFIGS: dict[str, dict] = {
    "sd15": _SD15_TINY,
    # The host detects SD1.5 from model_channels 320, context_dim 768 and a transformer in an input block
    # (comfy/supported_models.py SD15, comfy/model_detection.py detect_unet_config); attention only at level 2.
    "sd15_detectable": {
        **_SD15_TINY, "model_channels": 320, "channel_mult": [1, 1], "transformer_depth": [0, 1],
        "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": -1,
    },
    # An inpainting (edit) model: 4 latent + 1 mask + 4 masked-image channels concatenated (c_concat).
    "sd15_inpaint": {**_SD15_TINY, "in_channels": 9},
    # The SDXL config class forces num_head_channels 64.
    "sdxl": {
        **_SD15_TINY, "model_channels": 64, "use_linear_in_transformer": True, "context_dim": 2048,
        "adm_in_channels": 2816, "num_classes": "sequential",
    },
    # File detection reads depth = hidden // 64 and pos_embed_max_size = sqrt(num_patches).
    "sd3": {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
        "adm_in_channels": 2048, "num_patches": 64 * 64, "pos_embed_max_size": 64, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [], "qk_norm": None,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
    },
    # Not loadable from a file: detection hard-codes num_heads 24. sum(axes_dim) == hidden_size / num_heads.
    "flux": {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
        "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
        "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
    },
    # File detection sets num_heads = dim // 128, so dim must be a multiple of 128.
    "wan21": {
        "image_model": "wan2.1", "model_type": "t2v", "dim": 128, "out_dim": 16, "num_heads": 1, "ffn_dim": 256,
        "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16,
    },
}

_CONFIG_CLASSES = {
    "sd15": "SD15", "sd15_detectable": "SD15", "sd15_inpaint": "SD15", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux",
    "wan21": "WAN21_T2V",
}

# The Wan 2.1 VAE layout the host builds for any file with Wan 2.1 VAE keys (comfy/sd.py, "Wan 2.1 VAE"); only dim
# is read from the file.
_WAN21_VAE = {
    "dim": 16, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
}

# TAESD latent channels and the (vae_scale, vae_shift) the host's VAELoader gives the real taesd / taesd3 files.
_TAESD = {"taesd": (4, 0.18215, 0.0), "taesd3": (16, 1.5305, 0.0609)}

# key -> (models subfolder, file name, family: a TINY_CONFIGS key or a VAE kind)
_DEMO_SPECS: dict[str, tuple[str, str, str]] = {
    "sd15": ("diffusion_models", "pyra-demo-sd15.safetensors", "sd15_detectable"),
    "sd3": ("diffusion_models", "pyra-demo-sd3.safetensors", "sd3"),
    "wan21": ("diffusion_models", "pyra-demo-wan21.safetensors", "wan21"),
    "taesd": ("vae", "pyra-demo-taesd.safetensors", "taesd"),
    "taesd3": ("vae", "pyra-demo-taesd3.safetensors", "taesd3"),
    "wan21_vae": ("vae", "pyra-demo-wan21-vae.safetensors", "wan21_vae"),
    "sd15_controlnet": ("controlnet", "pyra-demo-sd15-controlnet.safetensors", "sd15_controlnet"),
    "sd15_lora": ("loras", "pyra-demo-sd15-lora.safetensors", "sd15_lora"),
}
DEMO_FILES: dict[str, tuple[str, str]] = {key: (sub, name) for key, (sub, name, _) in _DEMO_SPECS.items()}
DEMO_SEED = 0

# The KL VAE layout the host builds for every KL VAE file (comfy/sd.py: ch 128, four levels, two blocks each; the
# SD1.5, SDXL, SD3 and Flux VAEs), at its real size (83.7M parameters).
_KL_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
           "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}

# Real-format files: what users load with the stock CheckpointLoaderSimple and VAELoader, a real-size VAE each. The
# checkpoint holds a real-size KL VAE and CLIP-L text encoder (random weights; the tokenizer ships with the host)
# and the tiny detectable SD1.5 UNet; fp16, about 430 MB. The 16-channel VAE has no quant convolutions, as the SD3
# and Flux files (the host wraps it in an AutoencodingEngine); 160 MB. Written by tools/demo_models.py at host
# install beside DEMO_FILES, not by write_demo_models (tests write those to temp folders).
_REAL_FORMAT_SPECS: dict[str, tuple[str, str, str]] = {
    "sd15_checkpoint": ("checkpoints", "pyra-demo-sd15-checkpoint.safetensors", "sd15_checkpoint"),
    "kl16_vae": ("vae", "pyra-demo-kl16-vae.safetensors", "kl16_vae"),
}
REAL_FORMAT_FILES: dict[str, tuple[str, str]] = {key: (sub, name) for key, (sub, name, _) in _REAL_FORMAT_SPECS.items()}


def _is_norm(module: torch.nn.Module) -> bool:
    """Whether `module` is a normalisation layer (GroupNorm, LayerNorm, RMSNorm, Wan's RMS_norm, ...)."""
    return "norm" in type(module).__name__.lower()


def init_random_(module: torch.nn.Module, seed: int, std: float = 0.02, fan_in: bool = False) -> torch.nn.Module:
    """Seed every parameter and persistent float buffer in place: norms 1, biases 0, the rest N(0, std^2)."""
    # With fan_in, a weight (out, in, *k) gets std / sqrt(in * prod(k)): deep conv stacks without norms (TAESD) then
    # stay clear of both all-zero and saturated outputs. Draws are fp32 on the CPU in module order, so the values do
    # not depend on the module's device or dtype.
    g = torch.Generator().manual_seed(seed)
    persistent = set(module.state_dict().keys())
    with torch.no_grad():
        for prefix, mod in module.named_modules():
            norm = _is_norm(mod)
            for name, p in mod.named_parameters(recurse=False):
                if name == "bias":
                    p.zero_()
                elif norm:
                    p.fill_(1.0)
                else:
                    scale = std / (p[0].numel() ** 0.5) if fan_in and p.ndim >= 2 else std
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
            for name, b in mod.named_buffers(recurse=False):
                if b.is_floating_point() and f"{prefix}.{name}".lstrip(".") in persistent:
                    b.copy_(torch.randn(b.shape, generator=g) * std)
    return module


def _host_config(family: str):
    """The host's model-config class for TINY_CONFIGS[family], with what this host's model class requires added
    (features.flux_unet_config: FluxParams' `txt_ids_dims`, required from 0.8.1)."""
    unet_config = copy.deepcopy(TINY_CONFIGS[family])
    if unet_config.get("image_model") == "flux":
        unet_config = features.flux_unet_config(unet_config)
    return getattr(comfy.supported_models, _CONFIG_CLASSES[family])(unet_config)


def build_tiny_model(
    family: str, dtype: torch.dtype = torch.float32, seed: int = 0
) -> comfy.model_patcher.ModelPatcher:
    """ModelPatcher around the host's model for TINY_CONFIGS[family], weights in `dtype`, seeded random."""
    if family not in TINY_CONFIGS:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(TINY_CONFIGS)}")
    model = model_from_config(_host_config(family), dtype)
    init_random_(model.diffusion_model, seed)
    return patcher_of(model)


def model_from_config(config, dtype: torch.dtype = torch.float32):
    """The host's BaseModel of a model config object (supported_models class), weights in `dtype`, not yet drawn."""
    load_device = comfy.model_management.get_torch_device()
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, manual_cast)
    with features.materialised_weights():  # dynamic VRAM would build the layers without weights
        return config.get_model({})


def patcher_of(model) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher on the host's load and offload devices, as the stock loaders make one."""
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(),
                                            comfy.model_management.unet_offload_device())


def _taesd_state_dict(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """State dict of a seeded random TAESD with 4 (`taesd`) or 16 (`taesd3`) latent channels."""
    channels, scale, shift = _TAESD[kind]
    model = comfy.taesd.taesd.TAESD(latent_channels=channels)
    init_random_(model, seed, std=1.0, fan_in=True)
    with torch.no_grad():
        model.vae_scale.fill_(scale)
        model.vae_shift.fill_(shift)
    return model.state_dict()


def _controlnet_state_dict(family: str, seed: int) -> dict[str, torch.Tensor]:
    """A ControlNet for the tiny model `family` (RGB hint), as ControlNetLoader detects it from its keys."""
    config = _host_config(family)
    unet = {k: v for k, v in config.unet_config.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                     device="cpu", **unet)
    return init_random_(net, seed).state_dict()


def _lora_state_dict(family: str, seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    """A rank-`rank` LoRA in the host's `diffusion_model.<layer>.lora_up/lora_down/alpha` keys for the attention
    projections of tiny model `family`; each delta's Frobenius norm is about 30% of its weight's."""
    g = torch.Generator().manual_seed(seed + 1)
    sd = {}
    for name, w in build_tiny_model(family, seed=seed).model.diffusion_model.state_dict().items():
        if w.ndim != 2 or not any(p in name for p in (".to_q.", ".to_k.", ".to_v.", ".to_out.0.")):
            continue
        key = "diffusion_model." + name[: -len(".weight")]
        out_features, in_features = w.shape
        sd[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=g) * in_features**-0.5
        up_std = 0.3 * 0.02 * (in_features / rank) ** 0.5
        sd[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=g) * up_std
        sd[f"{key}.alpha"] = torch.tensor(float(rank))
    return sd


def _kl_vae_state_dict(z_channels: int, quant_convs: bool, seed: int) -> dict[str, torch.Tensor]:
    """A seeded random real-size KL VAE: AutoencoderKL keys (SD1.5/SDXL files) with `quant_convs`, else only the
    encoder and decoder (SD3/Flux files). Fan-in scaled, so every level's activations stay of order one."""
    dd = {**_KL_VAE, "z_channels": z_channels}
    if quant_convs:
        model = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dd, embed_dim=z_channels)
    else:
        model = torch.nn.Module()
        model.encoder = comfy.ldm.modules.diffusionmodules.model.Encoder(**dd)
        model.decoder = comfy.ldm.modules.diffusionmodules.model.Decoder(**dd)
    return init_random_(model, seed, std=1.0, fan_in=True).state_dict()


def _checkpoint_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """An SD1.5 checkpoint as the host saves one (CheckpointSave's key layout, through the model config's own
    process_*_for_saving): the detectable tiny UNet, a real-size CLIP-L and a real-size KL VAE."""
    patcher = build_tiny_model("sd15_detectable", torch.float16, seed)
    config = patcher.model.model_config
    clip = init_random_(comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32), seed + 1)
    sd = config.process_unet_state_dict_for_saving(patcher.model.diffusion_model.state_dict())
    sd.update(config.process_clip_state_dict_for_saving(clip.state_dict()))
    sd.update(config.process_vae_state_dict_for_saving(_kl_vae_state_dict(4, True, seed + 2)))
    return sd


def _demo_state_dict(family: str, seed: int) -> dict[str, torch.Tensor]:
    """fp16 state dict, in the layout the host's loaders detect, of demo family `family`."""
    if family in TINY_CONFIGS:
        sd = build_tiny_model(family, torch.float16, seed).model.diffusion_model.state_dict()
    elif family in _TAESD:
        sd = _taesd_state_dict(family, seed)
    elif family == "sd15_lora":
        sd = _lora_state_dict("sd15_detectable", seed)
    elif family == "sd15_controlnet":
        sd = _controlnet_state_dict("sd15_detectable", seed)
    elif family == "wan21_vae":
        sd = init_random_(comfy.ldm.wan.vae.WanVAE(**_WAN21_VAE), seed, std=1.0, fan_in=True).state_dict()
    elif family == "sd15_checkpoint":
        sd = _checkpoint_state_dict(seed)
    elif family == "kl16_vae":
        sd = _kl_vae_state_dict(16, False, seed)
    else:
        raise ValueError(f"unknown demo family {family!r}")
    return {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Safetensors file bytes with a key-sorted header (safetensors orders metadata by a per-process hash)."""
    raw = save(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + size :]


def write_demo_models(models_dir: Path, force: bool = False, real_format: bool = False) -> list[Path]:
    """Write every DEMO_FILES entry (and, with `real_format`, every REAL_FORMAT_FILES entry) under
    models_dir/<subfolder>/ (fp16, atomic); return the paths written."""
    written = []
    specs = list(_DEMO_SPECS.values()) + (list(_REAL_FORMAT_SPECS.values()) if real_format else [])
    for subfolder, name, family in specs:
        path = Path(models_dir) / subfolder / name
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"pyra_demo": "1", "family": family, "seed": str(DEMO_SEED)}
        data = _safetensors_bytes(_demo_state_dict(family, DEMO_SEED), metadata)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written.append(path)
    return written


# family -> (cross-attention shape without batch, extras with tensor shapes without batch)
DEMO_CONDITIONING: dict[str, tuple[tuple[int, int], dict]] = {
    "sd15": ((77, 768), {}),
    "sdxl": ((77, 2048), {"pooled_output": (1280,), "width": 1024, "height": 1024}),
    "sd3": ((77, 4096), {"pooled_output": (2048,)}),
    "flux": ((77, 4096), {"pooled_output": (768,), "guidance": 3.5}),
    "wan21": ((77, 4096), {}),
    "analytic": ((1, 8), {}),
    # The 2026 families with demo files (host/family_demo_files.py), as host.tiny_image_families and
    # host.tiny_video_families CONDITIONING give them: Flux.2 klein's Qwen3-4B text (3 x 2560, 512 tokens), umT5-XXL
    # for Wan 2.2, Qwen2.5-VL-7B for HunyuanVideo 1.5, and the tiny LTX-2's caption width (32; Gemma's is 3840).
    "flux2_klein": ((512, 7680), {"pooled_output": None}),
    "wan22": ((12, 4096), {}),
    "hunyuan_video15": ((12, 3584), {"pooled_output": None}),
    "ltx2": ((12, 32), {"frame_rate": 25}),
}

def demo_conditioning(family: str, seed: int = 0, scale: float = 1.0) -> list:
    """CONDITIONING `[[cross_attn (1, T, D), extras]]` with seeded random tensors for `family`."""
    if family not in DEMO_CONDITIONING:
        raise ValueError(f"unknown demo family {family!r}; choose one of {', '.join(DEMO_CONDITIONING)}")
    (tokens, dim), extras_spec = DEMO_CONDITIONING[family]
    g = torch.Generator().manual_seed(int(seed))
    cross = torch.randn((1, tokens, dim), generator=g) * scale
    extras = {}
    for key, spec in extras_spec.items():
        extras[key] = torch.randn((1, *spec), generator=g) * scale if isinstance(spec, tuple) else spec
    return [[cross, extras]]
