"""Thin V3 ComfyNode classes, one file per capability: the only part of the pack that imports the host."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .analytic import PyraAnalyticModel
from .demo_conditioning import PyraDemoConditioning
from .highres import PyraDiffuseHigh
from .lora_tools import PyraExtractLoRA, PyraMergeLoRA, PyraResizeLoRA
from .pyramid import PyraPyramidGuider, PyraPyramidSampler
from .step_cache import PyraStepCache
from .vae_decode import PyraExactVAEDecode

NODES: list[type[io.ComfyNode]] = [
    PyraAnalyticModel,
    PyraDemoConditioning,
    PyraPyramidGuider,
    PyraPyramidSampler,
    PyraDiffuseHigh,
    PyraExactVAEDecode,
    PyraExtractLoRA,
    PyraResizeLoRA,
    PyraMergeLoRA,
    PyraStepCache,
]


class PyraExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
