"""SaRA checkpoints (sjtuplayer/SaRA, ALGORITHMS.md 3) -> explicit sparse deltas, and diffusers' parameter order.

SaRA's `optimizer.save_params()` writes, with `torch.save`, a dict {'threshold': float, 0: values, 1: values, ...}:
integer key i = the i-th tensor of the diffusers `UNet2DConditionModel.parameters()` enumeration, values = the
final absolute weights (1-D) at the positions where the *base* weight satisfied |w| < threshold, in row-major
order (`p[mask]`). No indices are stored, so we rebuild the masks from the base weights in fp32 (section 3 f 5)
and store deltas = values - base[idx] with explicit indices (core/adapters/sparse.py).

The enumeration order is diffusers' module registration order, which differs from ComfyUI's ldm layout (diffusers
registers `up_blocks` before `mid_block` and a block's `attentions` before its `resnets`). `diffusers_order`
sorts diffusers parameter names into it; the host's `comfy.utils.unet_to_diffusers` maps them to ldm names.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..plain_load import load_plain, refuse_non_finite_tensors
from .lora_file import LoraFileError
from .sparse import SparseDelta, select_small

# Registration order of every child name in the SD-family UNet2DConditionModel and its blocks (diffusers
# unet_2d_condition.py, unet_2d_blocks.py, resnet.py, transformer_2d.py, attention.py, attention_processor.py).
# One list serves all levels: the orders it must respect (per parent) never conflict.
_REGISTRATION = (
    "conv_in", "time_embedding", "class_embedding", "add_embedding", "down_blocks", "up_blocks", "mid_block",
    "conv_norm_out", "conv_out",
    "attentions", "resnets", "downsamplers", "upsamplers",  # Cross-attn blocks: attentions before resnets
    "norm", "proj_in", "transformer_blocks", "proj_out",  # Transformer2DModel (continuous input)
    "norm1", "conv1", "attn1", "time_emb_proj", "norm2", "attn2", "conv2", "conv_shortcut", "norm3", "ff",
    "to_q", "to_k", "to_v", "to_out", "net", "proj", "linear_1", "linear_2", "conv",
    "weight", "bias",
)
_RANK = {name: i for i, name in enumerate(_REGISTRATION)}


def _sort_key(name: str) -> tuple:
    key = []
    for part in name.split("."):
        if part.isdigit():
            key.append((0, int(part)))
        elif part in _RANK:
            key.append((0, _RANK[part]))
        else:
            raise ValueError(f"{name}: {part!r} is not part of an SD-family diffusers UNet; SaRA checkpoints are only "
                             "supported for SD1.x / SD2.x / SDXL UNets")
    return tuple(key)


def diffusers_order(names: list[str]) -> list[str]:
    """Diffusers parameter names in `UNet2DConditionModel.parameters()` order."""
    return sorted(names, key=_sort_key)


def read_checkpoint(path: str | Path) -> tuple[float, dict[int, Tensor]]:
    """(threshold, {parameter index: values}) of a SaRA file, loaded with weights_only (no pickle code runs)."""
    path = Path(path)
    data = load_plain(path, LoraFileError)
    if not isinstance(data, dict) or "threshold" not in data:
        raise LoraFileError(f"{path.name} has no 'threshold' entry, so it is not a SaRA checkpoint "
                            "(optimizer.save_params() writes {'threshold': t, 0: values, 1: values, ...})")
    values = {k: v for k, v in data.items() if k != "threshold"}
    bad = [k for k, v in values.items() if not isinstance(k, int) or not isinstance(v, Tensor) or v.ndim != 1]
    if bad:
        raise LoraFileError(f"{path.name}: entry {bad[0]!r} is not 'integer index -> 1-D tensor' as SaRA writes")
    if not values:
        raise LoraFileError(f"{path.name} holds a threshold but no trained values, so its adapter would be empty: "
                            "use the file SaRA saved after training")
    refuse_non_finite_tensors({f"parameter {k}": v for k, v in values.items()}, path.name, LoraFileError)
    return float(data["threshold"]), values


def to_sparse(values: dict[int, Tensor], threshold: float, params: list[tuple[str, Tensor]],
              source: str = "checkpoint") -> dict[str, SparseDelta]:
    """Deltas per parameter name from SaRA values; `params` = (name, base weight) in enumeration order.

    The mask is recomputed in fp32 from the base weight; a count that differs from the stored values names the
    parameter (the base is not the one the checkpoint was trained on, or was loaded at a lower precision).
    """
    if values and max(values) >= len(params):
        raise LoraFileError(f"{source} has values for parameter {max(values)} but this model has {len(params)} "
                            "parameters: it was trained on another architecture")
    out = {}
    for i, vals in sorted(values.items()):
        name, base = params[i]
        idx = select_small(base, threshold)
        if idx.numel() != vals.numel():
            raise LoraFileError(f"{source}: {name} has {vals.numel()} values but |w| < {threshold} holds for "
                                f"{idx.numel()} entries of this model's weight: load the base model the adapter "
                                "was trained on, in fp32 (masks depend on exact fp32 values)")
        if idx.numel():
            delta = vals.float() - base.detach().float().flatten()[idx]
            out[name] = SparseDelta(idx, delta, tuple(base.shape))
    return out

