"""Step schedules compared on the analytic model (CPU): band error vs the exact ODE solution, held-out seeds.

    $(python3 tools/host.py python) benchmarks/schedule_quality.py --json benchmarks/results/schedules-cpu.json

For every family with stored searched schedules (sd15, sdxl: eps with the SD discrete schedule; sd3: flow,
shift 3; flux: ModelSamplingFlux at 1024²; wan21: flow, shift 8), sampler (euler, dpmpp_2m) and stored step
count, the HOST's own sampler runs the analytic model (a real MODEL in the host, nodes/demo.py) through
CFGGuider.sample with the sigmas of: the host's schedulers normal, simple, karras, beta (calculate_sigmas),
AlignYourSteps (the host node's values; SD1 / SDXL only) and ours (PyraSearchedSigmas' mapping). The noise
uses a held-out seed (the search used seed 0). Error: mean over the 3 opponent channels and 8 radial bands
of |log(band power / band power of the exact PF-ODE solution from the same noise)|, the search's proxy,
but on the host path and fresh noise; the exact solution runs down to the family's smallest grid sigma and
then denoises, as every sampler's last step does. Also the worst luminance band |ratio - 1|.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from _host import import_host, pack_module

SCHEDULERS = ("normal", "simple", "karras", "beta")
AYS = {"sd15": "SD1", "sdxl": "SDXL"}


def family_model(analytic, family):
    """The analytic model with the family's parametrisation and noise schedule, as the host builds it."""
    import comfy.model_sampling

    prior = analytic.NaturalImagePrior()
    patcher = analytic.analytic_model_patcher(prior, family.parametrisation)
    if family.name == "flux":
        class FluxSampling(comfy.model_sampling.ModelSamplingFlux, comfy.model_sampling.CONST):
            pass

        sampling = FluxSampling()
        sampling.set_parameters(shift=math.log(family.shift))  # ModelSamplingFlux's shift is mu
        patcher.add_object_patch("model_sampling", sampling)
    elif family.parametrisation == "flow":
        patcher.get_model_object("model_sampling").set_parameters(shift=family.shift)
    return prior, patcher


def schedules(patcher, family, sampler: str, steps: int) -> dict[str, torch.Tensor]:
    import comfy.samplers
    from comfy_extras.nodes_align_your_steps import AlignYourStepsScheduler

    ms = patcher.get_model_object("model_sampling")
    out = {name: comfy.samplers.calculate_sigmas(ms, name, steps).cpu() for name in SCHEDULERS}
    if family.name in AYS:
        out["ays"] = AlignYourStepsScheduler.execute(AYS[family.name], steps, 1.0)[0]
    out["searched"] = pack_module("host.schedules").searched_sigmas(patcher, family.name, sampler, steps, 1.0)
    return out


def errors(core, prior, samples, truth) -> dict[str, float]:
    ratio = core.band_ratio(samples.double(), prior, 8, reference=truth.double())
    return {"score": float(ratio.log().abs().mean()), "worst_luminance": float((ratio[0] - 1).abs().max()),
            "luminance_ratio": [round(float(r), 4) for r in ratio[0]]}


def run_family(args, family, store) -> dict:
    import comfy.samplers

    core, analytic = pack_module("core.analytic"), pack_module("host.analytic")
    prior, patcher = family_model(analytic, family)
    guider = comfy.samplers.CFGGuider(patcher)
    cond = [[torch.zeros(1, 1, 8), {}]]
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    size = args.size or family.proxy_size
    noise = torch.randn(args.samples, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    sigma_max = float(family.sigma_of(family.grid()[-1:]))
    truth = prior.pf_ode_solution(noise.double(), sigma_max, family.parametrisation,
                                  float(family.sigma_of(family.grid()[:1]))).float()
    results = {}
    for sampler, entries in store["schedules"][family.name].items():
        for steps in sorted(map(int, entries)):
            row = {}
            for name, sigmas in schedules(patcher, family, sampler, steps).items():
                out = guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object(sampler),
                                    sigmas.float(), seed=args.seed, disable_pbar=True)
                row[name] = errors(core, prior, out, truth) | {"sigmas": [round(float(s), 5) for s in sigmas]}
            results.setdefault(sampler, {})[str(steps)] = row
            print(family.name, sampler, steps, {k: round(v["score"], 4) for k, v in row.items()}, flush=True)
    return results


def summary(results: dict) -> dict:
    wins, total, ratios, behind = 0, 0, [], []
    for family, by_sampler in results.items():
        for sampler, by_steps in by_sampler.items():
            for steps, row in by_steps.items():
                stock = {k: v["score"] for k, v in row.items() if k != "searched"}
                best = min(stock, key=stock.get)
                ours = row["searched"]["score"]
                total += 1
                wins += ours < stock[best]
                ratios.append(ours / stock[best])
                if ours >= stock[best]:
                    behind.append(f"{family}/{sampler}/{steps}: {best} {stock[best]:.4f} vs ours {ours:.4f}")
    return {"searched_best_fraction": wins / total, "combinations": total,
            "searched_vs_best_stock_geomean": math.exp(sum(map(math.log, ratios)) / len(ratios)),
            "searched_vs_best_stock_worst": max(ratios), "behind": behind}


def compact_table(results: dict) -> list[str]:
    """One row per family and sampler: ours and the best stock schedule (named) at each step count."""
    steps = sorted({int(n) for by_sampler in results.values() for by_steps in by_sampler.values() for n in by_steps})
    lines = ["Searched (ours) vs the best stock schedule of the row below, per step count:", "",
             "| family, sampler | " + " | ".join(f"{n} steps" for n in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for family, by_sampler in results.items():
        for sampler, by_steps in by_sampler.items():
            cells = []
            for n in steps:
                row = by_steps.get(str(n))
                if row is None:
                    cells.append("")
                    continue
                best = min((k for k in row if k != "searched"), key=lambda k: row[k]["score"])
                ours, theirs = row["searched"]["score"], row[best]["score"]
                mark = "**" if ours < theirs else ""
                cells.append(f"{mark}{ours:.3f}{mark} vs {theirs:.3f} {best}")
            lines.append(f"| {family}, {sampler} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(out: dict) -> str:
    lines = [f"# Step schedules on the analytic model ({out['device']}, {out['date']})", "",
             f"Command: `{out['command']}`", "",
             "Band error vs the exact ODE solution from the same (held-out) noise: mean over 3 channels x 8 radial "
             "bands of \\|log power ratio\\|, lower is better; the host's own sampler and schedulers on the "
             f"analytic model, {out['config']['samples']} samples, seed {out['config']['seed']} (the search used "
             "seed 0). Best per row in bold.", ""]
    lines += compact_table(out["results"])
    for family, by_sampler in out["results"].items():
        for sampler, by_steps in by_sampler.items():
            names = list(next(iter(by_steps.values())))
            lines += [f"## {family}, {sampler}", "", "| steps | " + " | ".join(names) + " |",
                      "|---" * (len(names) + 1) + "|"]
            for steps, row in by_steps.items():
                best = min(row.values(), key=lambda v: v["score"])["score"]
                cells = [f"**{row[n]['score']:.4f}**" if row[n]["score"] == best else f"{row[n]['score']:.4f}"
                         for n in names]
                lines.append(f"| {steps} | " + " | ".join(cells) + " |")
            lines.append("")
    s = out["summary"]
    lines += [f"Searched schedule best in {s['searched_best_fraction']:.0%} of {s['combinations']} rows; "
              f"its error / the best stock schedule's: geometric mean {s['searched_vs_best_stock_geomean']:.3f}, "
              f"worst {s['searched_vs_best_stock_worst']:.3f}.", ""]
    if s["behind"]:
        lines += ["Rows where a stock schedule is as good or better:", "", *[f"- {b}" for b in s["behind"]], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15,sdxl,sd3,flux,wan21")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--size", type=int, default=None, help="pixels per side (default: the family's proxy size)")
    parser.add_argument("--seed", type=int, default=1000, help="held out: the stored search used seed 0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    store = pack_module("core.samplers.searched_schedules").load_store()
    families = pack_module("core.samplers.schedule_families")
    t0 = time.perf_counter()
    results = {name: run_family(args, families.get_family(name), store) for name in args.families.split(",")}
    out = {"device": "CPU", "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "command": "python benchmarks/schedule_quality.py " + " ".join(sys.argv[1:]),
           "config": {k: v for k, v in vars(args).items() if k != "json"}, "store_command": store["command"],
           "results": results, "summary": summary(results)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
