"""LoRA files: safe loading, grouping keys into modules, family guess, atomic saving.

A module `x` of a LoRA holds up (out, r[, 1, 1...]) and down (r, in[, kh, kw...]) factors and an optional
`x.alpha`; the host applies (alpha / r) * up.flatten(1) @ down.flatten(1), reshaped to the weight's shape
(alpha missing: scale 1). The factor names below are the ones the host's LoRA adapter reads
(comfy/weight_adapter/lora.py, LoRAAdapter.load). Files we write use `x.lora_up.weight`, `x.lora_down.weight`
and `x.alpha`, with x = "diffusion_model.<module path>", the key format of the host's own LoraSave, which the
host's key map reads for every model family.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..plain_load import load_plain, refuse_non_finite_tensors

# (up suffix, down suffix, mid suffix or None): the naming variants the host's LoRA adapter reads.
FACTOR_NAMES = (
    (".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),
    ("_lora.up.weight", "_lora.down.weight", None),
    (".lora_B.weight", ".lora_A.weight", None),
    (".lora.up.weight", ".lora.down.weight", None),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", None),
    (".lora_B.default.weight", ".lora_A.default.weight", None),
    (".lora_B", ".lora_A", None),
)
ADDITIVE_SUFFIXES = (".diff", ".diff_b")


class LoraFileError(ValueError):
    """A LoRA file that cannot be used; the message says what to do."""


@dataclass
class LoraModule:
    """One low-rank module: delta = scale * up.flatten(1) @ down.flatten(1), reshaped to `weight_shape`."""

    up: Tensor
    down: Tensor
    alpha: float | None = None
    dora_scale: Tensor | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.up.shape[0], *self.down.shape[1:])


@dataclass
class LoraFile:
    """A parsed LoRA: low-rank modules by base key, additive `.diff`/`.diff_b` tensors, and everything else."""

    modules: dict[str, LoraModule] = field(default_factory=dict)
    additive: dict[str, Tensor] = field(default_factory=dict)
    other: dict[str, Tensor] = field(default_factory=dict)


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors (or pickle-free torch) file; a corrupt or truncated file raises LoraFileError."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as err:
            raise LoraFileError(f"{path.name} is corrupt or truncated ({err}); re-download or re-export it") from err
    else:
        sd = load_plain(path, LoraFileError)
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise LoraFileError(f"{path.name} is not a flat dict of tensors, so it is no LoRA file")
    refuse_non_finite_tensors(sd, path.name, LoraFileError)
    return sd


def _split_module(key: str) -> tuple[str, int, str] | None:
    """(base, variant index, 'up'|'down'|'mid') if `key` is a factor key."""
    for i, names in enumerate(FACTOR_NAMES):
        for role, suffix in zip(("up", "down", "mid"), names, strict=True):
            if suffix and key.endswith(suffix):
                return key[: -len(suffix)], i, role
    return None


def parse_lora(sd: dict[str, Tensor]) -> LoraFile:
    """Group a LoRA state dict into modules; shape mismatches and unsupported factors name the key."""
    out, factors = LoraFile(), {}
    for key, tensor in sd.items():
        split = _split_module(key)
        if split is not None:
            factors.setdefault(split[0], {})[split[2]] = (split[1], key, tensor)
    used = set()
    for base, parts in factors.items():
        if "up" not in parts or "down" not in parts:
            raise LoraFileError(f"{base}: has an {'up' if 'up' in parts else 'down'} factor but not its partner")
        if "mid" in parts:
            raise LoraFileError(f"{parts['mid'][1]}: LoCon/Tucker mid factors are not supported")
        up, down = parts["up"][2], parts["down"][2]
        if up.ndim < 2 or down.ndim < 2 or up.shape[1] != down.shape[0]:
            raise LoraFileError(f"{base}: up {tuple(up.shape)} and down {tuple(down.shape)} do not multiply")
        alpha = sd.get(f"{base}.alpha")
        dora = sd.get(f"{base}.dora_scale")
        out.modules[base] = LoraModule(up, down, None if alpha is None else float(alpha), dora)
        used.update({parts["up"][1], parts["down"][1], f"{base}.alpha", f"{base}.dora_scale"})
    for key, tensor in sd.items():
        if key in used:
            continue
        if key.endswith(ADDITIVE_SUFFIXES):
            out.additive[key] = tensor
        else:
            out.other[key] = tensor
    return out


def module_tensors(base: str, up: Tensor, down: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
    """Standard keys for one module, alpha = rank (so the host's alpha / rank scale is 1)."""
    return {
        f"{base}.lora_up.weight": up.to(dtype).contiguous().cpu(),
        f"{base}.lora_down.weight": down.to(dtype).contiguous().cpu(),
        f"{base}.alpha": torch.tensor(float(down.shape[0])),
    }


def save_lora(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> int:
    """Write atomically (temp file, then rename); returns the file size in bytes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


# Family fingerprints on module paths (any key naming: dots or underscores), most specific first: Flux.2,
# Chroma and HunyuanVideo share Flux's double_blocks; Qwen-Image and LTX share diffusers' transformer_blocks.
_FAMILY_PATTERNS = (
    ("LTX-2", r"audio_(attn1|attn2|ff|scale_shift_table|patchify_proj|caption_projection)|"
              r"(audio_to_video|video_to_audio)_attn"),
    ("Flux.2", r"(double_stream|single_stream)_modulation"),
    ("Chroma", r"distilled_guidance_layer"),
    ("HunyuanVideo", r"individual_token_refiner|double_blocks\.\d+\.(img|txt)_attn_(qkv|proj)|"
                     r"double_blocks\.\d+\.(img|txt)_mod\.linear"),
    ("Flux", r"(double_blocks|single_blocks)[._]\d+"),
    ("SD3", r"joint_blocks[._]\d+"),
    ("Qwen-Image", r"transformer_blocks[._]\d+[._](img_mlp|txt_mlp|img_mod|txt_mod)"),
    ("Z-Image (Lumina 2)", r"(noise_refiner|context_refiner)[._]\d+|layers[._]\d+[._](attention[._]qkv|feed_forward)"),
    ("Wan", r"blocks[._]\d+[._](self_attn|cross_attn|ffn)"),
    ("SD1.x/SDXL UNet", r"(input_blocks|output_blocks|middle_block|down_blocks|up_blocks|mid_block)"),
    ("LTX-Video", r"transformer_blocks[._]\d+[._](attn1|attn2)|scale_shift_table|adaln_single"),
    ("text encoder", r"(lora_te\d?_|text_model|text_encoders)"),
)


def guess_family(sd: dict[str, Tensor]) -> str:
    """Which model family a LoRA's keys look made for ("unknown" if none fits)."""
    keys = " ".join(sd)
    for name, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, keys):
            if name.startswith("SD1.x"):
                return _sd_unet_flavour(sd)
            return name
    return "unknown"


def _sd_unet_flavour(sd: dict[str, Tensor]) -> str:
    """SD1.x / SD2.x / SDXL from the cross-attention key projection's context width (768 / 1024 / 2048)."""
    for key, tensor in sd.items():
        split = _split_module(key)
        if split and split[2] == "down" and re.search(r"attn2[._]to_k", split[0]) and tensor.ndim >= 2:
            return {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}.get(tensor.shape[1], "an SD-style UNet")
    return "an SD-style UNet"
