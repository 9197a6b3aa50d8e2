"""Import the host and the pack's modules in a benchmark process (no server, no node registration)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from host import comfyui_dir  # noqa: E402  (the host of the matrix, or COMFYUI_PATH)


def import_host(cpu: bool = False) -> None:
    """Put ComfyUI on sys.path (COMFYUI_PATH, else the managed host of PYRA_HOST) and import its model management."""
    sys.path.insert(0, str(comfyui_dir()))
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


def write_report(path: Path | None, report: dict, table: str) -> None:
    """Print the markdown table; with a path, write the report as JSON there and the table beside it (.md)."""
    import json

    print(table)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(table)


def device_info() -> dict:
    import torch

    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    info["driver"] = smi.stdout.strip()
    return info
