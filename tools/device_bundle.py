"""Prepare what a GPU benchmark needs on the lent H200, which has torch but no ComfyUI and no network.

    python3 tools/device_bundle.py        # writes .device/ (git-ignored): ComfyUI's source, wheels

Then every device command starts with `source benchmarks/device_env.sh` (and carries `.device`):
it installs the wheels into /tmp/site and puts ComfyUI on PYTHONPATH, so every benchmark starts the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import REPO, comfyui_dir

DEVICE = REPO / ".device"
# ComfyUI's python packages and modules that the in-process benchmarks import (no server, no frontend).
SOURCE = ["comfy", "comfy_api", "comfy_execution", "comfy_config", "comfy_extras", "utils", "folder_paths.py",
          "latent_preview.py", "node_helpers.py", "comfyui_version.py"]
# Pure-python packages the host imports that the device image lacks (its torch, transformers etc. are used).
WHEELS = ["torchsde==0.2.6", "trampoline==0.1.2"]


def main() -> int:
    src = comfyui_dir()
    dst = DEVICE / "ComfyUI"
    shutil.rmtree(dst, ignore_errors=True)
    for name in SOURCE:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / name)
    wheels = DEVICE / "whl"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                    "--only-binary=:all:", "-d", str(wheels), *WHEELS], check=True)
    size = sum(f.stat().st_size for f in DEVICE.rglob("*") if f.is_file())
    print(f"{DEVICE}: {size / 2**20:.1f} MiB (carry '.device' in device runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
