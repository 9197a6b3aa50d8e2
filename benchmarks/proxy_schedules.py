"""Searched step schedules against the host's schedulers on the trained Flux-class proxy.

A section of benchmarks/proxies.py. Pyra's searched schedules (core/samplers/searched_schedules.json) were searched
on the analytic prior; the proxy was not built to agree with them. At each of --schedule-steps, from the same noise
and seed, euler with: the host's `simple` (Flux's default), `normal`, `karras`, `beta` and `sgm_uniform` schedules
and PyraSearchedSigmas' (host.schedules.searched_sigmas, family flux). Each is compared with the --schedule-ref-steps
`simple` run of the same noise (the converged solve: PSNR, SSIM, worst band against it) and with held-out photo
crops (patch sliced-Wasserstein). AlignYourSteps is not run: the host's AYS tables are SD1, SDXL and SVD noise
levels (comfy_extras/nodes_align_your_steps.py), none for a flow model.
"""

from __future__ import annotations

import torch
from _host import pack_module

HOST_SCHEDULERS = ("simple", "normal", "karras", "beta", "sgm_uniform")


def schedules_eval(args, patcher, codec, cond, decode, data_crops, conditioning) -> dict:
    import comfy.samplers
    import pyramid_inconsistent as pi

    analytic, proxy = pack_module("core.analytic"), pack_module("core.proxy")
    schedules = pack_module("host.schedules")
    prior = analytic.NaturalImagePrior()
    c = conditioning(cond)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(c, c)
    guider.set_cfg(1.0)
    ms = patcher.get_model_object("model_sampling")
    sampler = comfy.samplers.sampler_object("euler")
    size, n, seed = args.schedule_size, args.schedule_samples, args.seed + 5
    side = size // 8
    noise = torch.randn(n, 16, side, side, generator=torch.Generator().manual_seed(seed))

    def run(sigmas):
        return decode(patcher, codec, guider.sample(noise, torch.zeros_like(noise), sampler, sigmas.cpu(), seed=seed,
                                                    disable_pbar=True))

    ref = run(comfy.samplers.calculate_sigmas(ms, "simple", args.schedule_ref_steps))
    data = data_crops(n, size, seed + 1, args.smoke)
    out = {"size": size, "samples": n, "sampler": "euler", "ref_steps": args.schedule_ref_steps,
           "ref_sw_vs_data": proxy.patch_sliced_wasserstein(ref, data), "runs": {}}
    for steps in args.schedule_steps:
        sigmas = {name: comfy.samplers.calculate_sigmas(ms, name, steps) for name in HOST_SCHEDULERS}
        sigmas["pyra_searched"] = schedules.searched_sigmas(patcher, "flux", "euler", steps, 1.0)
        for name, sig in sigmas.items():
            img = run(sig)
            out["runs"][f"{name}_{steps}"] = {
                "scheduler": name, "steps": steps, "psnr_db_vs_ref": float(proxy.psnr(img, ref).mean()),
                "ssim_vs_ref": float(proxy.ssim(img, ref).mean()),
                "worst_band_vs_ref": pi.worst(pi.band_ratios(analytic, prior, img, ref)),
                "sw_vs_data": proxy.patch_sliced_wasserstein(img, data)}
    print("schedules: " + ", ".join(f"{k} {v['psnr_db_vs_ref']:.1f} dB" for k, v in out["runs"].items()), flush=True)
    return out


def headline(section: dict) -> dict:
    runs = section.get("runs")
    if not runs:
        return {}
    head = {}
    for steps in sorted({r["steps"] for r in runs.values()}):
        at = {r["scheduler"]: r["psnr_db_vs_ref"] for r in runs.values() if r["steps"] == steps}
        head[f"schedule_psnr_db_pyra_searched_{steps}"] = at.get("pyra_searched")
        head[f"schedule_psnr_db_best_host_{steps}"] = max(v for k, v in at.items() if k != "pyra_searched")
    return head


def markdown(section: dict) -> list[str]:
    lines = [f"## Searched schedules vs the host's ({section.get('size', '')}px, {section.get('samples', '')} samples, "
             f"euler; reference: {section.get('ref_steps', '')} simple steps)", ""]
    if "runs" not in section:
        return [*lines, f"Not measured: {section.get('error') or section.get('skipped') or 'not run yet'}", ""]
    lines += ["| steps | scheduler | PSNR dB vs ref | SSIM vs ref | worst band vs ref | patch SW to data |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['steps']} | {r['scheduler']} | {r['psnr_db_vs_ref']:.2f} | {r['ssim_vs_ref']:.4f} | "
              f"{r['worst_band_vs_ref']:.3f} | {r['sw_vs_data']:.4f} |" for r in section["runs"].values()]
    return [*lines, "", f"The reference's own patch SW to data: {section['ref_sw_vs_data']:.4f}. AlignYourSteps: "
            "not run (the host has no AYS table for a flow model).", ""]
