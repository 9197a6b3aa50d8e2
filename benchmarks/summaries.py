"""Gather headline figures of committed GPU results into the files the issues name (CPU, no GPU needed).

    python3 benchmarks/summaries.py

progressive-h200.json (issue 3): the SDXL keys of its headline from the later SDXL-only run
progressive-sdxl-h200.json (graphs kept across runs); its Flux keys stay those of its own run.
sparse-compute-h200.json (issue 7): the step cache, block-sparse attention and feature slicing (4096-token
slices) headline keys side by side. dfm-h200.json (issue 8): the Flux-size DFM finetuning throughput from
dfm-flux-train-h200.json, and the longer run with its convergence curve from dfm-curve-h200.json (keys ending
in _long), merged beside the first from-scratch comparison. Each target records the files its keys
came from; keys of a target that no source provides are kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "progressive-h200.json": {
        "progressive-sdxl-h200.json": lambda r: r["headline"],
    },
    "sparse-compute-h200.json": {
        "step-cache-h200.json": lambda r: r["headline"],
        "step-cache-sdxl-h200.json": lambda r: r["headline"],  # after: its SDXL keys replace the run above's
        "sparse-attention-h200.json": lambda r: r["headline"],
        "slicing-wan-4096.json": lambda r: {"slice_peak_ratio_wan": r["slice_peak_ratio_wan"],
                                            "slice_time_ratio_wan": r["time_ratio"],
                                            "slice_max_abs_diff_wan": r["max_abs_diff"]},
    },
    "dfm-h200.json": {
        "dfm-flux-train-h200.json": lambda r: {"flux_train_images_per_s_1024": r["images_per_s"],
                                               "flux_train_s_per_step_1024": r["s_per_step"],
                                               "flux_train_peak_gib_1024": r["peak_mem_gib"],
                                               "flux_train_config": r["config"]},
        "dfm-curve-h200.json": lambda r: {"long_steps": r["config"]["steps"], "long_seeds": r["seeds"],
                                          **{f"{k}_{m}_long": r[f"{k}_{m}"] for k in ("swd", "band_err")
                                             for m in ("fm", "dfm")},
                                          "curve_fm": r["curve_fm"], "curve_dfm": r["curve_dfm"]},
    },
}
NESTED = {"progressive-h200.json"}  # targets whose figures sit in their "headline" dict


def main() -> int:
    for target, sources in TARGETS.items():
        path = RESULTS / target
        out = json.loads(path.read_text()) if path.exists() else {}
        out.setdefault("sources", {})
        for name, pick in sources.items():
            figures = pick(json.loads((RESULTS / name).read_text()))
            (out["headline"] if target in NESTED else out).update(figures)
            out["sources"][name] = sorted(figures)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(target, json.dumps(out["sources"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
