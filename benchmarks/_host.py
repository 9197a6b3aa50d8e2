"""Import the host and the pack's modules in a benchmark process (no server, no node registration)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
from host import comfyui_dir  # noqa: E402  (the host of the matrix, or COMFYUI_PATH)


def import_host(cpu: bool = False) -> None:
    """Put ComfyUI on sys.path (COMFYUI_PATH, else the managed host of PYRA_HOST) and import its model management.

    On the GPU the host's default memory mode is switched on as its main.py does: dynamic VRAM on hosts that
    have it (0.16+, with comfy-aimdo; `PYRA_DYNAMIC_VRAM=0` turns it off for a side-by-side run). `memory_mode()`
    says which mode the process runs in, for the results."""
    sys.path.insert(0, str(comfyui_dir()))
    from comfy import cli_args

    cli_args.args.cpu = cpu
    cli_args.args.use_pytorch_cross_attention = True
    wanted = not cpu and os.environ.get("PYRA_DYNAMIC_VRAM", "1") != "0"
    if wanted and hasattr(cli_args, "enables_dynamic_vram") and cli_args.enables_dynamic_vram():
        _enable_dynamic_vram()
    import comfy.model_management  # noqa: F401


def _enable_dynamic_vram() -> None:
    """main.py's start-up for dynamic VRAM (ComfyUI 0.16+): aimdo before model management, then its patcher."""
    import comfy_aimdo.control

    try:
        comfy_aimdo.control.init(nvml_pressure=True)   # main.py's default (no --disable-nvml-pressure)
    except TypeError:   # comfy-aimdo 0.4.9 protocol
        comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher

    devices = mm.get_all_torch_devices()
    try:
        ready = comfy_aimdo.control.init_devices((d.index, 0) for d in devices)
    except TypeError:   # comfy-aimdo 0.4.9 protocol
        ready = comfy_aimdo.control.init_devices(d.index for d in devices)
    if mm.is_nvidia() and ready:
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
        comfy.memory_management.aimdo_enabled = True


def memory_mode() -> str:
    """'dynamic_vram' when the host streams weights through aimdo (ModelPatcherDynamic), else 'legacy'."""
    mm = sys.modules.get("comfy.memory_management")
    return "dynamic_vram" if getattr(mm, "aimdo_enabled", False) else "legacy"


def model_patcher(model, load_device, offload_device):
    """The patcher the host's own loaders use (CoreModelPatcher: ModelPatcherDynamic under dynamic VRAM)."""
    import comfy.model_patcher
    import torch

    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    if load_device.type == "cuda" and load_device.index is None:   # dynamic VRAM's buffers need the index
        load_device = torch.device("cuda", torch.cuda.current_device())
    return cls(model, load_device=load_device, offload_device=offload_device)


def host_info() -> dict:
    """The host version and memory mode, recorded beside the device in every result."""
    try:
        from comfyui_version import __version__ as version
    except ImportError:
        version = "unknown"
    return {"comfyui": version, "memory_mode": memory_mode()}


def pack_module(dotted: str) -> types.ModuleType:
    """`pack_module("host.pyramid")` without running the pack's or nodes/ __init__."""
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

    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            **host_info()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    info["driver"] = smi.stdout.strip()
    return info
