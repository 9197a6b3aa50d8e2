"""DFM against plain flow matching at equal training compute, from scratch, on dead-leaves images.

    python3 benchmarks/dfm_small.py --json benchmarks/results/dfm-h200.json          # the H200 run
    .host/venv/bin/python benchmarks/dfm_small.py --quick --json /tmp/dfm-cpu.json     # CPU smoke run

Data: 64x64 dead-leaves images generated on the fly (random discs, radii with density ~ r^-3 between
r_min and r_max, uniform random colours in [-1, 1], painted in random order): their power spectrum falls
like a natural image's. Model: the host's MMDiT class (pixel space, 3 channels, patch 2, depth 4, hidden
256, ~6M parameters), trained from scratch twice per seed with the same steps, batch and schedule:
  * fm:  one level (the plain MMDiT, flow matching, logit-normal times);
  * dfm: two levels (32x32 coarse level with patch 1 and the 64x64 Laplacian band with patch 2 on the same
         32x32 token grid; per-level embeddings, time embedders and heads), the DFM time distribution.
Sampling: the same number of network calls for both (fm: Euler over N steps; dfm: the stage-wise Euler
sampler with steps split coarse/fine). Metrics against fresh real images: band power error (mean |log| of
generated / real power over 8 radial bands and 3 opponent channels, core.analytic) and a sliced
Wasserstein distance between 7x7 patches at three scales (64, 32, 16), x1e3. Mean and std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _host import import_host, pack_module


def dead_leaves(n: int, size: int, generator: torch.Generator, device, discs: int = 120,
                r_min: float = 1.0, r_max: float = 24.0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]; disc 0 is on top. Radii: inverse CDF of density ~ r^-3 on [r_min, r_max]."""
    u = torch.rand(n, discs, generator=generator)
    r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5 * size / 64
    cy, cx = (torch.rand(n, discs, generator=generator) * size for _ in range(2))
    colour = torch.rand(n, discs + 1, 3, generator=generator) * 2 - 1
    r, cy, cx, colour = (t.to(device) for t in (r, cy, cx, colour))
    grid = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    inside = ((grid[None, None, :, None] - cy[..., None, None]) ** 2
              + (grid[None, None, None, :] - cx[..., None, None]) ** 2) < r[..., None, None] ** 2
    first = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(inside[:, 0], discs, dtype=torch.long))
    img = torch.gather(colour, 1, first.flatten(1)[..., None].expand(-1, -1, 3))
    return img.reshape(n, size, size, 3).permute(0, 3, 1, 2).contiguous()


def build_mmdit(depth: int, seed: int, device):
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    torch.manual_seed(seed)
    return MMDiT(patch_size=2, in_channels=3, depth=depth, context_embedder_config={
        "target": "torch.nn.Linear", "params": {"in_features": 8, "out_features": 64 * depth}},
        operations=torch.nn, device=device)


def swd(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, patches: int = 64, size: int = 7,
        directions: int = 256) -> list[float]:
    """Sliced Wasserstein distance (x1e3) between size x size patches of a and b at 3 scales (2x2 mean pooling)."""
    out = []
    for _ in range(3):
        pa, pb = (_patches(x, patches, size, generator) for x in (a, b))
        mean, std = pb.mean(0), pb.std(0) + 1e-6
        pa, pb = (pa - mean) / std, (pb - mean) / std
        d = torch.randn(pa.shape[1], directions, generator=generator).to(pa)
        d = d / d.norm(dim=0, keepdim=True)
        pa_s, pb_s = (torch.sort(p @ d, dim=0).values for p in (pa, pb))
        out.append(float((pa_s - pb_s).abs().mean()) * 1e3)
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return out


def _patches(x: torch.Tensor, per_image: int, size: int, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    off = torch.arange(size)
    rows = (ys[..., None] + off)[..., :, None].expand(-1, -1, size, size)
    cols = (xs[..., None] + off)[..., None, :].expand(-1, -1, size, size)
    flat = (rows * w + cols).to(x.device).reshape(n, -1)
    taken = torch.gather(x.flatten(2), 2, flat[:, None].expand(-1, c, -1))
    return taken.reshape(n, c, per_image, size * size).permute(0, 2, 1, 3).reshape(n * per_image, -1)


def band_error(core_analytic, gen: torch.Tensor, real: torch.Tensor) -> float:
    prior = core_analytic.NaturalImagePrior()
    ratio = core_analytic.band_ratio(gen.double().cpu(), prior, 8, reference=real.double().cpu())
    return float(ratio.log().abs().mean())


def run_one(mods, levels: int, seed: int, args, device) -> dict:
    network, arch_mod, train, _, _ = mods
    dit = build_mmdit(args.depth, seed, device)
    arch = arch_mod.adapter_for(dit)
    layers = network.DFMLayers(arch, levels).to(device)
    cfg = train.TrainConfig(levels=levels, lr=args.lr, core="full", bf16=device.type == "cuda", seed=seed,
                            threshold=args.threshold)
    trainer = train.DFMTrainer(arch, layers, cfg, lambda s: s * 1000)
    g = torch.Generator().manual_seed(1000 + seed)
    ctx = torch.zeros(args.batch, 1, 8, device=device)
    curve, t0, step = [], time.perf_counter(), 0
    while (step < args.steps) if args.steps else (time.perf_counter() - t0 < args.budget):
        x = dead_leaves(args.batch, args.size, g, device)
        loss, _ = trainer.step(x, ctx)
        if step % 25 == 0:
            curve.append((step, loss))
        step += 1
    args.steps = step  # a time-budgeted first run fixes the step count of every later run (equal compute)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    samples = generate(mods, trainer, levels, seed, args, device)
    return {"samples": samples, "curve": curve, "train_s": train_s, "steps": step}


@torch.no_grad()
def generate(mods, trainer, levels: int, seed: int, args, device) -> torch.Tensor:
    _, _, _, sampler, lv = mods
    plan = sampler.parse_plan(args.dfm_steps if levels > 1 else str(args.sample_steps), str(args.threshold), levels)
    sigmas = torch.linspace(1, 0, args.sample_steps + 1)
    out = []
    g = torch.Generator().manual_seed(5000 + seed)
    for start in range(0, args.samples, args.batch):
        n = min(args.batch, args.samples - start)
        ctx = torch.zeros(n, 1, 8, device=device)
        shape_parts = lv.split(torch.zeros(n, 3, args.size, args.size), levels)
        parts = [torch.randn(p.shape, generator=g).to(device) for p in shape_parts]
        velocity = trainer.velocity(ctx, None)

        def denoise(x, sig, mask, velocity=velocity, n=n):
            s = sig.to(device)[None].expand(n, -1)
            v = velocity(x, s, mask.to(device)[None].expand(n, -1))
            return [xi - vi.float() * s[:, i, None, None, None] for i, (xi, vi) in enumerate(zip(x, v, strict=True))]
        res = sampler.sample_dfm(denoise, parts, plan, sigmas)
        out.append(lv.merge(res).clamp(-1, 1).cpu())
    return torch.cat(out)


def summary(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "values": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="CPU smoke settings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="training steps; 0: as many as --budget allows")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of the first run, which sets the steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--sample-steps", type=int, default=32)
    ap.add_argument("--dfm-steps", default="24, 8", help="coarse, fine stage steps (sum = --sample-steps)")
    ap.add_argument("--samples", type=int, default=512)
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.batch, args.depth, args.samples, args.size = 2, 3, 4, 2, 8, 32
        args.sample_steps, args.dfm_steps = 8, "6, 2"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import_host(cpu=device.type == "cpu")
    mods = tuple(pack_module(f"core.dfm.{m}") for m in ("network", "arch", "train", "sampler", "levels"))
    analytic = pack_module("core.analytic")
    results = {"fm": [], "dfm": []}
    t_start = time.perf_counter()
    for seed in range(args.seeds):
        real = dead_leaves(args.samples, args.size, torch.Generator().manual_seed(9000 + seed), "cpu")
        for name, levels in (("fm", 1), ("dfm", 2)):
            r = run_one(mods, levels, seed, args, device)
            scales = swd(r["samples"], real, torch.Generator().manual_seed(seed))
            results[name].append({"seed": seed, "swd": sum(scales) / len(scales), "swd_scales": scales,
                                  "band_err": band_error(analytic, r["samples"], real), "train_s": r["train_s"],
                                  "steps": r["steps"],
                                  "curve": r["curve"]})
            print(name, seed, {k: v for k, v in results[name][-1].items() if k != "curve"}, flush=True)
    out = {"seeds": args.seeds, "config": vars(args) | {"json": str(args.json)},
           "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d"),
           "wall_s": time.perf_counter() - t_start, "runs": results}
    for name in ("fm", "dfm"):
        out[f"swd_{name}"] = summary([r["swd"] for r in results[name]])
        out[f"band_err_{name}"] = summary([r["band_err"] for r in results[name]])
        out[f"train_s_{name}"] = summary([r["train_s"] for r in results[name]])
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    assert all(math.isfinite(r["swd"]) for rs in results.values() for r in rs)


if __name__ == "__main__":
    main()
