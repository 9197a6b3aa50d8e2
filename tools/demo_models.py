"""Write Pyra's demo models (random weights: tiny ones, and a real-format SD1.5 checkpoint and VAE) into models/.

    python tools/demo_models.py --comfyui /path/to/ComfyUI [--force]

Run with the host's python. Loads host/demo_models.py by file path, so neither the pack's __init__.py nor
nodes/__init__.py (which need the whole host) is imported, and the host's own `nodes` and `utils` stay unshadowed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

MODULE_PATH = Path(__file__).resolve().parent.parent / "host" / "demo_models.py"
HOST_PACKAGE = MODULE_PATH.parent


def load_demo_models(comfyui: Path):
    """The host/demo_models.py module, imported under a private name with the host at `comfyui` on sys.path."""
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    args.cpu = True
    spec = importlib.util.spec_from_file_location("_pyra_demo_models", MODULE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_family_files():
    """host/family_demo_files.py (the 2026 families), its package host/ imported under a private name: its
    relative imports need a package, and host/__init__.py imports nothing. Call after load_demo_models."""
    spec = importlib.util.spec_from_file_location("_pyra_host", HOST_PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(HOST_PACKAGE)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["_pyra_host"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("_pyra_host.family_demo_files")


def main(argv: list[str] | None = None) -> int:
    """Write the demo models, one line per file, and the total time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="the ComfyUI folder (the one with main.py)")
    parser.add_argument("--force", action="store_true", help="rewrite files that already exist")
    opts = parser.parse_args(argv)
    comfyui = opts.comfyui.resolve()
    if not (comfyui / "comfy").is_dir():
        parser.error(f"{comfyui} is not a ComfyUI folder (no comfy/ inside)")
    start = time.perf_counter()
    demo = load_demo_models(comfyui)
    models_dir = comfyui / "models"
    written = set(demo.write_demo_models(models_dir, force=opts.force, real_format=True))
    families = load_family_files()
    family_written, skipped = families.write(models_dir, force=opts.force)
    written.update(family_written)
    for key, lacking in skipped.items():
        print(f"skipped  {families.FILES[key][1]}: this ComfyUI has no {lacking}")
    files = [*demo.DEMO_FILES.values(), *demo.REAL_FORMAT_FILES.values(),
             *(f for k, f in families.FILES.items() if k not in skipped)]
    for subfolder, name in files:
        path = models_dir / subfolder / name
        state = "written" if path in written else "present"
        print(f"{state:8s} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"demo models: {len(written)} written, {len(files) - len(written)} present, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
