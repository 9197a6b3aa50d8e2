"""benchmarks/sparse_attention.py's pure-python parts: the headline keys and the markdown, on a fake result."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = importlib.import_module("sparse_attention")


def fake_row(total: float, queued: float) -> dict:
    row = {"sparsity": 0.8, "error": 0.05, "predictor": "eager", "compiled_plan_equal": True,
           "cudnn_ms": 20.0, "flash_ms": 30.0, "cudnn_queued_ms": 19.0, "flash_queued_ms": 29.0,
           "sparse_total_ms": total, "sparse_total_queued_ms": queued, "sparse_total_ref_ms": 9.0,
           "sparse_total_ref_queued_ms": 8.0, "predict_eager_ms": 0.8, "predict_compiled_ms": 0.9,
           "build_ref_ms": 0.7, "build_plan_ms": 0.1, "kernel_ms": 6.0, "kernel_queued_ms": 5.9}
    for name in ("cudnn", "flash"):
        row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / total
        row[f"speedup_vs_{name}_queued"] = row[f"{name}_queued_ms"] / queued
    return row


def test_headline_keys_and_markdown():
    cases = {"32k_s80": fake_row(8.0, 6.5), "75k_s90": fake_row(10.0, 9.5)}
    head = bench.headline(cases)
    assert head["attn_speedup_32k_s80_vs_cudnn"] == 20.0 / 8.0
    assert head["attn_speedup_75k_s90_vs_flash_queued"] == 29.0 / 9.5
    assert len(head) == 2 * 2 * 2
    out = {"device": {"gpu": "fake"}, "command": "python3 x", "cases": cases,
           "kernel_variants_32k_s80": {"tma": {"ms": 6.0}, "tma_rows_safe": {"error": "boom"}},
           "kernel_config": {"name": "tma", "kernel_options": {"USE_TMA": True}}}
    md = bench.markdown(out)
    assert "tma 6.00 ms" in md and "tma_rows_safe failed" in md
    assert "| 32k_s80 | 0.800 | 20.00 | 30.00 | 8.00 | 9.00 | 2.50 |" in md
    assert "| 75k_s90 | 0.80 | 0.90 | eager | True | 0.70 | 0.10 | 6.00 | 5.90 |" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| 32k_s80")]
    assert len(table_rows) == 2 and all(r.count("|") == h.count("|") for r, h in zip(
        table_rows, [line for line in md.splitlines() if line.startswith("| case")], strict=True))
