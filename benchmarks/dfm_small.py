"""DFM against plain flow matching at equal training compute, from scratch, on dead-leaves images.

    python3 benchmarks/dfm_small.py --json benchmarks/results/dfm-h200.json          # the first H200 run
    $(python3 tools/host.py python) benchmarks/dfm_small.py --quick --json /tmp/dfm-cpu.json     # CPU smoke run
    python3 benchmarks/dfm_small.py --long --methods fm --seed-list 0 --json $OUT/fm0.json   # one run of a
    python3 benchmarks/dfm_small.py --merge fm0.json dfm0.json ... --json dfm-curve-h200.json  # longer curve

Data: 64x64 dead-leaves images generated on the fly on the training device (core.analytic.dead_leaves: discs
with radii of density ~ r^-3, uniform random colours in [-1, 1]): their power spectrum falls like a natural
image's. Model: the host's MMDiT class (pixel space, 3 channels, patch 2, depth 4, hidden
256, ~6M parameters), trained from scratch twice per seed with the same steps, batch and schedule:
  * fm:  one level (the plain MMDiT, flow matching, logit-normal times);
  * dfm: two levels (32x32 coarse level with patch 1 and the 64x64 Laplacian band with patch 2 on the same
         32x32 token grid; per-level embeddings, time embedders and heads), the DFM time distribution.
Sampling: the same number of network calls for both (fm: Euler over N steps; dfm: the stage-wise Euler
sampler with steps split coarse/fine). Metrics against fresh real images: band power error (mean |log| of
generated / real power over 8 radial bands and 3 opponent channels, core.analytic) and a sliced
Wasserstein distance between 7x7 patches at three scales (64, 32, 16), x1e3. Mean and std over seeds.

Convergence curve: every --eval-every steps and at the end, the mean training loss since the previous point
(fm: one level; dfm: the sum over active levels, so the two losses are not on one scale) and SWD / band error
of --curve-samples samples against as many real images (fewer samples than the final metrics, so a curve
point and the final figure differ in their sampling bias; the last curve point uses the same samples'
first --curve-samples). Training time and the step budget exclude the evaluations. --long: 8000 steps per run
(15x the first H200 run), a point every 500; --methods / --seed-list split the runs over several commands
(each under the device's 10-minute limit) and --merge gathers their JSON files into one report.
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


def run_one(mods, levels: int, seed: int, args, device, real: torch.Tensor, analytic, on_point=None) -> dict:
    """Train one model; every --eval-every steps (and at the end) a curve point: the mean training loss since
    the last point and SWD / band error of --curve-samples samples. Training time excludes the evaluations.
    `on_point(curve)` is called after each evaluated point (main saves a partial file with it)."""
    network, arch_mod, train, _, _ = mods
    dit = build_mmdit(args.depth, seed, device)
    arch = arch_mod.adapter_for(dit)
    layers = network.DFMLayers(arch, levels).to(device)
    cfg = train.TrainConfig(levels=levels, lr=args.lr, core="full", bf16=device.type == "cuda", seed=seed,
                            threshold=args.threshold)
    trainer = train.DFMTrainer(arch, layers, cfg, lambda s: s * 1000)
    g = torch.Generator(device).manual_seed(1000 + seed)  # data drawn on the device
    ctx = torch.zeros(args.batch, 1, 8, device=device)
    curve, train_s, step, finished = [], 0.0, 0, False
    while not finished:
        target = step + args.eval_every if args.eval_every else math.inf
        target = min(target, args.steps) if args.steps else target
        window = []  # device tensors: no host sync inside the loop
        _sync(device)
        t0 = time.perf_counter()
        while step < target and (args.steps or train_s + time.perf_counter() - t0 < args.budget):
            window.append(trainer.step(analytic.dead_leaves(args.batch, args.size, g), ctx)[0])
            step += 1
        _sync(device)
        train_s += time.perf_counter() - t0
        finished = step >= args.steps if args.steps else train_s >= args.budget
        point = {"step": step, "train_s": train_s, "loss": float(torch.stack(window).mean()) if window else None}
        if not finished:
            point |= evaluate(analytic, generate(mods, trainer, levels, seed, args, device, args.curve_samples),
                              real[: args.curve_samples], seed)
        curve.append(point)
        if on_point and not finished:
            on_point(curve)
    args.steps = step  # a time-budgeted first run fixes the step count of every later run (equal compute)
    samples = generate(mods, trainer, levels, seed, args, device, args.samples)
    n = min(args.curve_samples, args.samples)
    curve[-1] |= evaluate(analytic, samples[:n], real[:n], seed)  # the same noise as a generate(..., n)
    return {"samples": samples, "curve": curve, "train_s": train_s, "steps": step}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def evaluate(analytic, samples: torch.Tensor, real: torch.Tensor, seed: int) -> dict:
    scales = swd(samples, real, torch.Generator().manual_seed(seed))
    return {"swd": sum(scales) / len(scales), "swd_scales": scales, "band_err": band_error(analytic, samples, real)}


@torch.no_grad()
def generate(mods, trainer, levels: int, seed: int, args, device, count: int) -> torch.Tensor:
    """`count` samples; batch by batch from one seeded noise stream, so the first n of any count agree."""
    _, _, _, sampler, lv = mods
    plan = sampler.parse_plan(args.dfm_steps if levels > 1 else str(args.sample_steps), str(args.threshold), levels)
    sigmas = torch.linspace(1, 0, args.sample_steps + 1)
    out = []
    g = torch.Generator().manual_seed(5000 + seed)
    for start in range(0, count, args.batch):
        n = min(args.batch, count - start)
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


def curve_summary(runs: list[dict]) -> list[dict]:
    """Per curve step: mean and std over seeds of the loss, SWD and band error."""
    steps = sorted({p["step"] for r in runs for p in r["curve"]})
    out = []
    for step in steps:
        points = [p for r in runs for p in r["curve"] if p["step"] == step]
        row = {"step": step, "seeds": len(points)}
        for key in ("loss", "swd", "band_err"):
            values = [p[key] for p in points if p.get(key) is not None]
            row[key] = summary(values) if values else None
        out.append(row)
    return out


def report(out: dict) -> dict:
    """The summary keys of a report from its runs (also after --merge)."""
    for name, runs in out["runs"].items():
        runs.sort(key=lambda r: r["seed"])
        if runs:
            for key in ("swd", "band_err", "train_s"):
                out[f"{key}_{name}"] = summary([r[key] for r in runs])
            out[f"curve_{name}"] = curve_summary(runs)
    out["seeds"] = len({r["seed"] for runs in out["runs"].values() for r in runs})
    return out


def _pm(s: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if not s else f"{s['mean'] * scale:.{digits}g} +- {s['std'] * scale:.{digits}g}"


def markdown(out: dict) -> str:
    c = out["config"]
    names = [n for n in ("fm", "dfm") if out["runs"].get(n)]
    seeds = sorted({r["seed"] for n in names for r in out["runs"][n]})
    lines = [f"# DFM vs flow matching from scratch at equal compute, dead leaves {c['size']}x{c['size']}, "
             f"{out['device']}", "",
             f"`{out['command']}` (torch {out['torch']}, {out['date']}; {c['steps']} steps of batch {c['batch']} "
             f"per run, depth {c['depth']}, lr {c['lr']}; seeds {seeds}; "
             f"sampling {c['sample_steps']} network calls, dfm stages {c['dfm_steps']}).", "",
             f"Final metrics, {c['samples']} samples, mean +- std over seeds (lower is better):", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in (("swd", "sliced Wasserstein (x1e3)"), ("band_err", "band power error"),
                       ("train_s", "training seconds")):
        lines.append(f"| {label} | " + " | ".join(_pm(out.get(f"{key}_{n}")) for n in names) + " |")
    lines += ["", f"Convergence: mean training loss since the previous point (fm one level, dfm summed over "
              f"levels), SWD and band error of {c['curve_samples']} samples, mean +- std over seeds:", "",
              "| step | " + " | ".join(f"{n} {k}" for k in ("loss", "SWD", "band err") for n in names) + " |",
              "|---|" + "---|" * (3 * len(names))]
    rows = {n: {p["step"]: p for p in out[f"curve_{n}"]} for n in names}
    for step in sorted(set().union(*rows.values())):
        cells = [_pm(rows[n].get(step, {}).get(k)) for k in ("loss", "swd", "band_err") for n in names]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: dict, path: Path | None) -> None:
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    text = markdown(out)
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        path.with_suffix(".md").write_text(text)


def merge(paths: list[Path], target: Path | None) -> None:
    """One report from the JSON files of split runs (same config but for --methods / --seed-list)."""
    parts = [json.loads(p.read_text()) for p in paths]
    same = ("steps", "batch", "depth", "size", "lr", "threshold", "sample_steps", "dfm_steps", "samples",
            "curve_samples", "eval_every")
    for p, part in zip(paths[1:], parts[1:], strict=True):
        differ = [k for k in same if part["config"][k] != parts[0]["config"][k]]
        if differ:
            raise SystemExit(f"{p} was run with other {', '.join(differ)} than {paths[0]}: merge equal-compute runs")
    out = {k: v for k, v in parts[0].items() if k in ("config", "device", "torch", "python", "date")}
    out["command"] = " ; ".join(part["command"] for part in parts)
    out["wall_s"] = sum(part["wall_s"] for part in parts)
    out["runs"] = {"fm": [], "dfm": []}
    for p, part in zip(paths, parts, strict=True):
        for name, runs in part["runs"].items():
            taken = {r["seed"] for r in out["runs"][name]}
            if taken & {r["seed"] for r in runs}:
                raise SystemExit(f"{p} repeats a {name} seed already merged")
            out["runs"][name] += runs
    write(report(out), target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write the report here (and the markdown beside it, .md)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke settings")
    ap.add_argument("--long", action="store_true", help="8000 steps per run, a curve point every 500")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-list", help="comma-separated seeds to run (default: 0 .. --seeds - 1)")
    ap.add_argument("--methods", default="fm,dfm", help="comma-separated subset of fm,dfm")
    ap.add_argument("--steps", type=int, default=0, help="training steps; 0: as many as --budget allows")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds of the first run, which sets the steps")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between curve points (0: only the end)")
    ap.add_argument("--curve-samples", type=int, default=256, help="samples per curve point (a multiple of --batch)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--sample-steps", type=int, default=32)
    ap.add_argument("--dfm-steps", default="24, 8", help="coarse, fine stage steps (sum = --sample-steps)")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--merge", type=Path, nargs="+", help="JSON files of split runs to gather into --json")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.json)
        return
    if args.quick:
        args.seeds, args.steps, args.batch, args.depth, args.samples, args.size = 2, 6, 4, 2, 8, 32
        args.sample_steps, args.dfm_steps, args.eval_every, args.curve_samples = 8, "6, 2", 2, 4
    if args.long:
        args.steps, args.eval_every = 8000, 500
    methods = [m.strip() for m in args.methods.split(",")]
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    if not set(methods) <= {"fm", "dfm"} or not methods:
        raise SystemExit(f"--methods {args.methods!r}: use fm, dfm or fm,dfm")
    args.curve_samples = max(args.batch, min(args.curve_samples, args.samples) // args.batch * args.batch)
    command = "python3 benchmarks/dfm_small.py " + " ".join(sys.argv[1:])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import_host(cpu=device.type == "cpu")
    mods = tuple(pack_module(f"core.dfm.{m}") for m in ("network", "arch", "train", "sampler", "levels"))
    analytic = pack_module("core.analytic")
    results = {"fm": [], "dfm": []}
    t_start = time.perf_counter()
    partial = args.json.with_suffix(".partial.json") if args.json else None
    for seed in seeds:
        real = analytic.dead_leaves(args.samples, args.size, torch.Generator().manual_seed(9000 + seed))
        for name in methods:
            def save(curve, name=name, seed=seed):  # survives a killed run: the curve so far, no final metrics
                partial.write_text(json.dumps({"command": command, "method": name, "seed": seed, "curve": curve,
                                               "done": {n: rs for n, rs in results.items() if rs}}) + "\n")
            r = run_one(mods, 1 if name == "fm" else 2, seed, args, device, real, analytic, save if partial else None)
            results[name].append({"seed": seed, **evaluate(analytic, r["samples"], real, seed),
                                  "train_s": r["train_s"], "steps": r["steps"], "curve": r["curve"]})
            print(name, seed, {k: v for k, v in results[name][-1].items() if k != "curve"}, flush=True)
    out = {"config": vars(args) | {"json": str(args.json), "merge": None}, "command": command,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d"),
           "wall_s": time.perf_counter() - t_start, "runs": results}
    write(report(out), args.json)
    if partial:
        partial.unlink(missing_ok=True)
    assert all(math.isfinite(r["swd"]) for rs in results.values() for r in rs)


if __name__ == "__main__":
    main()
