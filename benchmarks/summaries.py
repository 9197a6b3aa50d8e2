"""Gather headline figures of committed GPU results into the files the issues name (CPU, no GPU needed).

    python3 benchmarks/summaries.py

progressive-h200.json (issue 3): the SDXL keys of its headline from the later SDXL-only run
progressive-sdxl-h200.json (graphs kept across runs); its Flux keys stay those of its own run.
sparse-compute-h200.json (issue 7): the step cache (SDXL; Flux on the time-smooth stand-in, and the plain
stand-in's Flux keys renamed *_plain_stand_in), block-sparse attention and feature slicing (4096-token slices)
headline keys side by side; cache_deviation_ratio_vs_easycache is the larger of the two families'.
dfm-h200.json (issue 8): the Flux-size DFM finetuning throughput from
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
        # the first run, plain random Flux (EasyCache reused nothing there): its Flux keys, renamed
        "step-cache-h200.json": lambda r: {f"{k}_plain_stand_in": v for k, v in r["headline"].items()
                                           if "flux" in k},
        "step-cache-sdxl-h200.json": lambda r: _family_keys(r, "sdxl"),
        "step-cache-flux-smooth-h200.json": lambda r: _family_keys(r, "flux"),  # the time-smooth stand-in
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
DERIVED = {  # figures computed from a target's gathered keys
    "sparse-compute-h200.json": lambda out: {"cache_deviation_ratio_vs_easycache": max(
        out[k] for k in ("cache_deviation_ratio_vs_easycache_sdxl", "cache_deviation_ratio_vs_easycache_flux"))},
}


def _family_keys(result: dict, family: str) -> dict:
    """A step-cache run's headline keys of one family, with its deviation ratio named by family."""
    keys = {k: v for k, v in result["headline"].items() if family in k}
    keys[f"cache_deviation_ratio_vs_easycache_{family}"] = result["headline"]["cache_deviation_ratio_vs_easycache"]
    return keys


def main() -> int:
    for target, sources in TARGETS.items():
        path = RESULTS / target
        out = json.loads(path.read_text()) if path.exists() else {}
        out.setdefault("sources", {})
        for name, pick in sources.items():
            figures = pick(json.loads((RESULTS / name).read_text()))
            (out["headline"] if target in NESTED else out).update(figures)
            out["sources"][name] = sorted(figures)
        if target in DERIVED:
            out.update(DERIVED[target](out))
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(target, json.dumps(out["sources"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
