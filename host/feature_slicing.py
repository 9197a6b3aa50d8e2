"""Feature slicing of a ModelPatcher's diffusion model as per-clone object patches, and its report.

Wan attention blocks of the host's own classes get Operator Grouping (core/slicing/wan_grouping.py: the whole
block runs in token slices around one attention over all tokens); every other transformer block gets its
feed-forward network run in token slices (core/slicing/tokens.py).

The patches are object patches of the blocks themselves, so block-replace patches (transformer_options
["patches_replace"]["dit"]) of other nodes still wrap them: their `original_block` calls the grouped twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import comfy.ldm.wan.model as wan

from ..core.slicing.tokens import token_sliced
from ..core.slicing.wan_grouping import grouped_block
from . import multigpu

# Attribute names of token-wise feed-forward modules inside transformer blocks: UNet BasicTransformerBlock.ff,
# SD3 DismantledBlock.mlp, Flux DoubleStreamBlock.img_mlp / txt_mlp, Wan WanAttentionBlock.ffn, Z-Image (Lumina 2)
# JointTransformerBlock.feed_forward (its main layers and both refiners).
FFN_NAMES = ("ff", "mlp", "img_mlp", "txt_mlp", "ffn", "feed_forward")
BLOCK_LISTS = ("input_blocks", "middle_block", "output_blocks", "joint_blocks", "double_blocks", "blocks",
               "transformer_blocks", "layers", "noise_refiner", "context_refiner")
_CROSS_ATTENTION = (wan.WanT2VCrossAttention, wan.WanI2VCrossAttention)


@dataclass
class SlicingReport:
    slice_tokens: int
    grouped: list[str] = field(default_factory=list)  # whole blocks (Operator Grouping)
    ffn_sliced: list[str] = field(default_factory=list)  # feed-forward modules only

    def summary(self) -> str:
        parts = []
        if self.grouped:
            parts.append(f"{len(self.grouped)} Wan blocks grouped (norms, q/k/v + RoPE, o-projection, "
                         "cross-attention and FFN in token slices, one attention over all tokens)")
        if self.ffn_sliced:
            parts.append(f"{len(self.ffn_sliced)} feed-forward modules sliced")
        return f"Pyra feature slicing, {self.slice_tokens}-token slices: " + "; ".join(parts)


def _host_attention(*args, **kwargs):
    return wan.optimized_attention(*args, **kwargs)


def groupable(block) -> bool:
    """A Wan block of exactly the host's classes (subclasses such as VACE or S2V blocks have other forwards)."""
    return (type(block) is wan.WanAttentionBlock and type(block.self_attn) is wan.WanSelfAttention
            and type(block.cross_attn) in _CROSS_ATTENTION)


def feed_forward_paths(diffusion_model) -> list[str]:
    """Dotted paths of the token-wise feed-forward modules inside the model's transformer blocks."""
    paths = []
    for name, module in diffusion_model.named_modules():
        parts = name.split(".")
        if parts[-1] in FFN_NAMES and parts[0] in BLOCK_LISTS and any(True for _ in module.parameters()):
            paths.append(name)
    return paths


def slice_features(model, slice_tokens: int):
    """A clone of `model` whose transformer blocks run over `slice_tokens`-token slices, and what was patched."""
    dm = model.get_model_object("diffusion_model")
    report = SlicingReport(int(slice_tokens))
    grouped = {f"blocks.{i}": b for i, b in enumerate(getattr(dm, "blocks", ())) if groupable(b)}
    report.grouped = list(grouped)
    report.ffn_sliced = [p for p in feed_forward_paths(dm) if p.rsplit(".", 1)[0] not in grouped]
    if not report.grouped and not report.ffn_sliced:
        raise ValueError(f"no transformer feed-forward modules found in {type(dm).__name__}: feature slicing "
                         "needs blocks with a feed-forward network of the host's classes (SD1.5, SDXL, SD3, Flux, "
                         "Chroma, Qwen-Image, Z-Image, Wan); leave this node out for this model")
    clone = model.clone()
    multigpu.guard(clone, "PyraFeatureSlicing")
    for path, block in grouped.items():
        twin = grouped_block(block, slice_tokens, _host_attention, wan.apply_rope1)
        clone.add_object_patch(f"diffusion_model.{path}", twin)
    for path in report.ffn_sliced:
        clone.add_object_patch(f"diffusion_model.{path}", token_sliced(dm.get_submodule(path), slice_tokens))
    return clone, report
