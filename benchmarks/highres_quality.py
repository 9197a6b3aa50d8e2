"""Structure-guided high resolution against the host's hires fix on the analytic natural-image model (CPU).

    $(python3 tools/host.py python) benchmarks/highres_quality.py --json benchmarks/results/highres-cpu.json

The analytic model's prior is resolution-consistent: average-pooling a 2N x 2N sample gives an N x N sample.
So the ideal 2x result from an N x N base is a 2N x 2N draw of the prior whose 2x2 average pool IS the base.
Two numbers per method measure how close an upscaler comes:
- structure error: |pool2(out) - base|^2 / |base|^2 (0 when the composition is kept exactly);
- detail: output power / the prior's power in each radial band above the base's Nyquist frequency (1 is right;
  below 1 is the blur and grey users report), worst band reported as |ratio - 1|.
Methods: bicubic upscale alone; the host's hires fix (latent bicubic upscale, then img2img at a denoise);
Pyra's structure-guided high resolution (sharpened start, low wavelet band of the unsharpened upscale kept for
the first k steps; db4, and Haar with the base's exact block means) at the same denoise levels. Flow
parametrisation, SD3's shift 3, dpmpp_2m, 15 steps per stage, the same seeds for every method.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _host import import_host, pack_module, write_report

N_BANDS = 8
DENOISE = (0.3, 0.5, 0.7)
GUIDANCE_STEPS = (5, 10, 15)
STEPS, SAMPLER = 15, "dpmpp_2m"


def setup(shift: float):
    analytic = pack_module("host.analytic")
    prior = analytic.NaturalImagePrior()
    patcher = analytic.analytic_model_patcher(prior, "flow")
    patcher.get_model_object("model_sampling").set_parameters(shift=shift)
    return prior, patcher


def measure(core, prior, out: torch.Tensor, base: torch.Tensor) -> dict:
    pooled = torch.nn.functional.avg_pool2d(out.float(), 2)
    structure = float((pooled - base).pow(2).sum() / base.pow(2).sum())
    ratio = core.band_ratio(out.float(), prior, N_BANDS)[0]
    detail = ratio[N_BANDS // 2:]
    return {"structure_error": structure, "detail_ratio": [round(float(r), 4) for r in ratio],
            "worst_detail_error": float((detail - 1).abs().max())}


def run(samples: int, size: int, seed: int) -> dict:
    import comfy.samplers

    highres = pack_module("host.highres")
    core = pack_module("core.analytic")
    prior, patcher = setup(3.0)
    cond = [[torch.zeros(1, 1, 8), {}]]
    base = prior.sample(samples, size, size, generator=torch.Generator().manual_seed(seed))
    results: dict[str, dict] = {}
    up = highres.resize(base, (2 * size, 2 * size), "bicubic")
    results["bicubic upscale"] = measure(core, prior, up, base)

    def ours(denoise: float, guidance_steps: int, sharpen: float, wavelet: str = "db4") -> torch.Tensor:
        settings = highres.HighResSettings(scales=[2.0], cfgs=[1.0], steps=STEPS, denoise=denoise,
                                           sampler_name=SAMPLER, scheduler="simple",
                                           guidance_steps=guidance_steps, sharpen=sharpen, wavelet=wavelet)
        return highres.highres_sample(patcher, cond, cond, {"samples": base}, seed + 1, settings,
                                      disable_pbar=True)

    direct = highres.stage_sigmas(patcher.get_model_object("model_sampling"), "simple", 50, 1.0)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    noise = torch.randn(up.shape, generator=torch.Generator().manual_seed(seed + 1))
    fresh = guider.sample(noise, torch.zeros_like(up), comfy.samplers.sampler_object(SAMPLER), direct,
                          seed=seed, disable_pbar=True)
    results[f"reference: a fresh {2 * size}² sample (unrelated to the base), 50 steps"] = measure(core, prior, fresh,
                                                                                                   base)
    for d in DENOISE:
        results[f"hires fix, denoise {d}"] = measure(core, prior, ours(d, 0, 0.0), base)
        for k in GUIDANCE_STEPS:
            results[f"Pyra, denoise {d}, {k} guided steps"] = measure(core, prior, ours(d, k, 1.0), base)
        results[f"Pyra without sharpening, denoise {d}, 5 guided steps"] = measure(core, prior, ours(d, 5, 0.0),
                                                                                   base)
        for k in GUIDANCE_STEPS[1:]:
            results[f"Pyra haar (exact block means), denoise {d}, {k} guided steps"] = measure(
                core, prior, ours(d, k, 1.0, "haar"), base)
    return results


def markdown(results: dict, meta: dict) -> str:
    lines = [f"# Structure-guided high resolution vs hires fix, analytic model ({meta['device']})", "",
             f"`{meta['command']}`", "",
             f"{meta['samples']} samples, base {meta['size']}² -> {2 * meta['size']}², flow shift 3, euler, "
             "15 steps per stage, seeds fixed. Structure error: |pool2(out) - base|² / |base|² (0 = composition "
             "kept). Detail: worst |power / prior power - 1| over the bands above the base's Nyquist (0 = right "
             "amount of new detail; blur shows as a deficit).", "",
             "| method | structure error | worst detail error | detail ratio per band (low to high) |",
             "|---|---|---|---|"]
    for name, r in results.items():
        ratios = " ".join(f"{v:.2f}" for v in r["detail_ratio"])
        lines.append(f"| {name} | {r['structure_error']:.4f} | {r['worst_detail_error']:.1%} | {ratios} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="base size in pixels (the result is twice it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    results = run(args.samples, args.size, args.seed)
    meta = {"device": "cpu", "samples": args.samples, "size": args.size, "seed": args.seed,
            "command": "python benchmarks/highres_quality.py " + " ".join(sys.argv[1:]),
            "seconds": round(time.perf_counter() - start, 1)}
    table = markdown(results, meta)
    write_report(args.json, {"meta": meta, "results": results}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
