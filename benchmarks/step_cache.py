"""Step cache (PyraStepCache) vs no cache and the host's EasyCache and LazyCache, same runs side by side.

    python benchmarks/step_cache.py --device cpu --json benchmarks/results/step-cache-cpu.json      # demo models
    source benchmarks/device_env.sh && python3 benchmarks/step_cache.py --device cuda --json OUT.json   # H200

CPU: the tiny demo-architecture models of every family (Wan with 3 blocks: the demo file has one). GPU: real-size
random-weight Flux DiT and SDXL UNet (progressive_speed.build) at 1024x1024, 30 steps. Per model: the final
latent and wall time without cache, with EasyCache and LazyCache at their default threshold (0.2), and with our
cache at
  ours_deviation_matched: the threshold with the most reused evaluations whose final latent deviates from the
    uncached one by at most EasyCache's deviation on the same run (issue 7's figure). The candidates are the
    smallest thresholds of each number of reused evaluations on the change trajectory an uncached run recorded
    (core.cache.reuse_candidates); a bisection over them re-runs the sampler for each one it tries (at most
    --search-runs), assuming the deviation grows with reuse. Where EasyCache reuses nothing its deviation is 0,
    and this row is the uncached one (1x by definition).
  ours_reuse_matched: the threshold whose number of reused evaluations matches EasyCache's;
  ours_preset: the family preset; ours_half: about 55% of the window reused.
Deviation: |x - x_nocache| / |x_nocache| of the final latent. Random weights make feature changes between steps
unlike a trained model's. The `indicator` entry records, along the uncached run, the decision feature's change
and the change of the model's output per evaluation, and their rank correlation.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

from _host import import_host, pack_module

CPU_NOTE = (" CPU wall times come from a shared 2-core machine where other jobs ran at the same time: read the "
            "reuse counts and deviations, not the speedups.")
SMOOTH_NOTE = (" Time-smooth stand-in: the time-embedding layer's weights on sinusoid frequencies above "
               "0.015 rad per timestep unit are scaled down by cutoff / frequency (progressive_speed."
               "smooth_time_embedding), so that the model, like a trained one, varies smoothly along the schedule.")
CPU_MODELS = {"sd15": (4, 32, {}), "sdxl": (4, 32, {}), "sd3": (16, 32, {}), "flux": (16, 32, {}),
              "wan21": (16, 32, {"num_layers": 3})}


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def build_cpu(family: str):
    demo, cond = pack_module("host.demo_models"), pack_module("host.demo_models")
    channels, side, overrides = CPU_MODELS[family]
    demo.TINY_CONFIGS[family] = {**demo.TINY_CONFIGS[family], **overrides}
    shape = (1, channels, 1, side, side) if family == "wan21" else (1, channels, side, side)
    return demo.build_tiny_model(family), cond.demo_conditioning(family, seed=1), 2.0, "simple", shape


def build_gpu(family: str, device, smooth_time: bool = False):
    sys.path.insert(0, str(Path(__file__).parent))
    from progressive_speed import build

    patcher, cond, cfg, scheduler, channels = build(family, device, smooth_time=smooth_time)
    return patcher, cond, cfg, scheduler, (1, channels, 128, 128)


def final_layer(patcher):
    dm = patcher.get_model_object("diffusion_model")
    for name in ("final_layer", "out", "head", "proj_out"):  # Flux / UNet / Wan / Qwen-Image
        if hasattr(dm, name):
            return getattr(dm, name)
    raise ValueError(type(dm).__name__)


def latent(shape, fill):
    """fill(shape); where `shape` is a tuple of shapes (LTX-2: video and audio), the host's NestedTensor of one
    tensor per stream, which its sampler packs into one latent (comfy/samplers.py CFGGuider.sample)."""
    if isinstance(shape[0], int):
        return fill(shape)
    import comfy.nested_tensor

    return comfy.nested_tensor.NestedTensor([fill(s) for s in shape])


def flat(x):
    """A sampled latent as one float CPU tensor (a NestedTensor's streams flattened and concatenated)."""
    import torch

    if getattr(x, "is_nested", False):
        return torch.cat([t.float().cpu().flatten() for t in x.unbind()])
    return x.float().cpu()


def run(patcher, cond, cfg, scheduler, shape, steps, device, repeats, outputs=None):
    """(final latent, median seconds, full forwards counted at the final layer). `outputs`: a list that receives
    the final layer's output of every forward (first repeat only). `shape`: a latent's, or a tuple of them (latent)."""
    import comfy.sample
    import torch

    g = torch.Generator().manual_seed(0)
    noise = latent(shape, lambda s: torch.randn(s, generator=g))
    calls = []

    def hook(module, args, out):
        calls.append(1)
        if outputs is not None and len(outputs) < steps:
            outputs.append(out.detach().float().cpu())
    handle = final_layer(patcher).register_forward_hook(hook)
    times, out = [], None
    try:
        for _ in range(repeats):
            calls.clear()
            _sync(device)
            t0 = time.perf_counter()
            out = comfy.sample.sample(patcher, noise, steps, cfg, "euler", scheduler, cond, cond,
                                      latent(shape, torch.zeros), disable_pbar=True, seed=0)
            _sync(device)
            times.append(time.perf_counter() - t0)
    finally:
        handle.remove()
    return flat(out), statistics.median(times), len(calls)


def _import_easycache():
    """The host's EasyCache module; where comfy_api cannot import (the GPU bundle lacks PyAV), its node classes
    are built on a stand-in base, and only the holders and wrappers that host_cache uses are needed."""
    try:
        from comfy_extras import nodes_easycache
    except ImportError:
        import types

        stub = types.ModuleType("comfy_api.latest")
        stub.io, stub.ComfyExtension = types.SimpleNamespace(ComfyNode=object), object
        sys.modules["comfy_api.latest"] = stub
        from comfy_extras import nodes_easycache
    return nodes_easycache


def host_cache(base, kind: str, threshold: float):
    """EasyCache / LazyCache applied as the host's nodes apply them (nodes_easycache.py execute)."""
    import comfy.patcher_extension as pe

    ec = _import_easycache()
    m = base.clone()
    holder = ec.EasyCacheHolder if kind == "easycache" else ec.LazyCacheHolder
    m.model_options["transformer_options"]["easycache"] = holder(
        threshold, 0.15, 0.95, subsample_factor=8, offload_cache_diff=False,
        output_channels=m.model.latent_format.latent_channels)
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, kind, ec.easycache_sample_wrapper)
    if kind == "easycache":
        m.add_wrapper_with_key(pe.WrappersMP.CALC_COND_BATCH, kind, ec.easycache_calc_cond_batch_wrapper)
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, kind, ec.easycache_forward_wrapper)
    else:
        m.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, kind, ec.lazycache_predict_noise_wrapper)
    return m


def threshold_for(candidates, target: int) -> float:
    """The smallest threshold that reuses at least `target` evaluations of the recorded run (0: none)."""
    if target <= 0 or not candidates:
        return 0.0
    return next((th for th, reused in candidates if reused >= target), candidates[-1][0])


def deviation_matched(candidates, limit: float, evaluate, max_runs: int):
    """Bisection over the candidates (increasing reuse) for the most reuse at a deviation <= limit.

    evaluate(threshold) -> run row. Returns (best row or None, rows tried). Assumes the deviation grows with
    reuse; threshold 0 (no reuse, deviation 0) is the known-good lower end."""
    lo, hi, best, tried = -1, len(candidates), None, []
    while hi - lo > 1 and len(tried) < max_runs:
        mid = (lo + hi) // 2
        row = evaluate(candidates[mid][0])
        row["simulated_reused"] = candidates[mid][1]
        tried.append(row)
        if row["deviation"] <= limit:
            lo = mid
            if best is None or row["reused"] > best["reused"]:
                best = row
        else:
            hi = mid
    return best, tried


def rank_correlation(a, b) -> float | None:
    """Spearman's rho of two equal-length lists (ties broken by order); None below 3 points."""
    if len(a) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0] * len(v)
        for i, j in enumerate(order):
            r[j] = i
        return r
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


def indicator(changes, outputs):
    """Per evaluation of the uncached run: the decision feature's change and the relative change of the model
    output (largest over batch rows), and their rank correlation where both are defined."""
    core = pack_module("core.cache")
    out_changes = [float("nan")] + [float(core.relative_change(b, a).max()) for a, b in itertools.pairwise(outputs)]
    pairs = [(c, o) for c, o in zip(changes, out_changes, strict=True) if c == c and o == o]
    return {"feature_change": changes, "output_change": out_changes,
            "spearman": rank_correlation([c for c, _ in pairs], [o for _, o in pairs])}


def score_rounds(rows: dict) -> None:
    """Per setting: seconds = its fastest timing round, speedup against the uncached run's fastest; the
    medians beside them. On the H200 the SDXL runs are slowed at random (the same uncached run took 1.7, 3.0
    and 2.2 s in three rounds; Flux varied by under 1%): the fastest round is the least disturbed one."""
    for row in rows.values():
        row["seconds"], row["seconds_median"] = min(row["seconds_rounds"]), statistics.median(row["seconds_rounds"])
    for row in rows.values():
        row["speedup"] = rows["none"]["seconds"] / row["seconds"]
        row["speedup_median"] = rows["none"]["seconds_median"] / row["seconds_median"]


def bench_model(family, device, steps, repeats, search_runs, smooth_time=False, built=None):
    """Every setting runs once to count its reuse and deviation; then `repeats` timing rounds run every kept
    setting once per round, in turn (the machine's speed drifts between runs: interleaving spreads the drift
    over all settings instead of favouring the ones timed in a fast spell); see score_rounds.
    `built`: (patcher, cond, cfg, scheduler, shape) of a model to measure instead of the family's stand-in
    (benchmarks/proxies.py passes the trained proxy)."""
    import comfy.model_management

    hooks = pack_module("host.step_cache")
    core = pack_module("core.cache")
    if built is None:
        built = build_gpu(family, device, smooth_time) if device.type == "cuda" else build_cpu(family)
    base, cond, cfg, scheduler, shape = built
    comfy.model_management.load_models_gpu([base])
    run(base, cond, cfg, scheduler, shape, 3, device, 1)  # warm-up
    evals = steps
    ref, _, _ = run(base, cond, cfg, scheduler, shape, steps, device, 1)
    rows = {"none": {"computed": evals, "reused": 0, "deviation": 0.0}}
    timed = {"none": base}  # the settings of the timing rounds

    def measure(patched, cache=None, threshold=None, outputs=None):
        out, _, calls = run(patched, cond, cfg, scheduler, shape, steps, device, 1, outputs)
        computed = cache.stats.computed if cache is not None else calls
        return {"computed": computed, "reused": evals - computed,
                "deviation": float((out - ref).norm() / ref.norm()), "threshold": threshold, "patched": patched}

    def ours(threshold, outputs=None, preset=None):
        patched = base.clone()
        cache = hooks.install(patched, family, threshold, 0.15, 0.95, False, preset)
        return measure(patched, cache, threshold, outputs), cache

    def matched(preset, outputs=None):
        """(uncached-threshold row, its cache, candidates, deviation-matched row, rows tried)."""
        probe_row, probe = ours(0.0, outputs=outputs, preset=preset)
        candidates = core.reuse_candidates(probe.stats.changes, probe.stats.active)
        if rows["easycache"]["reused"] == 0:
            return probe_row, probe, candidates, {**probe_row}, []
        best, tried = deviation_matched(candidates, rows["easycache"]["deviation"],
                                        lambda th: ours(th, preset=preset)[0], search_runs)
        return probe_row, probe, candidates, ({**probe_row} if best is None else best), tried

    for kind in ("easycache", "lazycache"):
        rows[kind] = measure(host_cache(base, kind, 0.2), threshold=0.2)
    outputs = []
    rows["ours_t0"], probe, candidates, rows["ours_deviation_matched"], tried = matched(None, outputs)
    changes, active = probe.stats.changes, probe.stats.active
    window = sum(active)
    easy = rows["easycache"]["deviation"]
    preset = core.PRESETS[family]
    variants = {"extrapolate": dataclasses.replace(preset, extrapolate=True)}
    if preset.kind == "unet":  # Step Rehash's split (everything above the first downsampling)
        variants["rehash_split"] = dataclasses.replace(preset, shallow=0)
    elif preset.tail:  # First Block Cache's split: only the first block computed on a reused evaluation
        variants["tail0"] = dataclasses.replace(preset, tail=0)
    searches = {}
    for name, variant in variants.items():
        _, _, _, rows[f"ours_deviation_matched_{name}"], searches[name] = matched(variant)
    for name, th in (("ours_reuse_matched", threshold_for(candidates, rows["easycache"]["reused"])),
                     ("ours_preset", preset.threshold),
                     ("ours_half", threshold_for(candidates, math.ceil(window * 0.55)))):
        rows[name] = ours(th)[0]
    for name in ("ours_deviation_matched", "ours_reuse_matched", "ours_half",
                 *(f"ours_deviation_matched_{v}" for v in variants)):
        rows[name]["deviation_ratio_vs_easycache"] = rows[name]["deviation"] / easy if easy else None
    for name, row in rows.items():
        patched = row.pop("patched", None)
        if patched is not None:
            timed[name] = patched
    for row in [*tried, *(t for found in searches.values() for t in found)]:
        row.pop("patched", None)
    seconds = {name: [] for name in timed}
    for _ in range(repeats):
        for name, patched in timed.items():
            seconds[name].append(run(patched, cond, cfg, scheduler, shape, steps, device, 1)[1])
    for name, times in seconds.items():
        rows[name]["seconds_rounds"] = times
    score_rounds(rows)
    base = timed = None  # frees the model before the next family
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    return {"steps": steps, "latent": list(shape), "evaluations": evals, "window_evaluations": window,
            "easycache_reuses_nothing": rows["easycache"]["reused"] == 0, "candidates": candidates,
            "deviation_search": tried, "variant_searches": searches, "indicator": indicator(changes, outputs),
            "runs": rows}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _series(values) -> str:
    return " ".join("-" if v != v else f"{v:.2g}" for v in values)


def markdown(result) -> str:
    lines = [f"# Step cache ({result['device']})", "", f"Command: `{result['command']}`", "",
             f"torch {result['torch']}, {result['date']}. {result['note']}", ""]
    for family, r in result["models"].items():
        lines += [f"## {family}: latent {r['latent']}, {r['steps']} steps", "",
                  "| run | threshold | computed | reused | speedup | speedup, medians | deviation |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in r["runs"].items():
            th = "" if row.get("threshold") is None else f"{row['threshold']:.4g}"
            median = f"{row['speedup_median']:.2f}x" if "speedup_median" in row else ""
            lines.append(f"| {name} | {th} | {row['computed']} | {row['reused']} | {row.get('speedup', 1.0):.2f}x "
                         f"| {median} | {row['deviation']:.4f} |")
        search = ", ".join(f"{t['threshold']:.4g} -> {t['reused']} reused, deviation {t['deviation']:.4f}"
                           for t in r["deviation_search"])
        for variant, rows_tried in r.get("variant_searches", {}).items():
            search += f"; {variant}: " + ", ".join(f"{t['threshold']:.4g} -> {t['reused']} reused, deviation "
                                                   f"{t['deviation']:.4f}" for t in rows_tried)
        lines += ["", "Deviation-matched search (one run each): " + (search or (
            "none: EasyCache reused nothing, so its deviation is 0 and the deviation-matched run is the uncached "
            "one (1x by definition)" if r["easycache_reuses_nothing"] else "no candidate thresholds")),
                  f"Change indicator vs model output change along the uncached run: Spearman "
                  f"{_fmt(r['indicator']['spearman'])}; feature change per step "
                  f"{_series(r['indicator']['feature_change'])}; "
                  f"output change {_series(r['indicator']['output_change'])}",
                  ""]
    lines += ["Headline: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in result["headline"].items()), ""]
    return "\n".join(lines)


NOTE = ("Random weights: feature changes between steps are not a trained model's. "
        "ours_deviation_matched: the most reuse at a final-latent deviation <= EasyCache's (0.2) on the same run; "
        "ours_reuse_matched reuses as many evaluations as EasyCache; ours_half about 55% of the window "
        "(0.15-0.95). UNets: the preset computes 2 shallow input blocks (DeepCache's default branch); "
        "*_rehash_split searches the same with Step Rehash's split (every block above the first downsampling); "
        "DiTs: *_tail0 with only the first block computed on a reused evaluation (First Block Cache's split); "
        "*_extrapolate with first-order extrapolation of the cached values. ours_t0 (no reuse) measures the "
        "cache's overhead. Timing rounds run every setting once in turn; speedup: fastest rounds, the medians "
        "beside them.")


def headline(models: dict) -> dict:
    head = {}
    for family in ("flux", "sdxl"):
        if family in models:
            runs = models[family]["runs"]
            head[f"cache_speedup_{family}"] = runs["ours_deviation_matched"]["speedup"]
            head[f"cache_speedup_{family}_reuse_matched"] = runs["ours_reuse_matched"]["speedup"]
            head[f"cache_speedup_{family}_half"] = runs["ours_half"]["speedup"]
            for variant in ("extrapolate", "rehash_split", "tail0"):
                if f"ours_deviation_matched_{variant}" in runs:
                    head[f"cache_speedup_{family}_{variant}"] = runs[f"ours_deviation_matched_{variant}"]["speedup"]
            head[f"easycache_speedup_{family}"] = runs["easycache"]["speedup"]
            head[f"easycache_reuses_nothing_{family}"] = models[family]["easycache_reuses_nothing"]
    ratios = [r["runs"]["ours_deviation_matched"]["deviation_ratio_vs_easycache"]
              for r in models.values() if not r["easycache_reuses_nothing"]]
    head["cache_deviation_ratio_vs_easycache"] = max(ratios) if ratios else None
    return head


def write(result: dict, path: Path) -> None:
    result["headline"] = headline(result["models"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--models", default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--smooth-time", action="store_true",
                    help="GPU: the time-smooth stand-in (progressive_speed.smooth_time_embedding)")
    ap.add_argument("--search-runs", type=int, default=6,
                    help="at most this many sampler runs in the deviation-matched search, per model")
    ap.add_argument("--rescore", action="store_true",
                    help="re-score the timing rounds already in --json with the current scoring (no runs)")
    a = ap.parse_args()
    if a.rescore:
        result = json.loads(a.json.read_text())
        for model in result["models"].values():
            score_rounds(model["runs"])
        note = result["note"]
        result["note"] = NOTE + CPU_NOTE * (CPU_NOTE in note) + SMOOTH_NOTE * (SMOOTH_NOTE in note)
        write(result, a.json)
        return
    import_host(cpu=a.device == "cpu")
    import torch

    device = torch.device(a.device)
    models = (a.models or ("flux,sdxl" if a.device == "cuda" else ",".join(CPU_MODELS))).split(",")
    result = {"device": torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "note": NOTE + CPU_NOTE * (a.device == "cpu") + SMOOTH_NOTE * a.smooth_time, "models": {}}
    for family in models:
        result["models"][family] = bench_model(family, device, a.steps, a.repeats, a.search_runs,
                                                 a.smooth_time)
        print(json.dumps({family: result["models"][family]["runs"]}, indent=1), flush=True)
    write(result, a.json)


if __name__ == "__main__":
    main()
