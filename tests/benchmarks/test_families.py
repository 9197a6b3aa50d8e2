"""benchmarks/families.py: its --smoke run on the CPU writes every figure of the families it is given, and the pure
parts (the FLOP-predicted pyramid speedup, the headline keys) compute what they say."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
families = importlib.import_module("families")


def test_predicted_speedup_counts_steps_and_the_extra_evaluations():
    flops = {1: 16.0, 2: 4.0, 4: 1.0}
    # 16 steps of ladder b: 6 at 1/4, 4 at 1/2, 6 full; each lower level evaluates once more at its end
    assert families.predicted_speedup(16, flops) == pytest.approx(16 * 16 / (6 * 1 + 4 * 4 + 6 * 16 + 1 + 4))
    assert families.predicted_speedup(16, {1: 1.0, 2: 1.0, 4: 1.0}) == pytest.approx(16 / 18)  # equal cost: a loss


def test_headline_keys():
    figs = {"flux2": {"pyramid": {"size": 2048, "measured": 2.0, "predicted": 2.1, "measured_over_predicted": 0.95}},
            "wan22_a14b": {"attention": {"s80": {"speedup_vs_dense": 3.5}, "s90": {"speedup_vs_dense": 6.0}}}}
    head = families.headline(figs)
    assert head == {"pyramid_speedup_flux22048_b": 2.0, "pyramid_predicted_flux22048_b": 2.1,
                    "pyramid_measured_over_predicted_flux22048_b": 0.95,
                    "attn_speedup_vs_cudnn_wan22_a14b_s80": 3.5, "attn_speedup_vs_cudnn_wan22_a14b_s90": 6.0}


def test_smoke_run_writes_every_figure(tmp_path, newest_host):
    from host import host_python

    out = tmp_path / "families.json"
    new = ("chroma", "z_image", "hunyuan_video15", "ltx2")   # the step cache on the other families of 2026: ~12 s
    proc = subprocess.run([str(host_python()), "benchmarks/families.py", "--smoke", "--families",
                           ",".join(("flux2", "wan22_ti2v_5b", *new)), "--search-runs", "1", "--repeats", "0",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["skipped"] == {}
    assert set(result["families"]) == {"flux2", "wan22_ti2v_5b", *new}
    assert set(result["families"]["flux2"]) == {"pyramid", "step_cache"}
    assert set(result["families"]["wan22_ti2v_5b"]) == {"attention", "step_cache"}
    assert set(result["families"]["hunyuan_video15"]) == {"attention", "step_cache"}
    for family in new:
        runs = result["families"][family]["step_cache"]["runs"]
        assert runs["ours_t0"]["deviation"] == 0 and runs["ours_t0"]["reused"] == 0
        assert 0 < runs["easycache"]["computed"] <= 6
    # LTX-2: the video latent (128 channels, 32x) beside the audio latent of its 65 frames (25 a second at 25 fps)
    assert result["families"]["ltx2"]["step_cache"]["latent"] == [[1, 128, 9, 1, 3], [1, 8, 65, 16]]
    pyr = result["families"]["flux2"]["pyramid"]
    assert pyr["latent"] == [1, 128, 16, 16] and pyr["steps"] == 6 and pyr["text"] == [512, 15360]
    flops = {int(k): v for k, v in pyr["flops_per_step"].items()}
    assert flops[1] > flops[2] > flops[4] > 0
    assert pyr["predicted"] == pytest.approx(families.predicted_speedup(6, flops))
    att = result["families"]["wan22_ti2v_5b"]["attention"]
    for key, target in families.SPARSITY.items():
        assert att[key]["sparsity"] >= target - 0.1 and att[key]["total_ms"] > 0
    cache = result["families"]["wan22_ti2v_5b"]["step_cache"]
    assert cache["latent"][1] == 48 and cache["runs"]["easycache"]["computed"] <= 6
    assert "pyramid_speedup_flux2256_b" in result["headline"]
    md = out.with_suffix(".md").read_text()
    assert "## Pyramid" in md and "## Block-sparse attention" in md and "## Step cache, flux2" in md
    assert "## Step cache, ltx2" in md
