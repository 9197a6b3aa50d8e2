"""The host's own cost per sampling step, with the model's forward replaced by a null one (CPU).

    $(python3 tools/host.py python) benchmarks/host_overhead.py --json benchmarks/results/host-overhead-cpu.json

The tiny SDXL model, CFG 5 (cond and uncond in one batch), Euler, 30 karras steps: a DIFFUSION_MODEL wrapper
returns zeros instead of running the UNet, so what is timed is the host's sampler, CFG and conditioning
machinery plus the sampler's tensor arithmetic on the latent. It bounds how much of a launch-bound pyramid
stage the host's per-step work can explain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _host import import_host, pack_module, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="64,128", help="latent sides")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    import comfy.patcher_extension
    import comfy.samplers
    import torch

    patcher = pack_module("host.demo_models").build_tiny_model("sdxl").clone()
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "null",
                                 lambda executor, x, *a, **k: torch.zeros_like(x))
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, 2048, generator=g),
             {"pooled_output": torch.randn(1, 1280, generator=g), "width": 2048, "height": 2048}]]
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "karras", args.steps).cpu()
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(cond, cond)
        guider.set_cfg(5.0)
        noise = torch.randn(1, 4, side, side, generator=g)

        def run(noise=noise, guider=guider):
            guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas, seed=0,
                          disable_pbar=True)

        run()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) / args.steps * 1000)
        rows.append({"latent_side": side, "ms_per_step": round(statistics.median(times), 3)})
    report = {"meta": {"device": "cpu", "threads": torch.get_num_threads(),
                       "command": "python3 benchmarks/host_overhead.py " + " ".join(sys.argv[1:])}, "rows": rows}
    table = "\n".join(["# Host cost per sampling step with a null model (CPU)", "", f"`{report['meta']['command']}`",
                       "", "| latent | ms per CFG step |", "|---|---|"]
                      + [f"| {r['latent_side']}² | {r['ms_per_step']} |" for r in rows]) + "\n"
    write_report(args.json, report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
