"""PyraTrainSparseAdapter's memory estimate against what training really takes, on the CPU (issue 16).

    $(python3 tools/host.py python) benchmarks/train_memory.py --json benchmarks/results/train-memory-cpu.json

The demo SD1.5 UNet (sd15_detectable: model channels 320, fp32), one 32x32 latent, two steps, at the schema's
maxima: sparse with threshold 1.0 (nearly every weight trains) and householder with 256 reflections. Each case runs
in its own process; the measured figure is the process's peak resident memory during `train` minus its resident
memory before (sampled every 5 ms). The node refuses when the estimate exceeds the free memory; the estimate
leaves activations out, so `measured / estimate` near or above 1 says it does not refuse what would fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from _host import write_report

CASES = {"sparse_threshold_1.0": ("sparse", 1.0, 2), "householder_256": ("householder", 5e-3, 256)}


def measure(case: str) -> dict:
    import psutil
    import torch
    from _host import import_host, pack_module

    import_host(cpu=True)
    kind, threshold, reflections = CASES[case]
    demo, training = pack_module("host.demo_models"), pack_module("host.training")
    base = demo.build_tiny_model("sd15_detectable", torch.float32, seed=0)
    demo.init_random_(base.model.diffusion_model, 0, std=0.05)
    cond = pack_module("host.demo_models").demo_conditioning("sd15", seed=1)
    settings = training.TrainSettings(kind, 2, 1e-4, 1, 0, threshold=threshold, reflections=reflections)
    parts = training.memory_parts(base, settings)
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)
    start = proc.memory_info().rss
    peak[0] = start
    thread = threading.Thread(target=poll)
    thread.start()
    result = training.train(base, torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)), cond,
                            settings)
    done.set()
    thread.join()
    estimate = sum(parts.values())
    return {"estimate_bytes": estimate, "parts": parts, "measured_peak_growth_bytes": peak[0] - start,
            "measured_over_estimate": (peak[0] - start) / estimate, "trainable": result.trainable,
            "parameters": sum(p.numel() for p in base.model.diffusion_model.parameters())}


def markdown(out: dict) -> str:
    lines = ["# PyraTrainSparseAdapter: memory estimate vs measured (CPU, demo SD1.5)", "",
             f"Command: `{out['command']}`", "",
             "| case | estimate MiB | measured peak growth MiB | measured / estimate | trainable values |",
             "|---|---|---|---|---|"]
    for case, r in out["cases"].items():
        lines.append(f"| {case} | {r['estimate_bytes'] / 2**20:.1f} | {r['measured_peak_growth_bytes'] / 2**20:.1f} "
                     f"| {r['measured_over_estimate']:.2f} | {r['trainable']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--case", choices=list(CASES), help="(internal) measure one case in this process")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(measure(args.case)))
        return 0
    out = {"command": " ".join(["python3", *sys.argv]), "cases": {}}
    for case in CASES:
        run = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True)
        out["cases"][case] = json.loads(run.stdout.strip().splitlines()[-1])
        print(case, json.dumps(out["cases"][case]), flush=True)
    write_report(args.json, out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
