"""tools/device_bundle.py's wheel slimming: the default drops only comfy-kitchen's ROCm backend, --video also its
compiled CUDA extension (so that av fits), and nothing else."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import device_bundle

NAMES = ["comfy_kitchen/__init__.py", "comfy_kitchen/backends/cuda/__init__.py",
         "comfy_kitchen/backends/cuda/_C.abi3.so", "comfy_kitchen/backends/hip/__init__.py",
         "comfy_kitchen/backends/hip/_C.abi3.so", "comfy_kitchen-0.2.31.dist-info/RECORD"]


def slimmed(tmp_path: Path, **kwargs) -> set[str]:
    whl = tmp_path / "comfy_kitchen-0.2.31-cp312-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for name in NAMES:
            z.writestr(name, "x")
    device_bundle.drop_rocm_backend(tmp_path, **kwargs)
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_default_drops_the_rocm_backend_only(tmp_path):
    assert slimmed(tmp_path) == set(NAMES) - {n for n in NAMES if "/hip/" in n}


def test_video_also_drops_the_cuda_extension(tmp_path):
    kept = slimmed(tmp_path, cuda_extension=True)
    assert kept == {"comfy_kitchen/__init__.py", "comfy_kitchen/backends/cuda/__init__.py",
                    "comfy_kitchen-0.2.31.dist-info/RECORD"}
