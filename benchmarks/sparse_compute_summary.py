"""Collect the issue-7 headline figures into benchmarks/results/sparse-compute-h200.json (CPU, no GPU needed).

    python3 benchmarks/sparse_compute_summary.py

Reads the committed H200 results of the three benchmarks (step cache, block-sparse attention, feature slicing
at 4096-token slices) and writes their headline keys side by side with the file each came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = {
    "step-cache-h200.json": lambda r: r["headline"],
    "sparse-attention-h200.json": lambda r: r["headline"],
    "slicing-wan-4096.json": lambda r: {"slice_peak_ratio_wan": r["slice_peak_ratio_wan"],
                                        "slice_time_ratio_wan": r["time_ratio"],
                                        "slice_max_abs_diff_wan": r["max_abs_diff"]},
}


def main() -> int:
    out = {"sources": {}}
    for name, pick in SOURCES.items():
        figures = pick(json.loads((RESULTS / name).read_text()))
        out.update(figures)
        out["sources"][name] = sorted(figures)
    (RESULTS / "sparse-compute-h200.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
