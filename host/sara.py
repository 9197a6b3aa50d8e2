"""SaRA checkpoints of the host's UNet models: the base model's parameters in diffusers order (SaRA's index
space), and a SaRA file converted into a sparse adapter of the model's own keys."""

from __future__ import annotations

from pathlib import Path

import comfy.utils
import folder_paths
import torch

from ..core.adapters import sara, sparse
from ..core.adapters.lora_file import LoraFileError
from . import lora

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

def base_parameters(model) -> list[tuple[str, torch.Tensor]]:
    """(ldm name, unpatched fp32 weight) of the model's UNet in diffusers' parameters() order."""
    mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)  # diffusers -> ldm
    if not mapping:
        raise LoraFileError(f"SaRA checkpoints index a diffusers UNet's parameters; this {type(model.model).__name__} "
                            "model has no UNet layout: connect an SD1.x / SD2.x / SDXL model")
    raw = model.get_key_patches(lora.PREFIX)
    by_ldm = {}
    for name in sara.diffusers_order([d for d, ldm in mapping.items() if lora.PREFIX + ldm in raw]):
        by_ldm.setdefault(lora.PREFIX + mapping[name], name)  # SDXL: add_embedding and class_embedding alias
    if len(by_ldm) != len(raw):
        raise LoraFileError(f"only {len(by_ldm)} of the model's {len(raw)} UNet tensors have diffusers names, so "
                            "SaRA's parameter indices cannot be resolved for this model")
    out = []
    for key in by_ldm:  # inserted in diffusers order
        weight, convert = raw[key][0]
        out.append((key, convert(weight.float(), inplace=False)))
    return out

def convert(model, path: str, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], float, int]:
    """Tensors of our format, SaRA's threshold and the number of adapted parameters."""
    threshold, values = sara.read_checkpoint(path)
    deltas = sara.to_sparse(values, threshold, base_parameters(model), source=Path(path).name)
    if not deltas:
        raise LoraFileError(f"{Path(path).name}: its values select no entry of this model's weights (|w| < "
                            f"{threshold}), so the adapter would be empty: load the base model it was trained on")
    tensors = {}
    for key, delta in deltas.items():
        tensors.update(sparse.to_tensors(sparse.module_key(key), delta, dtype))
    return tensors, threshold, len(deltas)


def sara_files() -> list[str]:
    """The SaRA checkpoints (.pt/.pth/.bin/.ckpt) in the loras folders."""
    return [n for n in folder_paths.get_filename_list("loras") if n.lower().endswith(PICKLE_SUFFIXES)]


def sara_path(name: str) -> str:
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        raise LoraFileError(f"{name!r} is not in the loras folders: refresh the node list")
    return path
