"""Train the Flux-class proxy and measure Pyra against direct sampling and the host's caches on it (issue 19).

    source benchmarks/device_env.sh; python3 benchmarks/proxies.py --out $OUT --train-seconds 300   # H200, one run
    $(python3 tools/host.py python) benchmarks/proxies.py --smoke --out /tmp/proxies                # CPU smoke run
    source benchmarks/device_env.sh; python3 benchmarks/proxies.py --out $OUT --codec vae --vae-seconds 150 \
        --train-seconds 240 --sections pyramid,cache --json proxies-vae.json              # the proxy in a VAE latent

1. Training: benchmarks/proxy_train.py (checkpoint, codec, loss curve under --out). --from DIR skips it and
   evaluates the files a previous run left in DIR. `--codec vae` (benchmarks/proxy_vae.py) first trains the host's
   AutoencoderKL for --vae-seconds and puts the DiT in its standardised latent; the VAE file is loaded by the host
   (the stock VAELoader's path where its detection builds the layout, recorded), every image below is decoded
   through it as VAEDecode does, and its reconstruction PSNR and pooling-commutation error head the report. The
   file then leaves --out (for the device's 8 returned files) unless --vae-return.
2. Loading: the checkpoint goes through the stock loader (comfy.sd.load_diffusion_model, what UNETLoader calls);
   the detected model config class and the largest difference to the trained weights are recorded, and every
   evaluation runs on the loaded model.
3. Pyramid: at each --pyramid-sizes pixel size, --samples images of the photo prompt, direct sampling and Pyra's
   pyramid (host.pyramid.pyramid_sample, ladders a "2:0.4" and b "4:0.35, 2:0.25", as the nodes run it; plus the
   Flux-shift level scale (Flux's mu rule on this image's token counts, (size / 16)^2 at full size) and a 3-step
   corrective re-noise from benchmarks/pyramid_inconsistent.py's loop) from the same noise, --sampler /
   --scheduler / --steps. Decoded to pixels by the codec, compared per radial band exactly as the analytic
   benchmarks compare (core.analytic.band_ratio, luminance, 8 log-spaced bands, the natural-image
   prior as the per-mode weight): worst = max |pyramid / direct - 1| over bands; PSNR and SSIM against the direct
   image of the same noise. `direct_vs_data`: direct samples' band power over that of real photo crops of the size
   (how well the proxy learned the spectrum).
4. Step cache: benchmarks/step_cache.bench_model on the proxy at --cache-size (batch 1, euler, 30 steps): ours at
   the most reuse whose final-latent deviation stays within EasyCache's (threshold 0.2) on the same run, speed by
   wall time (fastest of --cache-repeats interleaved rounds); EasyCache and LazyCache beside it. Where the host's
   EasyCache cannot be imported the section records why and the headline is absent.
5. 2:4: host.sparsify.sparsify_model on every Linear (speed check off, so every layer is pruned): magnitude,
   Wanda, Wanda + rank-64 and magnitude + rank-64 correction; SSIM / PSNR of the decoded images against the dense
   model's from the same noise at --sparse-size.
6. Block-sparse attention (benchmarks/proxy_attention.py), DiffuseHigh against the host's hires fix
   (benchmarks/proxy_highres.py), searched schedules against the host's (benchmarks/proxy_schedules.py).
Sections run in the issue's priority (pyramid, cache, 2:4, attention, high-res, schedules); each is recorded as an error
where it fails, skipped after --deadline, and the report is rewritten after each. A checkpoint over --split-mb
comes back in byte parts.
Headline keys (benchmarks/results/proxies-h200.json): pyramid_worst_band_vs_direct_b_flux_proxy (at the largest
pyramid size), cache_speedup_flux_proxy_at_easycache_deviation.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
from _host import host_info, import_host, pack_module, write_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_attention
import proxy_highres
import proxy_schedules
import proxy_train
import proxy_vae

LADDERS = {"a": "2:0.4", "b": "4:0.35, 2:0.25"}
N_BANDS = 8


def load_proxy(out: Path) -> tuple:
    """(patcher from the stock loader, codec, conditioning tensors, load record). The codec: the patch codec, or
    (--codec vae runs) the VAE file loaded by the host (proxy_vae.HostVAE; its load recorded under 'vae')."""
    import comfy.sd
    from safetensors import safe_open
    from safetensors.torch import load_file

    proxy = pack_module("core.proxy")
    ckpt = out / "flux-proxy.safetensors"
    patcher = comfy.sd.load_diffusion_model(str(ckpt))
    saved = load_file(str(ckpt))
    loaded = patcher.model.diffusion_model.state_dict()
    try:
        diff = max(float((loaded[k].float().cpu() - v.float()).abs().max()) for k, v in saved.items() if k in loaded)
    except Exception as e:  # weights a memory mode keeps elsewhere: recorded, not fatal
        diff = f"not compared: {type(e).__name__}: {e}"
    extra = load_file(str(out / "flux-proxy-codec.safetensors"))
    with safe_open(str(out / "flux-proxy-codec.safetensors"), "pt") as f:
        meta = f.metadata() or {}
    vae_record = None
    if meta.get("codec") == "vae":
        path = out / meta["vae_file"]
        codec, vae_record = proxy_vae.load(path if path.is_file() else KEEP / path.name, json.loads(meta["vae_config"]))
    else:
        codec = proxy.PatchPCACodec.from_state_dict({k[6:]: v for k, v in extra.items() if k.startswith("codec.")})
    cond = {k[5:]: v for k, v in extra.items() if k.startswith("cond.")}
    record = {"loader": "comfy.sd.load_diffusion_model (UNETLoader)",
              "detected_config": type(patcher.model.model_config).__name__,
              "model_type": str(patcher.model.model_type), "weight_dtype": str(next(iter(saved.values())).dtype),
              "keys_missing_after_load": sorted(set(saved) - set(loaded))[:5], "max_abs_diff_to_file": diff,
              "model_sampling": type(patcher.get_model_object("model_sampling")).__name__}
    if vae_record is not None:
        record["vae"] = vae_record
    return patcher, codec, cond, record


KEEP = Path("/tmp/pyra-proxy")


def split_checkpoint(out: Path, limit_mib: float, keep: Path = KEEP, name: str = "flux-proxy.safetensors") -> dict:
    """Where the checkpoint `name` is larger than `limit_mib` (what one returned file may hold), replace it in `out`
    by byte-range parts `flux-proxy.safetensors.part0`, ... (`cat` them back in order) and record their sha256 and
    the whole file's; the whole file moves to `keep`."""
    import hashlib
    import shutil

    ckpt = out / name
    data = ckpt.read_bytes()
    record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    limit = int(limit_mib * 2**20)
    if not limit or len(data) <= limit:
        record["parts"] = [ckpt.name]
        return record
    record["parts"] = []
    for i in range(0, len(data), limit):
        part = out / f"{ckpt.name}.part{i // limit}"
        part.write_bytes(data[i: i + limit])
        record["parts"].append(part.name)
    keep.mkdir(parents=True, exist_ok=True)
    shutil.move(str(ckpt), str(keep / ckpt.name))
    record["rejoin"] = f"cat {' '.join(record['parts'])} > {ckpt.name}  # then check the sha256"
    return record


def conditioning(cond: dict, cls: int = 0) -> list:
    """The host CONDITIONING of one proxy class: its text token and pooled vector, Flux's default guidance."""
    return [[cond["context"][cls: cls + 1].clone(), {"pooled_output": cond["pooled"][cls: cls + 1].clone(),
                                                      "guidance": 3.5}]]


def metric_device() -> torch.device:
    """Where decoded images and their band / SSIM statistics are computed (the GPU where there is one)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def move_off(out: Path, name: str, keep: Path = KEEP) -> dict:
    """Move `name` from `out` to `keep` (so that it does not come back with the results); its sha256 and size."""
    import hashlib
    import shutil

    data = (out / name).read_bytes()
    keep.mkdir(parents=True, exist_ok=True)
    shutil.move(str(out / name), str(keep / name))
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "moved_to": str(keep / name),
            "parts": []}


def decode(patcher, codec, latent: torch.Tensor) -> torch.Tensor:
    """A sampled latent (VAE space, as guider.sample returns it) -> pixels (B, 3, H, W) through the codec; a VAE
    (proxy_vae.HostVAE) decodes it as VAEDecode does (the host's vae.decode, clamped to [-1, 1] there)."""
    dev = metric_device()
    if hasattr(codec, "decode_latent"):
        return codec.decode_latent(latent).to(dev).clamp(-1.5, 1.5)
    z = patcher.model.process_latent_in(latent.float().to(dev))
    return codec.to(dev).decode(z).clamp(-1.5, 1.5)


_BANK = {}


def data_crops(n: int, size: int, seed: int, smoke: bool) -> torch.Tensor:
    """n photo crops (the training distribution's photo half) of `size` pixels, on the CPU."""
    if "photos" not in _BANK:
        _BANK["photos"] = pack_module("core.proxy").ImageBank(proxy_train.photographs(smoke)[0], "cpu")
    return _BANK["photos"].crops(n, size, torch.Generator().manual_seed(seed)).to(metric_device())


VARIANTS = ("default", "flux_shift", "renoise3", "scale_calibrated", "channel_renorm", "topup")


def variant(name: str, guider, noise, sampler, sigmas, levels, seed: int, scales: dict) -> torch.Tensor:
    """default: the node's pyramid_sample; flux_shift / scale_calibrated / renoise3 / channel_renorm:
    pyramid_inconsistent's loop with the level scales of Flux's shift rule / measured from direct batches at each
    level size (`scales`, by variant) / a corrective re-noise 3 steps back at each lift / the lifted state
    renormalised per latent channel to the direct batches' channel stds at each size (`scales["channel_renorm"]`);
    topup: the detail top-up at each lift (core/samplers/pyramid.py `detail_topup`), one more evaluation per lift."""
    import pyramid_inconsistent as pi

    if name == "default":
        return pack_module("host.pyramid").pyramid_sample(guider, noise, torch.zeros_like(noise), sampler, sigmas,
                                                          levels, seed=seed, disable_pbar=True)
    if name == "channel_renorm":
        return pi.pyramid(guider, noise, sampler, sigmas, levels, seed, channel_stds=scales[name])
    if name == "topup":
        return pi.pyramid(guider, noise, sampler, sigmas, levels, seed, topup=True)
    if name in scales:
        return pi.pyramid(guider, noise, sampler, sigmas, levels, seed, scales=scales[name])
    return pi.pyramid(guider, noise, sampler, sigmas, levels, seed, renoise_steps=3)


def latent_std(latent: torch.Tensor) -> float:
    """The std of a batch of latents over every value (the level scale's measure on a trained latent model)."""
    return float(latent.double().std())


def pyramid_eval(args, patcher, codec, cond) -> dict:
    import comfy.samplers

    analytic, proxy = pack_module("core.analytic"), pack_module("core.proxy")
    pyr = pack_module("core.samplers.pyramid")
    import pyramid_inconsistent as pi

    prior = analytic.NaturalImagePrior()
    guider = comfy.samplers.CFGGuider(patcher)
    c = conditioning(cond)
    guider.set_conds(c, c)
    guider.set_cfg(1.0)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), args.scheduler,
                                             args.steps).cpu()
    sampler = comfy.samplers.sampler_object(args.sampler)
    out = {}
    for size in args.pyramid_sizes:
        side = size // 8
        noise = torch.randn(args.samples, 16, side, side, generator=torch.Generator().manual_seed(args.seed))
        zeros = torch.zeros_like(noise)
        t0 = time.perf_counter()
        direct = decode(patcher, codec, guider.sample(noise, zeros, sampler, sigmas, seed=args.seed,
                                                      disable_pbar=True))
        res = {"seconds": {"direct": round(time.perf_counter() - t0, 2)}, "bands": {}, "psnr_db": {}, "ssim": {},
               "samples": {}}
        data = data_crops(args.samples, size, args.seed + 1, args.smoke)
        res["bands"]["direct_vs_data"] = pi.band_ratios(analytic, prior, direct, data)
        res["sw_vs_data"] = {"direct": proxy.patch_sliced_wasserstein(direct, data)}
        scales = {"flux_shift": pi.flux_shift_scales(size // 4, (2, 4)),  # its argument / 4: the token side
                  "scale_calibrated": pi.calibrate(guider, sampler, lambda: sigmas, noise, args.seed + 1, (2, 4),
                                                   measure=latent_std),
                  "channel_renorm": pi.calibrate_channels(guider, sampler, lambda: sigmas, noise, args.seed + 1,
                                                          (2, 4))}
        res["scales"] = {k: ({f: v.tolist() for f, v in d.items()} if k == "channel_renorm" else d)
                         for k, d in scales.items()}
        for key, ladder in LADDERS.items():
            levels = pyr.parse_ladder(ladder)
            if size == args.pyramid_sizes[0]:  # the variants' loop, options off, is the node's (a Flux latent format)
                node = variant("default", guider, noise, sampler, sigmas, levels, args.seed, scales)
                own = pi.pyramid(guider, noise, sampler, sigmas, levels, args.seed)
                res.setdefault("loop_equals_node_max_abs_diff", {})[key] = float((own - node).abs().max())
            for name in VARIANTS:
                t0 = time.perf_counter()
                img = decode(patcher, codec, variant(name, guider, noise, sampler, sigmas, levels, args.seed, scales))
                tag = f"{key}_{name}"
                res["seconds"][tag] = round(time.perf_counter() - t0, 2)
                res["bands"][tag] = pi.band_ratios(analytic, prior, img, direct)
                res["psnr_db"][tag] = float(proxy.psnr(img, direct).mean())
                res["ssim"][tag] = float(proxy.ssim(img, direct).mean())
                res["sw_vs_data"][tag] = proxy.patch_sliced_wasserstein(img, data)
                if name == "default":
                    res["samples"][key] = img[:4].cpu()
        res["samples"]["direct"], res["samples"]["data"] = direct[:4].cpu(), data[:4].cpu()
        res["worst"] = {k: pi.worst(v) for k, v in res["bands"].items()}
        print(f"pyramid {size}px: " + ", ".join(f"{k} {v:.3f}" for k, v in res["worst"].items()), flush=True)
        out[size] = res
    return out


SPARSE24 = {"magnitude": ("magnitude", 0), "wanda": ("wanda", 0), "wanda_r64": ("wanda", 64),
            "magnitude_r64": ("magnitude", 64)}


def sampler_of(args, patcher, codec, cond):
    """sample(model, noise) -> decoded images of one run of `model` (the proxy or a patched clone of it): class 0's
    conditioning, cfg 1, --sampler / --scheduler / --steps, the same seed for every model."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), args.scheduler,
                                             args.steps).cpu()
    sampler = comfy.samplers.sampler_object(args.sampler)

    def sample(model, noise):
        guider = comfy.samplers.CFGGuider(model)
        c = conditioning(cond)
        guider.set_conds(c, c)
        guider.set_cfg(1.0)
        return decode(patcher, codec, guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, seed=args.seed,
                                                    disable_pbar=True))
    return sample


def sparse24_eval(args, patcher, codec, cond) -> dict:
    """host.sparsify.sparsify_model (every Linear, the speed check off so that every layer is pruned) against the
    dense model: the same noise and seed at --sparse-size, SSIM / PSNR of the decoded images to the dense ones."""
    proxy, sparsify = pack_module("core.proxy"), pack_module("host.sparsify")
    side = args.sparse_size // 8
    noise = torch.randn(args.sparse_samples, 16, side, side, generator=torch.Generator().manual_seed(args.seed + 2))
    sample = sampler_of(args, patcher, codec, cond)
    dense = sample(patcher, noise)
    out = {"size": args.sparse_size, "samples": args.sparse_samples, "runs": {}}
    for name, (score, rank) in SPARSE24.items():
        model, results = sparsify.sparsify_model(patcher, "all", rank=rank, check_tokens=0, score=score)
        img = sample(model, noise)
        out["runs"][name] = {"ssim": float(proxy.ssim(img, dense).mean()),
                             "psnr_db": float(proxy.psnr(img, dense).mean()),
                             "layers_sparse": sum(r.status == "sparse" for r in results), "layers": len(results)}
        del model
    print("sparse24: " + ", ".join(f"{k} SSIM {v['ssim']:.4f}" for k, v in out["runs"].items()), flush=True)
    return out


def cache_eval(args, patcher, cond, device) -> dict:
    """step_cache.bench_model on the proxy; {'skipped': reason} where the host's EasyCache cannot be imported."""
    import step_cache

    try:
        step_cache._import_easycache()
    except Exception as e:  # the device bundle may lack comfy_api's imports (PyAV)
        return {"skipped": f"the host's EasyCache did not import: {type(e).__name__}: {e}"}
    side = args.cache_size // 8
    built = (patcher, conditioning(cond), 1.0, "simple", (1, 16, side, side))
    result = step_cache.bench_model("flux", device, args.cache_steps, args.cache_repeats, args.search_runs,
                                    built=built)
    runs = result["runs"]
    summary = {name: {k: row.get(k) for k in ("threshold", "computed", "reused", "deviation", "speedup",
                                              "speedup_median")} for name, row in runs.items()}
    return {"size": args.cache_size, "steps": args.cache_steps, "summary": summary, "detail": result}


def save_samples(path: Path, pyramid: dict, latent: str = "") -> str | None:
    """A PNG grid per pyramid size: rows data crops, direct, ladder a, ladder b (first 4 samples); `latent` goes
    into the title after the model's name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    size = max(pyramid)
    rows = ["data", "direct", "a", "b"]
    samples = pyramid[size]["samples"]
    cols = min(len(samples[r]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.2 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(cols):
            ax = axes[i][j]
            ax.imshow(((samples[r][j].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel({"a": "ladder a", "b": "ladder b"}.get(r, r))
    fig.suptitle(f"Flux-class proxy{latent}, {size}px: photo crops, direct, pyramid (same noise)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def markdown(report: dict) -> str:
    t = report["training"]
    lines = [f"# Flux-class proxy: pyramid and step cache ({report['device']}, {report['date']})", "",
             f"Command: `{report['command']}`", "",
             f"Model: the host's Flux class, {t['parameters'] / 1e6:.2f}M parameters ({t['config']['depth']} double, "
             f"{t['config']['depth_single_blocks']} single blocks, hidden {t['config']['hidden_size']}), trained "
             f"{t['steps']} steps / {t['train_seconds']} s on {t['images_seen']} crops at {t['resolutions']} px "
             f"({t['photos']['count']} photos: {t['photos']['source']}; {t['dead_leaves']['count']} dead-leaves "
             f"images). Latent: {t['codec']['kind']} (reconstruction PSNR {t['codec']['reconstruction_psnr_db']}). "
             f"Loaded through {report['load']['loader']} as {report['load']['detected_config']} "
             f"(max |loaded - file| {report['load']['max_abs_diff_to_file']}).", ""]
    if "vae" in t:
        lines += vae_lines(t["vae"], report["load"].get("vae", {}))
    for key in ("error", "skipped"):
        if key in report.get("pyramid", {}):
            lines += [f"## Pyramid vs direct: not measured: {report['pyramid'][key]}", ""]
    for size, res in sizes_of(report.get("pyramid", {})).items():
        lines += [f"## Pyramid vs direct, {size}px ({report['config']['samples']} samples, "
                  f"{report['config']['sampler']} {report['config']['steps']} steps {report['config']['scheduler']})",
                  "", "| run | " + " | ".join(f"band {i}" for i in range(N_BANDS))
                  + " | worst | PSNR dB | SSIM | patch SW to data |", "|---" * (N_BANDS + 5) + "|"]
        sw = res.get("sw_vs_data", {})
        for tag, (ratio, err) in res["bands"].items():
            cells = " | ".join(f"{r:.3f} ± {e:.3f}" for r, e in zip(ratio, err, strict=True))
            ps, ss = res["psnr_db"].get(tag), res["ssim"].get(tag)
            d = sw.get("direct" if tag == "direct_vs_data" else tag)
            lines.append(f"| {tag} | {cells} | {res['worst'][tag]:.3f} | {'' if ps is None else f'{ps:.2f}'} | "
                         f"{'' if ss is None else f'{ss:.4f}'} | {'' if d is None else f'{d:.4f}'} |")
        if "loop_equals_node_max_abs_diff" in res:
            lines += ["", "The variants' own loop with every option off against the node's pyramid_sample, max |diff| "
                      "of the latents: " + ", ".join(f"ladder {k} {v:.1e}"
                                                     for k, v in res["loop_equals_node_max_abs_diff"].items())]
        lines.append("")
    sparse = report.get("sparse24", {})
    lines += [f"## 2:4 sparsity vs dense ({sparse.get('size', '')}px, {sparse.get('samples', '')} samples, every "
              "Linear pruned)", ""]
    if "runs" in sparse:
        lines += ["| run | SSIM | PSNR dB | layers pruned |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['ssim']:.4f} | {v['psnr_db']:.2f} | {v['layers_sparse']} / {v['layers']} |"
                  for k, v in sparse["runs"].items()]
    else:
        lines.append(f"Not measured: {sparse.get('error') or sparse.get('skipped') or 'not run yet'}")
    lines.append("")
    lines += proxy_attention.markdown(report.get("attention", {}))
    lines += proxy_highres.markdown(report.get("highres", {}))
    lines += proxy_schedules.markdown(report.get("schedules", {}))
    cache = report.get("cache", {"skipped": "not run yet"})
    lines += [f"## Step cache ({cache.get('size', '')}px, {cache.get('steps', '')} steps)", ""]
    if "skipped" in cache or "error" in cache:
        lines += [f"Not measured: {cache.get('skipped') or cache.get('error')}", ""]
    else:
        lines += ["| run | threshold | computed | reused | deviation | speedup | speedup, medians |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in cache["summary"].items():
            th = "" if row["threshold"] is None else f"{row['threshold']:.4g}"
            lines.append(f"| {name} | {th} | {row['computed']} | {row['reused']} | {row['deviation']:.4f} | "
                         f"{row.get('speedup') or 1:.2f}x | {row.get('speedup_median') or 1:.2f}x |")
        lines.append("")
    lines += ["Headline: " + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                                       for k, v in report["headline"].items()), ""]
    return "\n".join(lines)


def vae_lines(vae: dict, load: dict) -> list[str]:
    """--codec vae: the VAE's training, reconstruction, pooling commutation and load, for the report."""
    pool = vae["pooling"]
    cells = lambda d: ", ".join(f"{f}x{f} {r['relative_error']:.3f}" for f, r in d.items())  # noqa: E731
    bands = ", ".join(f"{r:.2f}" for r in vae["bands_vs_input"]["photo"][0])
    check = load.get("file_check", {})
    lines = [f"VAE (the proxy's latent): the host's {vae['kind']}, {vae['parameters'] / 1e6:.2f}M parameters "
             f"(encoder {vae['encoder_parameters'] / 1e6:.2f}M, decoder {vae['decoder_parameters'] / 1e6:.2f}M), "
             f"trained first: {vae['steps']} steps / {vae['train_seconds']} s, {vae['batch']} crops of "
             f"{vae['crop_size']} px per step ({vae['data']}), loss {vae['loss']}. Held-out reconstruction "
             + ", ".join(f"{k} {v:.2f} dB" for k, v in vae["reconstruction_psnr_db"].items())
             + f" ({vae['eval_samples']} crops of {vae['eval_size']} px; a patch codec fitted to the same photo "
             f"crops: {vae['patch_codec_same_crops_psnr_db']:.2f} dB); photo band power over the input's, low to "
             f"high: {bands}.", "",
             f"Pooling commutation |pool(E(x)) - E(pool(x))| / |E(pool(x))| on the held-out photo crops: "
             f"standardised latent (the DiT's) {cells(pool['standardised'])}; raw posterior mean "
             f"{cells(pool['raw_mean'])}; patch codec on the same crops {cells(pool['patch_codec_same_crops'])}.", ""]
    if load:
        lines += [f"VAE file {load.get('file')}: {load.get('loader')}"
                  + (f"; stock VAELoader {load['stock_vaeloader']}" if "stock_vaeloader" in load else "")
                  + f"; max |loaded - file| {load.get('max_abs_diff_to_file')}"
                  + (f"; VAEEncode -> VAEDecode through it {check['psnr_db']:.2f} dB on {check['crops']} photo "
                     f"crops of {check['size']} px" if check else "") + ". Every image below is decoded through it.",
                  ""]
    return lines


def sizes_of(pyramid: dict) -> dict:
    """The per-size results of the pyramid section ({} where it failed or was skipped)."""
    return {k: v for k, v in pyramid.items() if isinstance(k, int)}


SECTIONS = ["pyramid", "cache", "sparse24", "attention", "highres", "schedules"]
ANALYTIC = Path(__file__).parent / "results" / "pyramid-inconsistent-cpu.json"


def analytic_inconsistent(path: Path = ANALYTIC) -> dict:
    """The issue's analytic key from the committed run of benchmarks/pyramid_inconsistent.py (CPU, its own command):
    ladder b's worst band against direct on the inconsistent family, flow, as the node runs it and at the best of
    that benchmark's variants (which are not on the node), with the file it comes from."""
    import pyramid_inconsistent as pi

    if not path.is_file():
        return {}
    bands = json.loads(path.read_text())["results"]["inconsistent/flow"]["bands"]
    b = {k[2:]: pi.worst(v) for k, v in bands.items() if k.startswith("b_")}
    best = min(b, key=b.get)
    return {"pyramid_worst_band_vs_direct_b_analytic_inconsistent": b["default"],
            f"pyramid_worst_band_vs_direct_b_analytic_inconsistent_{best}": b[best],
            "pyramid_analytic_inconsistent_source": f"benchmarks/results/{path.name}"}


def headline(report: dict) -> dict:
    head = analytic_inconsistent()
    vae = report.get("training", {}).get("vae")
    if vae:  # --codec vae: which latent the proxy keys below come from, and how it pools
        head["proxy_codec"] = vae["kind"]
        for k, v in vae["reconstruction_psnr_db"].items():
            head[f"vae_reconstruction_psnr_db_{k}"] = v
        for f, r in vae["pooling"]["standardised"].items():
            head[f"vae_pooling_relative_error_{f}x{f}"] = r["relative_error"]
        for f, r in vae["pooling"]["patch_codec_same_crops"].items():
            head[f"patch_codec_pooling_relative_error_{f}x{f}"] = r["relative_error"]
    pyramid = sizes_of(report.get("pyramid", {}))
    if pyramid:
        largest = pyramid[max(pyramid)]
        head["pyramid_worst_band_vs_direct_b_flux_proxy"] = largest["worst"]["b_default"]
        head["pyramid_worst_band_vs_direct_a_flux_proxy"] = largest["worst"]["a_default"]
        for size, res in pyramid.items():
            for tag in ("a_default", "b_default", "b_flux_shift", "b_renoise3"):
                head[f"pyramid_worst_band_vs_direct_{tag}_flux_proxy_{size}px"] = res["worst"][tag]
    sparse = report.get("sparse24", {}).get("runs")
    if sparse:
        for name, row in sparse.items():
            head[f"sparse24_ssim_{name}"] = row["ssim"]
    head.update(proxy_attention.headline(report.get("attention", {})))
    head.update(proxy_highres.headline(report.get("highres", {})))
    head.update(proxy_schedules.headline(report.get("schedules", {})))
    summary = report.get("cache", {}).get("summary")
    if summary:
        head["cache_speedup_flux_proxy_at_easycache_deviation"] = summary["ours_deviation_matched"]["speedup"]
        head["easycache_speedup_flux_proxy"] = summary["easycache"]["speedup"]
        head["easycache_deviation_flux_proxy"] = summary["easycache"]["deviation"]
        head["cache_deviation_flux_proxy_at_easycache_deviation"] = summary["ours_deviation_matched"]["deviation"]
    return head


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    proxy_train.add_args(ap)
    ap.add_argument("--from", dest="from_dir", type=Path, help="evaluate the files in DIR instead of training")
    ap.add_argument("--json", default="proxies-h200.json", help="results file name under --out")
    ap.add_argument("--pyramid-sizes", default="512,1024", help="pixel sizes, comma-separated")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--scheduler", default="simple")
    ap.add_argument("--cache-size", type=int, default=1024)
    ap.add_argument("--cache-steps", type=int, default=30)
    ap.add_argument("--cache-repeats", type=int, default=3)
    ap.add_argument("--search-runs", type=int, default=6)
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--sections", type=lambda v: v.split(","), default=SECTIONS,
                    help=f"comma-separated, of {','.join(SECTIONS)}")
    ap.add_argument("--split-mb", type=float, default=15.0,
                    help="split a checkpoint larger than this many MiB into parts (0: never)")
    ap.add_argument("--deadline", type=float, default=420.0,
                    help="seconds since start after which the remaining sections are skipped (recorded)")
    ap.add_argument("--sparse-size", type=int, default=512)
    ap.add_argument("--sparse-samples", type=int, default=8)
    ap.add_argument("--attn-size", type=int, default=1024, help="sparse attention: pixel size (the largest proxy size)")
    ap.add_argument("--attn-samples", type=int, default=4)
    ap.add_argument("--attn-block", type=int, default=128, choices=(64, 128))
    ap.add_argument("--highres-size", type=int, default=512, help="high-res: base pixel size (output: twice)")
    ap.add_argument("--highres-samples", type=int, default=4)
    ap.add_argument("--highres-denoise", type=float, default=0.5, help="the hires fix's second-pass denoise")
    ap.add_argument("--schedule-size", type=int, default=512)
    ap.add_argument("--schedule-samples", type=int, default=4)
    ap.add_argument("--schedule-steps", type=lambda v: [int(x) for x in v.split(",")], default=[6, 10])
    ap.add_argument("--schedule-ref-steps", type=int, default=64)
    args = ap.parse_args()
    proxy_train.finish_args(args)
    if args.smoke:
        args.pyramid_sizes, args.samples, args.steps = "128", 2, 6
        args.cache_size, args.cache_steps, args.cache_repeats, args.search_runs = 64, 6, 1, 2
        args.sparse_size, args.sparse_samples = 64, 2
        args.attn_size, args.attn_samples, args.attn_block = 512, 1, 64
        args.highres_size, args.highres_samples = 64, 1
        args.schedule_size, args.schedule_samples, args.schedule_steps, args.schedule_ref_steps = 64, 1, [4], 8
    args.pyramid_sizes = [int(s) for s in str(args.pyramid_sizes).split(",")]
    return args


def main() -> int:
    args = parse()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    import_host(cpu=device.type == "cpu")
    t_start = time.perf_counter()
    out = Path(args.out)
    if args.from_dir:
        training = json.loads((args.from_dir / "proxy-loss.json").read_text())["record"]
        out = args.from_dir
    else:
        training = proxy_train.train(args, device)
    print(json.dumps(training), flush=True)
    patcher, codec, cond, load = load_proxy(out)
    load["checkpoint_files"] = split_checkpoint(out, args.split_mb)
    if "vae" in load:  # the VAE file end to end as the host loaded it; then off --out unless --vae-return
        with torch.inference_mode():
            held = data_crops(8, 64 if args.smoke else 256, args.seed + 21, args.smoke)
            load["vae"]["file_check"] = proxy_vae.file_check(codec, patcher.model.latent_format, held)
        if (out / load["vae"]["file"]).is_file():
            load["vae"]["files"] = (split_checkpoint(out, args.split_mb, name=load["vae"]["file"]) if args.vae_return
                                    else move_off(out, load["vae"]["file"]))
    print(json.dumps(load), flush=True)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), **host_info(),
              "command": "python3 benchmarks/proxies.py " + " ".join(sys.argv[1:]),
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "training": training, "load": load, "seconds": {}}
    sections = {"pyramid": lambda: pyramid_eval(args, patcher, codec, cond),
                "cache": lambda: ({"skipped": "--skip-cache"} if args.skip_cache
                                  else cache_eval(args, patcher, cond, device)),
                "sparse24": lambda: sparse24_eval(args, patcher, codec, cond),
                "attention": lambda: proxy_attention.attention_eval(args, patcher,
                                                                    sampler_of(args, patcher, codec, cond), device),
                "highres": lambda: proxy_highres.highres_eval(args, patcher, codec, cond, decode, data_crops,
                                                              conditioning),
                "schedules": lambda: proxy_schedules.schedules_eval(args, patcher, codec, cond, decode, data_crops,
                                                                    conditioning)}
    for name, run in sections.items():  # in the priority; the report is rewritten after each
        t0 = time.perf_counter()
        if name not in args.sections:
            report[name] = {"skipped": f"not in --sections {','.join(args.sections)}"}
        elif t0 - t_start > args.deadline:
            report[name] = {"skipped": f"out of time: {t0 - t_start:.0f} s used of --deadline {args.deadline:.0f}"}
        else:
            try:
                with torch.inference_mode():
                    report[name] = run()
            except Exception as e:  # a failed section is recorded; the others stand
                report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
                print(report[name]["traceback"], flush=True)
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
        if name == "pyramid" and "error" not in report[name] and "skipped" not in report[name]:
            try:
                latent = " (VAE latent)" if "vae" in training else ""
                report["samples_png"] = save_samples(out / "proxy-samples.png", report["pyramid"], latent)
            except Exception as e:  # the figures stand without the picture
                report["samples_png"] = f"not written: {type(e).__name__}: {e}"
            for res in report["pyramid"].values():
                res.pop("samples")
        report["seconds"]["total"] = round(time.perf_counter() - t_start, 1)
        report["headline"] = headline(report)
        write_report(out / args.json, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
