"""Import the host and the pack's modules in a benchmark process (no server, no node registration)."""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def import_host(cpu: bool = False) -> None:
    """Put ComfyUI on sys.path (PYRA_COMFYUI, else the managed host) and import its model management."""
    sys.path.insert(0, os.environ.get("PYRA_COMFYUI", str(REPO / ".host" / "ComfyUI")))
    from comfy.cli_args import args

    args.cpu = cpu
    args.use_pytorch_cross_attention = True
    import comfy.model_management  # noqa: F401


def pack_module(dotted: str) -> types.ModuleType:
    """`pack_module("nodes.pyramid_sampling")` without running the pack's or nodes/ __init__."""
    for name, path in (("pyra_pack", REPO), ("pyra_pack.nodes", REPO / "nodes")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules.setdefault(name, pkg)
    return importlib.import_module(f"pyra_pack.{dotted}")
