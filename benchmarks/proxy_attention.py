"""Block-sparse attention on the trained Flux-class proxy: sparsity against image error and sampling time.

A section of benchmarks/proxies.py. `PyraSparseAttention`'s patch (host/sparse_attention.install, the node's
defaults: dense before 20% of the schedule, text tokens kept) at each keep ratio, from the same noise and seed as
the dense model; PSNR and SSIM of the decoded images against the dense ones, the sparsity reached, and the whole
sampling run's time against dense (on the GPU the second of two runs, after FlexAttention's compile).

"1% PSNR loss" is read as an RMS image difference of at most 1% of the data range, i.e. PSNR against the dense
output of at least 20 log10(100) = 40 dB: the headline is the fastest keep ratio that holds it.
"""

from __future__ import annotations

import time

import torch
from _host import pack_module

KEEP_RATIOS = (1.0, 0.5, 0.3, 0.2, 0.1)
PSNR_AT_1PCT = 40.0


def attention_eval(args, patcher, sample, device) -> dict:
    """`sample(model, noise)` -> decoded images (B, 3, H, W) of one sampling run of `model`."""
    sa, models = pack_module("host.sparse_attention"), pack_module("host.models")
    proxy = pack_module("core.proxy")
    side = args.attn_size // 8
    noise = torch.randn(args.attn_samples, 16, side, side, generator=torch.Generator().manual_seed(args.seed + 3))
    repeats = 2 if device.type == "cuda" else 1

    def timed(model):
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            img = sample(model, noise)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        return img, seconds

    dense, t_dense = timed(patcher)
    out = {"size": args.attn_size, "samples": args.attn_samples, "block_size": args.attn_block,
           "dense_seconds": round(t_dense, 3), "timed_on": device.type, "runs": {}}
    for keep in KEEP_RATIOS:
        settings = sa.SparseSettings(keep_mass=0.9, keep_ratio=keep, block_size=args.attn_block,
                                     window=models.SigmaWindow(0.2, 1.0), text_tokens=-1, fastest_dense=True)
        model = patcher.clone()
        stats = sa.install(model, "flux", settings)
        img, seconds = timed(model)
        out["runs"][f"keep{keep:g}"] = {
            "keep_ratio": keep, "sparsity": round(stats.sparsity(), 4), "psnr_db": float(proxy.psnr(img, dense).mean()),
            "ssim": float(proxy.ssim(img, dense).mean()), "seconds": round(seconds, 3),
            "speedup": round(t_dense / seconds, 3)}
        del model
    print("sparse attention: " + ", ".join(f"{k} {v['sparsity']:.2f} sparse {v['psnr_db']:.1f} dB"
                                           for k, v in out["runs"].items()), flush=True)
    return out


def headline(section: dict) -> dict:
    runs = section.get("runs")
    if not runs:
        return {}
    held = [r for r in runs.values() if r["psnr_db"] >= PSNR_AT_1PCT and r["keep_ratio"] < 1.0]
    head = {f"attn_psnr_db_{k}": r["psnr_db"] for k, r in runs.items()}
    head["attn_speedup_at_1pct_psnr_loss"] = max((r["speedup"] for r in held), default=None)
    return head


def markdown(section: dict) -> list[str]:
    lines = [f"## Block-sparse attention vs dense ({section.get('size', '')}px, {section.get('samples', '')} "
             f"samples, blocks of {section.get('block_size', '')} tokens, timed on {section.get('timed_on', '')})",
             ""]
    if "runs" not in section:
        return [*lines, f"Not measured: {section.get('error') or section.get('skipped') or 'not run yet'}", ""]
    lines += ["| keep ratio | sparsity reached | PSNR dB | SSIM | sampling s | speedup |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['keep_ratio']:g} | {r['sparsity']:.3f} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | "
              f"{r['seconds']:.2f} | {r['speedup']:.2f}x |" for r in section["runs"].values()]
    return [*lines, "", f"Dense sampling: {section['dense_seconds']:.2f} s. 1% PSNR loss read as PSNR >= "
            f"{PSNR_AT_1PCT:g} dB against the dense output.", ""]
