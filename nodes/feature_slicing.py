"""Feature slicing for the diffusion model: Wan blocks grouped, other blocks' feed-forward networks in token slices."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from .feature_slicing_apply import slice_features
from .host_features import search_aliases

log = logging.getLogger("pyra")


class PyraFeatureSlicing(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraFeatureSlicing",
            **search_aliases("low memory", "chunked feed forward", "streamlined inference"),
            display_name="Feature Slicing (Pyra)",
            category="Pyra/sparse",
            description="Runs the token-wise parts of the model's transformer blocks over slices of the tokens, "
                        "so their activations exist for one slice at a time: lower peak memory at large sizes "
                        "(video, high resolution), the same result. Wan blocks run whole in slices around one "
                        "attention over all tokens (about half the block's peak); other models' blocks slice "
                        "their feed-forward networks.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.5, SDXL, SD3, Flux or Wan 2.1 / 2.2 model (a patched "
                                                "clone is returned)."),
                io.Int.Input("slice_tokens", default=4096, min=64, max=1_000_000, step=64,
                             tooltip="Tokens per slice. Smaller saves more memory and costs more launches; "
                                     "inputs up to this size run whole."),
            ],
            outputs=[io.Model.Output(tooltip="The model with sliced transformer blocks.")],
        )

    @classmethod
    def execute(cls, model, slice_tokens) -> io.NodeOutput:
        clone, report = slice_features(model, slice_tokens)
        log.info(report.summary())
        return io.NodeOutput(clone)
