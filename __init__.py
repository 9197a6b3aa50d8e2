"""Pyra: coarse-to-fine samplers, multi-level decoders, low-rank adapters and sparse kernels for ComfyUI.

ComfyUI imports this folder as a package and calls `comfy_entrypoint()` (the V3 node API). There is
deliberately no NODE_CLASS_MAPPINGS: the host would take that branch and never call the entrypoint.
"""

from __future__ import annotations

WEB_DIRECTORY = "./web"  # the node help pages (web/docs/<NodeId>.md, written by tools/node_docs.py); no scripts


async def comfy_entrypoint():
    from .nodes import PyraExtension, register_with_host

    register_with_host()  # here, not at import: every host calls the entrypoint (0.33.0 alone calls on_load)
    return PyraExtension()
