"""Pyramid sampling against direct sampling on the analytic natural-image model, per radial frequency band (CPU).

    $(python3 tools/host.py python) benchmarks/progressive_quality.py --json benchmarks/results/progressive-cpu.json

Flow parametrisation with SD3's shift 3, 30 steps, dpmpp_2m and euler, ladders a (2:0.4) and b
(4:0.35, 2:0.25). Every variant starts from the same noise as direct sampling (common random numbers), so
pyramid/direct band power is measured per sample pair; its standard error is the spread of the per-sample
ratios over sqrt(n). Also: direct sampling against the exact ODE solution from the same noise (the truth),
the pyramid with its noise correction switched off, and a naive pyramid (clean estimate at 1/2, bicubic
upsample, fresh noise at the switch, as hires-fix pipelines do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _host import import_host, pack_module

LADDERS = {"a": "2:0.4", "b": "4:0.35, 2:0.25"}
N_BANDS = 8


def setup(shift: float):
    analytic = pack_module("host.analytic")
    prior = analytic.NaturalImagePrior()
    return (prior, *analytic.analytic_guider(prior, "flow", shift))


def band_ratios(core, prior, samples, reference) -> tuple[list[float], list[float]]:
    """Per-band luminance ratio of pooled power (samples / reference) and its standard error over samples."""
    per_sample = torch.stack([core.band_ratio(s[None], prior, N_BANDS, reference=r[None])[0]
                              for s, r in zip(samples, reference, strict=True)])
    ratio = core.band_ratio(samples, prior, N_BANDS, reference=reference)[0]
    stderr = per_sample.std(0) / len(samples) ** 0.5
    return ratio.tolist(), stderr.tolist()


def naive_pyramid(guider, sampler, sigmas, noise, stages, seed):
    """Clean estimate at 1/2, bicubic upsample, fresh noise at the switch (the baseline the issue names)."""
    f, k = stages[0].factor, stages[0].end
    small = torch.nn.functional.avg_pool2d(noise, f) * f
    clean = guider.sample(small, torch.zeros_like(small), sampler, torch.cat([sigmas[:k], sigmas.new_zeros(1)]),
                          seed=seed, disable_pbar=True)
    up = torch.nn.functional.interpolate(clean, scale_factor=f, mode="bicubic", align_corners=False)
    fresh = torch.randn(noise.shape, generator=torch.Generator().manual_seed(seed + 1))
    return guider.sample(fresh, up, sampler, sigmas[k:], seed=seed, disable_pbar=True)


def run(args) -> dict:
    import comfy.samplers

    core = pack_module("core.analytic")
    pyr, pyr_sampling = pack_module("core.samplers.pyramid"), pack_module("host.pyramid")
    prior, patcher, guider = setup(args.shift)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", args.steps).cpu()
    noise = torch.randn(args.samples, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    latent = torch.zeros_like(noise)
    truth = prior.pf_ode_solution(noise, 1.0, "flow", sigma_min=float(sigmas[-2]))
    out = {"bands": N_BANDS, "results": {}}
    for name in args.samplers.split(","):
        sampler = comfy.samplers.sampler_object(name)
        direct = guider.sample(noise, latent, sampler, sigmas, seed=args.seed, disable_pbar=True).float()
        res = {"direct_vs_truth": band_ratios(core, prior, direct, truth)}
        for key, ladder in LADDERS.items():
            levels = pyr.parse_ladder(ladder)
            for variant, correction in (("", True), ("_no_correction", False)):
                y = pyr_sampling.pyramid_sample(guider, noise, latent, sampler, sigmas, levels, seed=args.seed,
                                                disable_pbar=True, noise_correction=correction).float()
                res[f"pyramid_{key}{variant}_vs_direct"] = band_ratios(core, prior, y, direct)
        naive = naive_pyramid(guider, sampler, sigmas, noise, pyr.plan_stages(args.steps, [(2, 0.4)]), args.seed)
        res["naive_a_vs_direct"] = band_ratios(core, prior, naive.float(), direct)
        out["results"][name] = res
        print(name, {k: f"worst {max(abs(r - 1) for r in v[0]):.3f}" for k, v in res.items()}, flush=True)
    return out


def worst(out: dict, key: str) -> float:
    return max(max(abs(r - 1) for r in res[key][0]) for res in out["results"].values())


def markdown(out: dict) -> str:
    lines = [f"# Pyramid vs direct sampling on the analytic model ({out['device']}, {out['date']})", "",
             f"Command: `{out['command']}`", "",
             "Luminance band power ratio per radial band, low to high frequency (± one standard error).", ""]
    for name, res in out["results"].items():
        lines += [f"## {name}", "", "| comparison | " + " | ".join(f"band {i}" for i in range(N_BANDS)) + " | worst |",
                  "|---" * (N_BANDS + 2) + "|"]
        for key, (ratio, err) in res.items():
            cells = " | ".join(f"{r:.3f} ± {e:.3f}" for r, e in zip(ratio, err, strict=True))
            lines.append(f"| {key} | {cells} | {max(abs(r - 1) for r in ratio):.3f} |")
        lines.append("")
    lines += ["Headline: " + ", ".join(f"`{k}` = {v:.4f}" for k, v in out["headline"].items()), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--samplers", default="dpmpp_2m,euler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    t0 = time.perf_counter()
    out = run(args)
    out.update(device="CPU", date=time.strftime("%Y-%m-%d"), seconds=round(time.perf_counter() - t0, 1),
               command="python benchmarks/progressive_quality.py " + " ".join(sys.argv[1:]), config=vars(args) | {
                   "json": str(args.json)})
    out["headline"] = {
        "analytic_worst_band_ratio_error_vs_direct_a": worst(out, "pyramid_a_vs_direct"),
        "analytic_worst_band_ratio_error_vs_direct_b": worst(out, "pyramid_b_vs_direct"),
        "analytic_worst_band_error_direct": worst(out, "direct_vs_truth"),
        "analytic_worst_band_ratio_error_no_correction": max(worst(out, "pyramid_a_no_correction_vs_direct"),
                                                             worst(out, "pyramid_b_no_correction_vs_direct")),
        "analytic_worst_band_ratio_error_naive_a": worst(out, "naive_a_vs_direct"),
    }
    print(json.dumps(out["headline"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        args.json.with_suffix(".md").write_text(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
