"""Pyramid vs direct sampling on an analytic family that is NOT pooling-consistent, per radial band (CPU).

    $(python3 tools/host.py python) benchmarks/pyramid_inconsistent.py --samples 8 \
        --json benchmarks/results/pyramid-inconsistent-cpu.json

The model is core/analytic/inconsistent.py's PerResolutionPrior: every size has its own normalisation
(luminance pixel std 1 at every size) and its own spectral slope and knee, as a model trained at several
resolutions has them; its exact denoiser runs as a real host MODEL (host/analytic.py, unchanged). Flow
(shift 3) and eps (SD1.5 schedule), dpmpp_2m, 30 steps, ladders a (2:0.4) and b (4:0.35, 2:0.25). Every
variant starts from the same noise as direct sampling (common random numbers); the table gives the
luminance band power of pyramid over direct per radial band, with the standard error of the per-sample
ratios. Variants (core/samplers/pyramid.py, module docstring):

- `default`: the pack's pyramid as the nodes run it (host.pyramid.pyramid_sample);
- `scale_exact`: level scale r = std(pool(full-size data)) / std(level-size data), exact from the family;
- `scale_calibrated`: the same r measured from one batch of direct samples at each size (what a user can do);
- `renoise{k}`: corrective re-noise at each lift to the noise level k steps earlier, those k steps re-run;
- `scale_calibrated+renoise{k}`: both;
- `topup`, `scale_*+topup`: the detail top-up at each lift (`pyramid.detail_topup`): one evaluation of the next
  level's model at the lifted state measures the power the lift's detail modes miss, and fresh noise fills it in
  (extra cost: one evaluation per lift). It assumes each band Gaussian, which this family is by construction:
  here it can only show the mechanism; the trained proxy (`proxies.py`, variant `topup`) is its test;
- `flux_shift`: each level on the timestep shift Flux's rule gives its own size (mu linear in the token count,
  0.5 at 256 tokens, 1.15 at 4096; the full grid taken as the 64x64 tokens of a 1024x1024 Flux latent), i.e.
  level scale r = shift_full / (factor * shift_level). SD3's rule (shift proportional to the side) gives
  r = 1: the default pyramid already is "each level on the shift of its size" under that rule.
`direct_vs_truth` is direct sampling against the exact PF-ODE solution from the same noise (its own error).
The same variants also run on the consistent NaturalImagePrior (`--family consistent`), where r = 1 exactly.
The benchmark's own pyramid loop (`pyramid`) runs the variants; with every option off it is checked to give
the node's pyramid_sample output to the bit.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from _host import host_info, import_host, pack_module, write_report

LADDERS = {"a": "2:0.4", "b": "4:0.35, 2:0.25"}
N_BANDS = 8
RENOISE_STEPS = 3


def setup(prior, parametrisation: str, shift: float):
    return pack_module("host.analytic").analytic_guider(prior, parametrisation, shift)


def band_ratios(core, prior, samples, reference) -> tuple[list[float], list[float]]:
    """Per-band luminance ratio of pooled power (samples / reference) and its standard error over samples."""
    per_sample = torch.stack([core.band_ratio(s[None], prior, N_BANDS, reference=r[None])[0]
                              for s, r in zip(samples, reference, strict=True)])
    ratio = core.band_ratio(samples, prior, N_BANDS, reference=reference)[0]
    return ratio.tolist(), (per_sample.std(0) / len(samples) ** 0.5).tolist()


def pyramid(guider, noise, sampler, sigmas, levels, seed, scales=None, renoise_steps=0, upsample="bicubic",
            channel_stds=None, topup=False):
    """host.pyramid.pyramid_sample without padding, masks, areas and graphs, plus the core options.

    scales: {factor: r} level scales (missing: 1); renoise_steps: corrective re-noise at each lift;
    channel_stds: {factor: (C,) per-channel std of direct samples at that level's size}: each lift multiplies the
    clean part channel by channel by std[next] / std[factor] (a per-channel renormalisation of the lifted state,
    sigmas unchanged); topup: the detail top-up at every lift, from one evaluation of the next level's model at the
    lifted state (one Euler step to sigma 0 through the guider, which returns the model's clean estimate).
    """
    import comfy.samplers

    pyr, glue = pack_module("core.samplers.pyramid"), pack_module("host.pyramid")
    patcher = guider.model_patcher
    fmt = patcher.model.latent_format
    param = pack_module("host.models").parametrisation(patcher, "pyramid sampling")
    stages = pyr.plan_stages(len(sigmas) - 1, levels)
    scales = scales or {}
    fresh = torch.Generator().manual_seed(seed + 104729)
    clean = unit = None
    for i, stage in enumerate(stages):
        f, last = stage.factor, i == len(stages) - 1
        r = scales.get(f, 1.0)
        start = stage.start if i == 0 else pyr.renoise_start(stage.start, renoise_steps, sigmas, param)
        sig = pyr.level_sigmas(sigmas[start: stage.end + 1], f, param, r)
        if not last:
            sig = torch.cat([sig, sig.new_zeros(1)])
        if i == 0:
            stage_noise = pyr.level_noise(noise, f) * glue.start_noise_gain(patcher, sigmas, param)
            stage_latent = pyr.pool(torch.zeros_like(noise), f)
        else:
            if topup:
                probe = guider.sample(unit, fmt.process_out(clean), comfy.samplers.sampler_object("euler"),
                                      torch.stack([sig[0], sig.new_zeros(())]), disable_pbar=True, seed=seed)
                d, ve = fmt.process_in(probe).to(clean), float(pyr.to_ve(sig[0].double(), param))
                extra = torch.randn(unit.shape, generator=fresh, dtype=unit.dtype).to(unit.device)
                unit = pyr.detail_topup(clean, unit, d, ve, stages[i - 1].factor // f, extra)
            stage_noise, stage_latent = unit, fmt.process_out(clean)  # guider.sample takes VAE space
            if start < stage.start:
                ve = [float(pyr.to_ve(sig[j].double(), param)) for j in (stage.start - start, 0)]
                extra = torch.randn(unit.shape, generator=fresh, dtype=unit.dtype).to(unit.device)
                stage_noise = pyr.renoise(unit, ve[0], ve[1], extra)
        cb = glue.StageCallback(None, 0, 1)
        out = guider.sample(stage_noise, stage_latent, sampler, sig, callback=cb, disable_pbar=True, seed=seed)
        if last:
            return out
        nxt = stages[i + 1].factor
        rescale = r / scales.get(nxt, 1.0)
        if channel_stds is not None:
            rescale = rescale * (channel_stds[nxt] / channel_stds[f]).view(1, -1, *[1] * (noise.ndim - 2)).to(cb.x)
        clean, unit = pyr.lift(cb.x, cb.denoised, float(sig[-2]), f // nxt, pyr.level_noise(noise, nxt).to(cb.x),
                               param, upsample, rescale=rescale)
    raise AssertionError("unreachable")


def pixel_std(x: torch.Tensor) -> float:
    """Luminance per-pixel std of a batch (B, 3, H, W) in the opponent basis (the family's normalisation)."""
    prior = pack_module("core.analytic.prior")
    lum = torch.einsum("c,bchw->bhw", prior.OPPONENT_BASIS[0].to(x.device), x.double())
    return float(lum.square().mean().sqrt())


def calibrate(guider, sampler, sigma_fn, noise, seed, factors, measure=pixel_std) -> dict[int, float]:
    """r_f = std(pool(direct at full size)) / std(direct at 1/f size), each from its own direct batch; `measure`
    gives the std of a batch (pixel_std for the analytic pixel-space models, a latent's std for a trained one)."""
    pyr = pack_module("core.samplers.pyramid")
    full = guider.sample(noise, torch.zeros_like(noise), sampler, sigma_fn(), seed=seed, disable_pbar=True)
    scales = {}
    for f in factors:
        g = torch.Generator().manual_seed(seed + 31 * f)
        small_noise = torch.randn(*noise.shape[:2], noise.shape[-2] // f, noise.shape[-1] // f, generator=g)
        small = guider.sample(small_noise, torch.zeros_like(small_noise), sampler, sigma_fn(), seed=seed,
                              disable_pbar=True)
        scales[f] = measure(pyr.pool(full, f)) / measure(small)
    return scales


def calibrate_channels(guider, sampler, sigma_fn, noise, seed, factors) -> dict[int, torch.Tensor]:
    """{1 and each factor f: the per-channel std (C,) of a direct batch at 1/f of the size} (model space, as the
    sampler's state holds it), each size from its own noise: what a trained latent model makes at that size."""
    stds = {}
    for f in (1, *factors):
        g = torch.Generator().manual_seed(seed + 31 * f)
        n = torch.randn(*noise.shape[:2], noise.shape[-2] // f, noise.shape[-1] // f, generator=g)
        out = guider.sample(n, torch.zeros_like(n), sampler, sigma_fn(), seed=seed, disable_pbar=True)
        fmt = guider.model_patcher.model.latent_format
        stds[f] = fmt.process_in(out.float()).transpose(0, 1).reshape(out.shape[1], -1).std(dim=1)
    return stds


def flux_shift_scales(size: int, factors) -> dict[int, float]:
    """r_f = shift(full) / (f * shift(level)) under Flux's rule, the full grid as 64x64 = 4096 tokens."""
    def mu(tokens: float) -> float:
        return 0.5 + (tokens - 256) * (1.15 - 0.5) / (4096 - 256)

    full = (size / 4) ** 2
    return {f: math.exp(mu(full) - mu(full / f**2)) / f for f in factors}


def run_family(args, family: str, parametrisation: str) -> dict:
    import comfy.samplers

    core = pack_module("core.analytic")
    pyr, glue = pack_module("core.samplers.pyramid"), pack_module("host.pyramid")
    inc = pack_module("core.analytic.inconsistent")
    prior = inc.PerResolutionPrior() if family == "inconsistent" else core.NaturalImagePrior()
    patcher, guider = setup(prior, parametrisation, args.shift)
    ms = patcher.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, args.scheduler, args.steps).cpu()
    sampler = comfy.samplers.sampler_object(args.sampler)
    noise = torch.randn(args.samples, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    direct = guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, seed=args.seed, disable_pbar=True)
    direct = direct.float()
    n = args.size
    exact = {f: (prior.pixel_std_ratio(n // f, n // f, f) if family == "inconsistent" else 1.0) for f in (2, 4)}
    calibrated = calibrate(guider, sampler, lambda: sigmas, noise, args.seed + 1, (2, 4))
    sigma_max = 1.0 if parametrisation == "flow" else float(sigmas[0])
    truth = prior.pf_ode_solution(noise, sigma_max, parametrisation, sigma_min=float(sigmas[-2])).float()
    flux = flux_shift_scales(n, (2, 4))
    res = {"scales_exact": exact, "scales_calibrated": calibrated, "scales_flux_shift": flux,
           "bands": {"direct_vs_truth": band_ratios(core, prior, direct, truth)}, "seconds": {}}
    if family == "inconsistent":
        res["level_vs_pooled_band_power"] = {
            f: (prior.band_truth(n // f, n // f, N_BANDS)[0] / prior.band_truth(n // f, n // f, N_BANDS, f)[0]).tolist()
            for f in (2, 4)}
    variants = {"scale_exact": dict(scales=exact), "scale_calibrated": dict(scales=calibrated),
                f"renoise{RENOISE_STEPS}": dict(renoise_steps=RENOISE_STEPS),
                f"scale_calibrated+renoise{RENOISE_STEPS}": dict(scales=calibrated, renoise_steps=RENOISE_STEPS),
                "flux_shift": dict(scales=flux)}
    variants |= {"topup": dict(topup=True), "scale_exact+topup": dict(scales=exact, topup=True),
                 "scale_calibrated+topup": dict(scales=calibrated, topup=True)}
    if family != "inconsistent":
        del variants["scale_exact"], variants["scale_exact+topup"]  # r = 1 exactly: the default
    for key, ladder in LADDERS.items():
        levels = pyr.parse_ladder(ladder)
        t0 = time.perf_counter()
        node = glue.pyramid_sample(guider, noise, torch.zeros_like(noise), sampler, sigmas, levels, seed=args.seed,
                                   disable_pbar=True).float()
        res["seconds"][f"{key}_default"] = round(time.perf_counter() - t0, 1)
        res["bands"][f"{key}_default"] = band_ratios(core, prior, node, direct)
        if key == "a":
            mine = pyramid(guider, noise, sampler, sigmas, levels, args.seed).float()
            res["driver_equals_node_max_abs_diff"] = float((mine - node).abs().max())
        for name, opts in variants.items():
            t0 = time.perf_counter()
            y = pyramid(guider, noise, sampler, sigmas, levels, args.seed, **opts).float()
            res["seconds"][f"{key}_{name}"] = round(time.perf_counter() - t0, 1)
            res["bands"][f"{key}_{name}"] = band_ratios(core, prior, y, direct)
        print(family, parametrisation, key, {k: f"{worst(v):.3f}" for k, v in res["bands"].items()
                                             if k.startswith(key + "_")}, flush=True)
    steps = {"default": 0, f"renoise{RENOISE_STEPS}": RENOISE_STEPS}
    res["predicted_speedup"] = {f"{key}_{name}": pyr.predicted_speedup(
        _with_renoise(pyr.plan_stages(args.steps, pyr.parse_ladder(ladder)), k)) for key, ladder in LADDERS.items()
        for name, k in steps.items()}
    for key, ladder in LADDERS.items():   # the top-up: one more evaluation at each lifted level's size
        stages = pyr.plan_stages(args.steps, pyr.parse_ladder(ladder))
        cost = args.steps / res["predicted_speedup"][f"{key}_default"] + sum(s.factor ** -2 for s in stages[1:])
        res["predicted_speedup"][f"{key}_topup"] = args.steps / cost
    return res


def _with_renoise(stages, k: int):
    """The stages with every lifted stage starting k steps earlier (re-noise), for predicted_speedup."""
    pyr = pack_module("core.samplers.pyramid")
    return [s if i == 0 else pyr.Stage(s.factor, max(0, s.start - k), s.end) for i, s in enumerate(stages)]


def worst(entry) -> float:
    return max(abs(r - 1) for r in entry[0])


def markdown(out: dict) -> str:
    lines = [f"# Pyramid vs direct on a resolution-inconsistent analytic family ({out['device']}, {out['date']})",
             "", f"Command: `{out['command']}`", "",
             f"{out['config']['size']}x{out['config']['size']}, {out['config']['samples']} samples, "
             f"{out['config']['sampler']} {out['config']['steps']} steps ({out['config']['scheduler']}), flow shift "
             f"{out['config']['shift']}. Luminance band power of pyramid / direct from the same noise, bands low to "
             "high frequency (± one standard error); worst = max |ratio - 1|.", ""]
    lines += ["## Worst band", "", "| family | parametrisation | variant | ladder a | ladder b |",
              "|---|---|---|---|---|"]
    for tag, res in out["results"].items():
        family, param = tag.split("/")
        lines.append(f"| {family} | {param} | direct vs exact ODE | {worst(res['bands']['direct_vs_truth']):.3f} | |")
        names = [k.split("_", 1)[1] for k in res["bands"] if k.startswith("a_")]
        for name in names:
            lines.append(f"| {family} | {param} | {name} | {worst(res['bands']['a_' + name]):.3f} | "
                         f"{worst(res['bands']['b_' + name]):.3f} |")
    lines.append("")
    for tag, res in out["results"].items():
        lines += [f"## {tag}", "", f"Level scales r: exact {fmt_scales(res['scales_exact'])}, calibrated "
                  f"{fmt_scales(res['scales_calibrated'])}, Flux shift rule {fmt_scales(res['scales_flux_shift'])}. "
                  "Own pyramid loop vs the node's, all options off: max |diff| "
                  f"{res['driver_equals_node_max_abs_diff']:.1e}. Predicted speed-up (FLOPs, no re-noise / "
                  f"re-noise): {fmt_scales(res['predicted_speedup'])}.", ""]
        if "level_vs_pooled_band_power" in res:
            ratios = res["level_vs_pooled_band_power"].items()
            lines.append("Model power at the level size over the pooled full-size power, per band: " + "; ".join(
                f"1/{f}: " + ", ".join(f"{v:.3f}" for v in vals) for f, vals in ratios))
            lines.append("")
        lines += ["| variant | " + " | ".join(f"band {i}" for i in range(N_BANDS)) + " | worst |",
                  "|---" * (N_BANDS + 2) + "|"]
        for key, (ratio, err) in res["bands"].items():
            cells = " | ".join(f"{r:.3f} ± {e:.3f}" for r, e in zip(ratio, err, strict=True))
            lines.append(f"| {key} | {cells} | {worst((ratio, err)):.3f} |")
        lines.append("")
    lines += ["Headline: " + ", ".join(f"`{k}` = {v:.4f}" for k, v in out["headline"].items()), ""]
    return "\n".join(lines)


def fmt_scales(d: dict) -> str:
    return ", ".join(f"{k}: {v:.3f}" for k, v in d.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--parametrisations", default="flow,eps")
    parser.add_argument("--families", default="inconsistent,consistent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    out = {"bands": N_BANDS, "results": {}}
    for family in args.families.split(","):
        for param in args.parametrisations.split(","):
            out["results"][f"{family}/{param}"] = run_family(args, family, param)
    out.update(device="CPU", date=time.strftime("%Y-%m-%d"), seconds=round(time.perf_counter() - t0, 1),
               torch=torch.__version__, **host_info(),
               command="python benchmarks/pyramid_inconsistent.py " + " ".join(sys.argv[1:]),
               config=vars(args) | {"json": str(args.json)})
    head = {}
    for tag, res in out["results"].items():
        family, param = tag.split("/")
        for name in ("default", "scale_exact", "scale_calibrated", "topup", "scale_exact+topup",
                     "scale_calibrated+topup"):
            if f"a_{name}" not in res["bands"]:
                continue
            for key in LADDERS:
                band = res["bands"][f"{key}_{name}"]
                head[f"pyramid_worst_band_vs_direct_{key}_{family}_{param}_{name}"] = worst(band)
    out["headline"] = head
    write_report(args.json, out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
