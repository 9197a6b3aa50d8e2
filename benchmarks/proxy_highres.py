"""DiffuseHigh against the host's hires fix on the trained Flux-class proxy: a 2x image from a base sample.

A section of benchmarks/proxies.py. From the same base samples at --highres-size pixels (direct sampling, the photo
prompt, cfg 1), three ways to an image of twice the side:
- `hires_fix`: the host's two-pass recipe, as its example workflow wires it: LatentUpscaleBy (nearest-exact, 2x),
  then KSampler at --highres-denoise with fresh noise (the same steps, sampler and scheduler);
- `diffusehigh`: PyraDiffuseHigh (host.highres.highres_sample) at its node defaults (scale 2, 15 steps, denoise
  0.3, DWT structure guidance for 5 steps, sharpening 1), cfg 1 as the proxy was trained;
- `direct`: direct sampling at the doubled size from fresh noise (the full-compute output at that size; it does not
  share the base's layout, so it is compared with data, not pixel by pixel).
Each is compared with held-out photo crops of the doubled size: patch sliced-Wasserstein (lower is closer to data)
and per-band power over the data's (core.analytic.band_ratio, 8 bands; worst = max |ratio - 1|). The base image,
upscaled bicubically, is the no-work baseline (`bicubic`). PSNR / SSIM of each 2x image against the bicubic one
say how much of the base layout it kept. Times are whole runs on this device.
"""

from __future__ import annotations

import time

import torch
from _host import pack_module

DIFFUSEHIGH_DEFAULTS = {"scales": [2.0], "cfgs": [1.0], "steps": 15, "denoise": 0.3}


def highres_eval(args, patcher, codec, cond, decode, data_crops, conditioning) -> dict:
    """decode(patcher, codec, latent) -> pixels; data_crops(n, size, seed, smoke) -> photo crops;
    conditioning(cond) -> the CONDITIONING of the photo prompt (proxies.py's helpers)."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import pyramid_inconsistent as pi

    analytic, proxy, highres = pack_module("core.analytic"), pack_module("core.proxy"), pack_module("host.highres")
    prior = analytic.NaturalImagePrior()
    c = conditioning(cond)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(c, c)
    guider.set_cfg(1.0)
    ms = patcher.get_model_object("model_sampling")
    sampler = comfy.samplers.sampler_object(args.sampler)
    size, n, seed = args.highres_size, args.highres_samples, args.seed + 4
    side = size // 8
    noise = torch.randn(n, 16, side, side, generator=torch.Generator().manual_seed(seed))
    base = guider.sample(noise, torch.zeros_like(noise), sampler,
                         comfy.samplers.calculate_sigmas(ms, args.scheduler, args.steps).cpu(), seed=seed,
                         disable_pbar=True)
    base_img = decode(patcher, codec, base)
    big = 2 * size
    data = data_crops(n, big, seed + 1, args.smoke)
    bicubic = torch.nn.functional.interpolate(base_img, size=(big, big), mode="bicubic").clamp(-1.5, 1.5)
    images, seconds = {"bicubic": bicubic}, {}

    def timed(name, run):
        t0 = time.perf_counter()
        images[name] = decode(patcher, codec, run())
        if images[name].is_cuda:
            torch.cuda.synchronize()
        seconds[name] = round(time.perf_counter() - t0, 2)

    def hires_fix():
        up = comfy.utils.common_upscale(base, 2 * side, 2 * side, "nearest-exact", "disabled")
        sigmas = highres.stage_sigmas(ms, args.scheduler, args.steps, args.highres_denoise)
        fresh = comfy.sample.prepare_noise(up, seed + 2)
        return guider.sample(fresh, up, sampler, sigmas, seed=seed + 2, disable_pbar=True)

    def diffusehigh():
        settings = highres.HighResSettings(**DIFFUSEHIGH_DEFAULTS, sampler_name=args.sampler,
                                           scheduler=args.scheduler)
        return highres.highres_sample(patcher, c, c, {"samples": base}, seed + 2, settings, disable_pbar=True)

    def direct():
        fresh = torch.randn(n, 16, 2 * side, 2 * side, generator=torch.Generator().manual_seed(seed + 3))
        return guider.sample(fresh, torch.zeros_like(fresh), sampler,
                             comfy.samplers.calculate_sigmas(ms, args.scheduler, args.steps).cpu(), seed=seed + 3,
                             disable_pbar=True)

    timed("hires_fix", hires_fix)
    timed("diffusehigh", diffusehigh)
    timed("direct", direct)
    out = {"base_size": size, "size": big, "samples": n, "steps": args.steps, "hires_denoise": args.highres_denoise,
           "diffusehigh": DIFFUSEHIGH_DEFAULTS, "seconds": seconds, "runs": {}}
    for name, img in images.items():
        bands = pi.band_ratios(analytic, prior, img, data)
        out["runs"][name] = {"sw_vs_data": proxy.patch_sliced_wasserstein(img, data), "bands_vs_data": bands,
                             "worst_band_vs_data": pi.worst(bands),
                             "psnr_db_vs_bicubic": float(proxy.psnr(img, bicubic).mean()),
                             "ssim_vs_bicubic": float(proxy.ssim(img, bicubic).mean())}
    print("highres: " + ", ".join(f"{k} SW {v['sw_vs_data']:.4f} worst band {v['worst_band_vs_data']:.2f}"
                                  for k, v in out["runs"].items()), flush=True)
    return out


def headline(section: dict) -> dict:
    runs = section.get("runs")
    if not runs:
        return {}
    return {f"highres_sw_vs_data_{k}": r["sw_vs_data"] for k, r in runs.items()}


def markdown(section: dict) -> list[str]:
    lines = [f"## DiffuseHigh vs the host's hires fix ({section.get('base_size', '')}px base to "
             f"{section.get('size', '')}px, {section.get('samples', '')} samples)", ""]
    if "runs" not in section:
        return [*lines, f"Not measured: {section.get('error') or section.get('skipped') or 'not run yet'}", ""]
    lines += ["| output | patch SW to data | worst band vs data | PSNR dB vs bicubic | SSIM vs bicubic | seconds |",
              "|---|---|---|---|---|---|"]
    for name, r in section["runs"].items():
        same = name == "bicubic"   # the reference itself: no PSNR / SSIM to report
        lines.append(f"| {name} | {r['sw_vs_data']:.4f} | {r['worst_band_vs_data']:.3f} | "
                     f"{'-' if same else format(r['psnr_db_vs_bicubic'], '.2f')} | "
                     f"{'-' if same else format(r['ssim_vs_bicubic'], '.4f')} | {section['seconds'].get(name, '-')} |")
    return [*lines, "", f"hires fix: nearest-exact latent 2x, then denoise {section['hires_denoise']}; DiffuseHigh: "
            f"{section['diffusehigh']}. SW: patch sliced-Wasserstein to held-out photo crops (lower is closer).", ""]
