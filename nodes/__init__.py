"""Thin V3 ComfyNode classes, one file per capability: the only part of the pack that imports the host."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .analytic import PyraAnalyticModel
from .demo_conditioning import PyraDemoConditioning
from .pyramid import PyraPyramidGuider, PyraPyramidSampler
from .schedules import PyraSearchedSigmas

NODES: list[type[io.ComfyNode]] = [
    PyraAnalyticModel,
    PyraDemoConditioning,
    PyraPyramidGuider,
    PyraPyramidSampler,
    PyraSearchedSigmas,
]


class PyraExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
