"""DFM checkpoints: one safetensors file with the per-level layers (`dfm.*`), an optional core LoRA in the
host's key layout (`diffusion_model.*.lora_up/down.weight`, `.alpha`) and JSON metadata: levels, family,
patch, the base model's fingerprint (a reference, not its weights), the training step."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..plain_load import load_plain, refuse_non_finite_tensors

FORMAT = "pyra-dfm/1"
PREFIX = "dfm."


class DFMCheckpointError(ValueError):
    """A file that is not a Pyra DFM checkpoint, or one made for another base model."""


def fingerprint(module: nn.Module) -> str:
    """Short hash of the base model's parameter names, shapes and a few values: which base a file belongs to."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(f"{name}{tuple(p.shape)}".encode())
        if p.is_floating_point() and p.numel():
            h.update(f"{float(p.flatten()[:: max(1, p.numel() // 7)].float().sum()):.4e}".encode())
    return h.hexdigest()[:16]


def save_dfm(path: str | Path, layers: nn.Module, meta: dict, lora: dict[str, Tensor] | None = None) -> Path:
    """Write atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {PREFIX + k: v.detach().float().cpu().contiguous() for k, v in layers.state_dict().items()}
    tensors.update(lora or {})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"pyra_dfm": json.dumps({"format": FORMAT, **meta})})
    os.replace(tmp, path)
    return path


def read_meta(path: str | Path) -> dict:
    """The JSON metadata of a DFM checkpoint (the header only: no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    name = Path(path).name
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("pyra_dfm")
    except (SafetensorError, OSError) as err:
        raise DFMCheckpointError(f"{name} is not a readable safetensors file ({err}): re-save or re-download it"
                                 ) from None
    if raw is None:
        raise DFMCheckpointError(f"{name} is not a Pyra DFM checkpoint (no 'pyra_dfm' metadata): make "
                                 "one with PyraDFMConvert + PyraDFMSave or PyraDFMTrain")
    try:
        meta = json.loads(raw)
        meta["levels"] = int(meta["levels"])
    except (ValueError, TypeError, KeyError):
        raise DFMCheckpointError(f"{name}: its 'pyra_dfm' metadata is damaged (not JSON with an integer 'levels'): "
                                 "re-save the model with PyraDFMSave") from None
    return meta


def load_dfm(path: str | Path) -> tuple[dict, dict[str, Tensor], dict[str, Tensor]]:
    """(metadata, per-level layer state dict, LoRA tensors) of a DFM checkpoint; NaN or inf values are refused."""
    meta = read_meta(path)
    tensors = load_file(str(path))
    refuse_non_finite_tensors(tensors, Path(path).name, DFMCheckpointError)
    layers = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    lora = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    return meta, layers, lora


def save_optimizer(path: str | Path, optimizer: torch.optim.Optimizer, step: int) -> None:
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, str(path))


def load_optimizer(path: str | Path) -> dict:
    state = load_plain(path, DFMCheckpointError)
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise DFMCheckpointError(f"{Path(path).name} is not a Pyra DFM optimizer state (no optimizer and step): "
                                 "turn resume off to start a new run")
    return state
