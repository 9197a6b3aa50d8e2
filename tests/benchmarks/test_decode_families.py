"""benchmarks/decode.py's 2026-family section in its CPU smoke mode: the tiny Flux.2, Qwen-Image, Wan 2.2 and
HunyuanVideo 1.5 VAEs through the node's path and the host's, every figure written, errors within the goal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def test_cpu_smoke_writes_the_family_report(tmp_path, newest_host):
    out = tmp_path / "families.json"
    run = subprocess.run([sys.executable, str(BENCH), "--mode", "cpu", "--families", "flux2,qwen,wan22,hv15",
                          "--json", str(out)], capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["cases"]) == {"flux2_tiny_fp32_128x5x3", "qwen_tiny_fp32_16x1x9x7", "wan22_tiny_fp32_48x2x3x2",
                                   "hv15_tiny_fp32_32x3x3x2", "flux2_tiny_encode_fp32_64px",
                                   "qwen_tiny_encode_fp32_64px", "wan22_tiny_encode_fp32_64px",
                                   "hv15_tiny_encode_fp32_64px"}
    head = report["summary"]
    for fam in ("flux2", "qwen", "wan22", "hv15"):
        assert head[f"{fam}_err_fp32_raw"] <= head["goals"]["err_fp32"]
        assert head[f"{fam}_err_fp32_img"] <= head["goals"]["err_fp32"]
    for fam in ("flux2", "qwen", "wan22", "hv15"):   # one-image encodes, against the host's of the same image
        assert 0 <= head[f"{fam}_encode_err"] <= head["goals"]["err_fp32"]
    assert all(c["ours"] and c["raw_absmax"] > 0.1 for k, c in report["cases"].items() if "_encode_" not in k)
    assert "| flux2_tiny_fp32_128x5x3 | Pyra exact | 2 |" in out.with_suffix(".md").read_text()
