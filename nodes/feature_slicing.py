"""Feature slicing for the diffusion model: the blocks' token-wise feed-forward networks run in token slices."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..core.slicing import token_sliced

log = logging.getLogger("pyra")

# Attribute names of token-wise feed-forward modules inside transformer blocks: UNet BasicTransformerBlock.ff,
# SD3 DismantledBlock.mlp, Flux DoubleStreamBlock.img_mlp / txt_mlp, Wan WanAttentionBlock.ffn.
FFN_NAMES = ("ff", "mlp", "img_mlp", "txt_mlp", "ffn")
BLOCK_LISTS = ("input_blocks", "middle_block", "output_blocks", "joint_blocks", "double_blocks", "blocks",
               "transformer_blocks")


def feed_forward_paths(diffusion_model) -> list[str]:
    """Dotted paths of the token-wise feed-forward modules inside the model's transformer blocks."""
    paths = []
    for name, module in diffusion_model.named_modules():
        parts = name.split(".")
        if parts[-1] in FFN_NAMES and parts[0] in BLOCK_LISTS and any(True for _ in module.parameters()):
            paths.append(name)
    return paths


def slice_features(model, slice_tokens: int):
    """A clone of `model` whose blocks' feed-forward networks run over `slice_tokens`-token slices."""
    dm = model.get_model_object("diffusion_model")
    paths = feed_forward_paths(dm)
    if not paths:
        raise ValueError(f"no transformer feed-forward modules found in {type(dm).__name__}: feature slicing "
                         "supports SD1.5, SDXL, SD3, Flux and Wan 2.1 models")
    clone = model.clone()
    for path in paths:
        clone.add_object_patch(f"diffusion_model.{path}", token_sliced(dm.get_submodule(path), slice_tokens))
    return clone, len(paths)


class PyraFeatureSlicing(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraFeatureSlicing",
            display_name="Feature Slicing (Pyra)",
            category="Pyra/sparse",
            description="Runs the feed-forward networks of the model's transformer blocks over slices of the "
                        "tokens, so their wide hidden activation exists for one slice at a time: lower peak "
                        "memory at large sizes (video, high resolution), the same result.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3, Flux or Wan 2.1 model (a patched clone "
                                                "is returned)."),
                io.Int.Input("slice_tokens", default=4096, min=64, max=1_000_000, step=64,
                             tooltip="Tokens per slice. Smaller saves more memory and costs more launches; "
                                     "inputs up to this size run whole."),
            ],
            outputs=[io.Model.Output(tooltip="The model with sliced feed-forward networks.")],
        )

    @classmethod
    def execute(cls, model, slice_tokens) -> io.NodeOutput:
        clone, count = slice_features(model, slice_tokens)
        log.info("Pyra feature slicing: %d feed-forward modules run over %d-token slices", count, slice_tokens)
        return io.NodeOutput(clone)
