"""benchmarks/feature_slicing.py --tiny runs where `av` is missing and never imports comfy_api (as on the H200)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from host import comfyui_dir

REPO = Path(__file__).resolve().parents[2]

# Runs the benchmark with `av` and `comfy_api` hidden from every import (and from importlib.util.find_spec).
HIDDEN_RUN = '''
import runpy, sys

HIDDEN = ("av", "comfy_api")


class Hide:
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, *args, **kwargs):
        for finder in self.finders:
            if hasattr(finder, "find_distributions"):
                yield from finder.find_distributions(*args, **kwargs)

    def invalidate_caches(self):
        for finder in self.finders:
            if hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()


sys.meta_path[:] = [Hide(list(sys.meta_path))]
sys.argv = ["feature_slicing.py", "--tiny", "--json", sys.argv[1]]
sys.path.insert(0, "benchmarks")
try:
    runpy.run_path("benchmarks/feature_slicing.py", run_name="__main__")
finally:
    print("LOADED", sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in HIDDEN}))
'''


def test_tiny_benchmark_runs_without_av_and_comfy_api(tmp_path):
    out = tmp_path / "slicing.json"
    proc = subprocess.run([sys.executable, "-c", HIDDEN_RUN, str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    result = json.loads(out.read_text())
    assert result["blocks_grouped"] == 1 and result["ffn_only_sliced"] == 0
    assert result["max_abs_diff"] <= 1e-4


def test_hiding_works():
    """The check can fail: the host's comfy_api imports without the hider and is an error with it."""
    importing = f"sys.path.insert(0, {str(comfyui_dir())!r})\nimport comfy_api\n"
    plain = subprocess.run([sys.executable, "-c", "import sys\n" + importing], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    hidden = subprocess.run([sys.executable, "-c", HIDDEN_RUN.split("sys.argv =")[0] + importing], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert hidden.returncode != 0 and "No module named 'comfy_api'" in hidden.stderr
