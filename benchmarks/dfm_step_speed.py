"""DFM training steps per second where per-step overhead dominates: the current step against its reference.

    $(python3 tools/host.py python) benchmarks/dfm_step_speed.py --baseline-rev 8e2921d --json results/dfm-step-cpu.json
    python3 benchmarks/dfm_step_speed.py --size 64 --batch 64 --depth 4 --json $OUT/dfm-step-h200.json   # H200

The model and data of dfm_small.py (host MMDiT from scratch, core="full", two DFM levels, dead-leaves batches),
small. Modes, timed side by side in one process, interleaved, median over --reps blocks of --steps steps:
  * fast:      DFMTrainer as it is (AdamW foreach on the CPU / fused on CUDA, timesteps and noise on the
               device, losses kept as tensors) and core.analytic.dead_leaves drawn on the device;
  * reference: the same trainer with AdamW's per-parameter loop, timesteps and noise drawn on the CPU, the
               loss read back every step (float, tolist) and dead_leaves_reference drawn on the CPU;
  * before:    (--baseline-rev REV, needs git) core/dfm/train.py as committed at REV, loaded beside the
               current one, with dead_leaves_reference: the step before this change, unemulated.
Also the aten ops one step dispatches (torch.profiler, CPU events; all, and top-level ones), a proxy for kernel
launches on a GPU, and its item() calls (host syncs on a GPU; on the CPU the optimizer's step counters add some).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _host import REPO, import_host, pack_module
from dfm_small import build_mmdit


def load_baseline(rev: str):
    """core/dfm/train.py at git revision `rev`, as module pyra_pack.core.dfm._train_at_rev (relative imports work)."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:core/dfm/train.py"], capture_output=True,
                         text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("pyra_pack.core.dfm._train_at_rev", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "pyra_pack.core.dfm"
    sys.modules[spec.name] = module
    exec(compile(src, f"{rev}:core/dfm/train.py", "exec"), module.__dict__)  # our own file at rev
    return module


def make_mode(name: str, train, args, device, analytic):
    """A step() closure for one mode: a fresh model, trainer and data stream."""
    network, arch_mod = pack_module("core.dfm.network"), pack_module("core.dfm.arch")
    arch = arch_mod.adapter_for(build_mmdit(args.depth, 0, device))
    layers = network.DFMLayers(arch, 2).to(device)
    extra = {"optimizer": "loop"} if name == "reference" else {}
    cfg = train.TrainConfig(levels=2, lr=3e-4, core="full", bf16=device.type == "cuda", seed=0, **extra)
    trainer = train.DFMTrainer(arch, layers, cfg, lambda s: s * 1000)
    ctx = torch.zeros(args.batch, 1, 8, device=device)
    if name == "fast":
        g = torch.Generator(device).manual_seed(1)
        return trainer, lambda: trainer.step(analytic.dead_leaves(args.batch, args.size, g), ctx)
    g = torch.Generator().manual_seed(1)
    if name == "reference":
        trainer.generator = torch.Generator().manual_seed(0)  # timesteps and noise on the CPU, then copied

    def step():
        loss, per = trainer.step(analytic.dead_leaves_reference(args.batch, args.size, g, device), ctx)
        return float(loss), per.tolist() if isinstance(per, torch.Tensor) else per
    return trainer, step


def aten_ops(step) -> dict:
    """aten ops of one step: all (nested ones too) and top-level (called from Python, not from another op)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return {"all": len(aten), "top_level": len(top), "item": sum(e.name == "aten::item" for e in top)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write the report here (and the markdown beside it, .md)")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--reps", type=int, default=7, help="timed blocks per mode, interleaved")
    ap.add_argument("--baseline-rev", help="also time core/dfm/train.py of this git revision ('before')")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: the CPU-time figure is this step's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import_host(cpu=device.type == "cpu")
    analytic, train = pack_module("core.analytic"), pack_module("core.dfm.train")
    modes = {"fast": train, "reference": train}
    if args.baseline_rev:
        modes["before"] = load_baseline(args.baseline_rev)
    steps = {name: make_mode(name, module, args, device, analytic)[1] for name, module in modes.items()}
    ops = {}
    for name, step in steps.items():  # warm-up, then one profiled step
        for _ in range(3):
            step()
        ops[name] = aten_ops(step)
    times, cpu_times = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(args.steps / (time.perf_counter() - t0))
            cpu_times[name].append(args.steps / (time.process_time() - c0))
    out = {"config": vars(args) | {"json": str(args.json)}, "command": "python3 benchmarks/dfm_step_speed.py "
           + " ".join(sys.argv[1:]), "device": torch.cuda.get_device_name() if device.type == "cuda"
           else platform.processor() or "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"),
           "steps_per_s": {n: statistics.median(t) for n, t in times.items()}, "steps_per_s_all": times,
           "steps_per_cpu_s": {n: statistics.median(t) for n, t in cpu_times.items()}, "steps_per_cpu_s_all": cpu_times,
           "aten_ops_per_step": ops}
    for other in ("reference", "before"):
        if other in times:
            out[f"speedup_vs_{other}"] = out["steps_per_s"]["fast"] / out["steps_per_s"][other]
            out[f"cpu_speedup_vs_{other}"] = out["steps_per_cpu_s"]["fast"] / out["steps_per_cpu_s"][other]
    lines = [f"# DFM training step overhead, {out['device']} ({out['threads']} threads)", "",
             f"`{out['command']}` (torch {out['torch']}, {out['date']}; two-level DFM on the host MMDiT, depth "
             f"{args.depth}, {args.size}x{args.size}, batch {args.batch}; median of {args.reps} interleaved blocks "
             f"of {args.steps} steps).", "",
             "| mode | steps/s (wall) | steps per CPU second | aten ops per step (all / top-level) | item() |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {out['steps_per_s'][n]:.1f} | {out['steps_per_cpu_s'][n]:.1f} | {ops[n]['all']} / "
              f"{ops[n]['top_level']} | {ops[n]['item']} |" for n in steps]
    lines += [""] + [f"fast / {o}: {out[f'speedup_vs_{o}']:.2f}x wall, {out[f'cpu_speedup_vs_{o}']:.2f}x CPU time"
                     for o in ("reference", "before") if o in times]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
