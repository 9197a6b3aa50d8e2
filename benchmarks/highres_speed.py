"""Structure-guided high resolution vs the host's hires fix: time per stage on a real-size SDXL (GPU).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/highres_speed.py --json OUT.json

One 2x stage from a 1024x1024 base to 2048x2048, 15 steps (denoise 0.3, DiffuseHigh's 15 of 50), euler, CFG 5,
on the SDXL UNet and the SD KL VAE with random bf16 weights (speed does not depend on the values):
- the host's hires fix: `LatentUpscale` (bicubic) then `KSampler` at denoise 0.3 (comfy.sample.sample);
- Pyra latent guidance (the default): the low wavelet band swapped on the latent for the first 5 steps;
- Pyra pixel guidance: the swap on decoded pixels, so 5 VAE decodes and encodes at 2048x2048;
- Pyra latent guidance with pixel upscaling (one decode, two encodes).
Median of `--repeats` runs after one warm-up; the final VAE decode (the same for every method) is timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _host import device_info, import_host, pack_module, write_report
from progressive_speed import build, timed

SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def build_vae():
    """The host's VAE around a random-weight SD/SDXL KL autoencoder (detected from its keys like a real file)."""
    import comfy.ldm.models.autoencoder
    import comfy.sd
    import torch

    torch.manual_seed(0)
    ae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    return comfy.sd.VAE(sd=ae.state_dict())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=1024, help="base size in pixels")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host()
    import comfy.sample
    import comfy.utils
    import torch

    highres = pack_module("host.highres")
    device = torch.device("cuda")
    patcher, cond, cfg, _, channels = build("sdxl", device)
    vae = build_vae()
    side = args.base // 8
    base = torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(1))
    latent = {"samples": base}

    def hires_fix():
        up = comfy.utils.common_upscale(base, 2 * side, 2 * side, "bicubic", "disabled")
        noise = comfy.sample.prepare_noise(up, 0)
        return comfy.sample.sample(patcher, noise, args.steps, cfg, "euler", "normal", cond, cond, up,
                                   denoise=0.3, disable_pbar=True, seed=0)

    def pyra(**kw):
        s = highres.HighResSettings(scales=[2.0], cfgs=[cfg], steps=args.steps, denoise=0.3, sampler_name="euler",
                                    scheduler="normal", guidance_steps=5, **kw)
        return lambda: highres.highres_sample(patcher, cond, cond, latent, 0, s, vae=vae, disable_pbar=True)

    methods = {
        "host hires fix (LatentUpscale + KSampler)": hires_fix,
        "Pyra, latent guidance": pyra(),
        "Pyra, pixel guidance": pyra(guidance_mode="pixel"),
        "Pyra, latent guidance, pixel upscale": pyra(upscale_method="pixels"),
    }
    results = {}
    for name, fn in methods.items():
        fn()
        times = timed(fn, args.repeats)
        results[name] = {"seconds": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}
        print(name, results[name], flush=True)
    out = hires_fix()
    decode = timed(lambda: vae.decode(out), 2)
    hires = results["host hires fix (LatentUpscale + KSampler)"]["seconds"]
    for r in results.values():
        r["vs_hires_fix"] = round(r["seconds"] / hires, 3)
    report = {"meta": {**device_info(), "base": args.base, "target": 2 * args.base, "steps": args.steps,
                       "command": "python3 benchmarks/highres_speed.py " + " ".join(sys.argv[1:])},
              "stage_seconds": results, "final_vae_decode_seconds": round(min(decode), 3),
              "highres_latent_vs_hires_fix": results["Pyra, latent guidance"]["vs_hires_fix"],
              "highres_pixel_vs_hires_fix": results["Pyra, pixel guidance"]["vs_hires_fix"]}
    lines = [f"# One 2x stage, {args.base}² -> {2 * args.base}², SDXL bf16, {args.steps} steps, "
             f"{report['meta'].get('gpu', 'GPU')}", "", f"`{report['meta']['command']}`", "",
             "| method | seconds per stage | vs hires fix |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.2f} | {v['vs_hires_fix']:.2f}x |" for k, v in results.items()]
    lines += ["", f"Final VAE decode at {2 * args.base}² (the same for all): {report['final_vae_decode_seconds']} s."]
    table = "\n".join(lines) + "\n"
    write_report(args.json, report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
