"""Prepare what a GPU benchmark needs on the lent H200, which has torch but no ComfyUI and no network.

    PYRA_HOST=0.33.0 python3 tools/device_bundle.py   # writes .device/ (git-ignored) for that host of the matrix
    PYRA_HOST=0.33.0 python3 tools/device_bundle.py --video   # with av, without comfy-kitchen's CUDA extension

A host with a source archive (../shared/hosts/) travels as that archive, unpacked on the device by
benchmarks/device_env.sh; the PyPI snapshot (or a COMFYUI_PATH host) travels as a copy of the source parts the
in-process benchmarks import. Wheels of the packages the host imports that the device image lacks go beside it
(built for the device's Python 3.12). Then every device command starts with `source benchmarks/device_env.sh`
and carries `.device`, so every benchmark starts the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import REPO, SHARED_HOSTS, comfyui_dir, selected_host

DEVICE = REPO / ".device"
# ComfyUI's python packages and modules that the in-process benchmarks import (no server, no frontend).
SOURCE = ["comfy", "comfy_api", "comfy_execution", "comfy_config", "comfy_extras", "utils", "folder_paths.py",
          "latent_preview.py", "node_helpers.py", "comfyui_version.py"]
# Packages the host imports that the device image lacks (its torch, torchaudio, transformers etc. are used).
# 0.33.0 imports comfy-kitchen unconditionally (comfy/ldm/modules/attention.py): its wheel (58 MB) travels
# without the ROCm backend (46 MB; only ROCm builds of torch load it). av (36 MB), which only comfy_api's video
# types import, does not fit beside it: benchmarks that import comfy_api (EasyCache) build its node classes on a
# stand-in base (benchmarks/step_cache.py). `--video` makes room for av (the host's pin) by dropping comfy-kitchen's
# CUDA extension too (backends/cuda/_C.abi3.so, 46 MB packed; comfy_kitchen/backends/cuda/__init__.py records it
# missing and its triton and eager backends take the ops), so that comfy_api imports as it is.
WHEELS = {
    "0.3.76-dev": ["torchsde==0.2.6", "trampoline==0.1.2"],
    "0.8.1": ["torchsde==0.2.6", "trampoline==0.1.2", "comfy-kitchen==0.2.5"],
    "0.33.0": ["torchsde==0.2.6", "trampoline==0.1.2", "comfy-aimdo==0.4.13", "simpleeval==1.0.3",
               "blake3==1.0.8", "comfy-kitchen==0.2.31"],
}
VIDEO_WHEELS = {"0.33.0": ["av==17.0.0"]}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]


def copy_source(src: Path, dst: Path) -> None:
    for name in SOURCE:
        path = src / name
        if path.is_dir():
            shutil.copytree(path, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / name)


def drop_rocm_backend(wheels: Path, cuda_extension: bool = False) -> None:
    """Rewrite the comfy-kitchen wheel without backends/hip/ (the device's torch is a CUDA build); with
    `cuda_extension`, also without the compiled CUDA backend (backends/cuda/_C*.so)."""
    for whl in wheels.glob("comfy_kitchen-*.whl"):
        slim = whl.with_suffix(".slim")
        with zipfile.ZipFile(whl) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                name = info.filename
                dropped = "/backends/hip/" in name or (
                    cuda_extension and "/backends/cuda/_C." in name and name.endswith(".so"))
                if not dropped:
                    dst.writestr(info, src.read(name))
        slim.replace(whl)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", action="store_true",
                        help="add av (comfy_api imports it) in place of comfy-kitchen's CUDA extension")
    args = parser.parse_args(argv)
    spec = selected_host()
    if args.video and spec.name not in VIDEO_WHEELS:
        parser.error(f"--video is for host {', '.join(VIDEO_WHEELS)}, not {spec.name}")
    shutil.rmtree(DEVICE, ignore_errors=True)
    DEVICE.mkdir()
    if spec.archive and not os.environ.get("COMFYUI_PATH"):
        shutil.copy2(SHARED_HOSTS / spec.archive, DEVICE / "comfyui.tar.gz")
    else:
        copy_source(comfyui_dir(), DEVICE / "ComfyUI")
    wheels = DEVICE / "whl"
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms,
                    "-d", str(wheels), *WHEELS.get(spec.name, WHEELS["0.3.76-dev"]),
                    *(VIDEO_WHEELS[spec.name] if args.video else [])], check=True)
    drop_rocm_backend(wheels, cuda_extension=args.video)
    size = sum(f.stat().st_size for f in DEVICE.rglob("*") if f.is_file())
    print(f"{DEVICE}: ComfyUI {spec.name}, {size / 2**20:.1f} MiB (carry '.device' in device runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
