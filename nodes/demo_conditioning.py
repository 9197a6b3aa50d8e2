"""Conditioning for Pyra's demo models, which have no text encoder."""

from __future__ import annotations

import torch
from comfy_api.latest import io

# family -> (cross-attention shape without batch, extras with tensor shapes without batch)
DEMO_CONDITIONING: dict[str, tuple[tuple[int, int], dict]] = {
    "sd15": ((77, 768), {}),
    "sdxl": ((77, 2048), {"pooled_output": (1280,), "width": 1024, "height": 1024}),
    "sd3": ((77, 4096), {"pooled_output": (2048,)}),
    "flux": ((77, 4096), {"pooled_output": (768,), "guidance": 3.5}),
    "wan21": ((77, 4096), {}),
    "analytic": ((1, 8), {}),
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


class PyraDemoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraDemoConditioning",
            display_name="Demo Conditioning (Pyra, demo models only)",
            category="Pyra/demo",
            description=(
                "Only for Pyra's tiny demo models and the analytic model, which have no text encoder: emits "
                "seeded random conditioning of the shape the family expects. With a real model use CLIPTextEncode."
            ),
            inputs=[
                io.Combo.Input("family", options=list(DEMO_CONDITIONING), default="analytic",
                               tooltip="Which demo model the conditioning is for (only for demo models: "
                                       "real models need CLIPTextEncode)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Stands in for the prompt text: a different seed is a different 'prompt'."),
                io.Float.Input("scale", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Multiplies the random tensors (0 gives an all-zero, 'empty' prompt)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="Only for Pyra demo models.")],
        )

    @classmethod
    def execute(cls, family: str, seed: int, scale: float) -> io.NodeOutput:
        return io.NodeOutput(demo_conditioning(family, seed, scale))
