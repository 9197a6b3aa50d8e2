"""LoRA extraction: adaptive rank at equal file size vs the host's fixed rank (CPU), randomized vs exact SVD (GPU).

    python benchmarks/adapters.py --mode quality --json benchmarks/results/adapters-cpu.json       # CPU
    source benchmarks/device_env.sh && python3 benchmarks/adapters.py --mode speed --json OUT.json  # H200

Model differences with realistic spectra: every layer's difference is sum_i s_i u_i v_i^T + noise with a
power-law spectrum s_i = i^-a over K = min(m, n) / 4 (at most 512) components, the decay a drawn per layer
in [0.5, 1.5] and the noise carrying a per-layer fraction in [0.02, 0.2] of the energy (seeded). Layer shapes
are the real ones, listed from the host's own SD1.5, SDXL and Flux classes built on the meta device.

quality: the host's algorithm (comfy_extras/nodes_lora_extract.py extract_lora: top-r SVD triplets, up = U S,
down = Vh, clamp at the 0.99 quantile, fp16) at a fixed rank r, against our size_mb extraction with the same
factor bytes (fp16). Metric: mean over layers of ||D - up @ down||_F / ||D||_F, measured on the stored fp16
factors. Exact SVDs of 3072-wide matrices take minutes each on a 2-core CPU, so both sides read their top
triplets from one randomized SVD per layer with 4 power iterations at rank 4r (checked against the host's own
function on the layers where an exact SVD is cheap). A representative subset: every distinct layer shape of each
model, two layers for shapes that occur 10 times or more.

speed: all linear layers of a Flux-size (11.9B) difference, rank 64: time of our randomized SVD (oversampling
10, 2 power iterations) and of the exact truncated SVD (torch.linalg.svd, fp32) per distinct layer shape,
extrapolated to the whole model by the number of layers of each shape; relative error of both at rank 64.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

from _host import import_host, pack_module
from progressive_speed import FLUX, SDXL

SD15 = {**SDXL, "num_classes": None, "adm_in_channels": None, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_linear_in_transformer": False,
        "context_dim": 768, "num_heads": 8, "num_head_channels": -1}
FAMILIES = {"sd15": ("SD15", SD15), "sdxl": ("SDXL", SDXL), "flux": ("Flux", FLUX)}


def layer_shapes(family: str) -> collections.Counter:
    """Counter of the shapes of every matrix weight (ndim >= 2) of the host's model class for `family`."""
    import comfy.supported_models as sm
    import torch

    cls, cfg = FAMILIES[family]
    if cls == "Flux":
        cfg = pack_module("host.features").flux_unet_config(cfg)  # txt_ids_dims where the host needs it
    mc = getattr(sm, cls)(dict(cfg))
    mc.set_inference_dtype(torch.float16, None)
    model = mc.get_model({}, device=torch.device("meta"))
    return collections.Counter(tuple(p.shape) for k, p in model.diffusion_model.named_parameters()
                               if k.endswith(".weight") and p.ndim >= 2)


def subset(shapes: collections.Counter) -> list[tuple[int, ...]]:
    return [s for s, n in sorted(shapes.items()) for _ in range(2 if n >= 10 else 1)]


def difference(shape, seed: int, device="cpu"):
    """A seeded weight difference of `shape` with a power-law spectrum plus noise (module docstring)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    decay, noise_frac = 0.5 + torch.rand((), generator=g).item(), 0.02 + 0.18 * torch.rand((), generator=g).item()
    m, n = shape[0], torch.Size(shape[1:]).numel()
    k = min(m, n, 2048) // 4 or 1
    gd = torch.Generator(device=device).manual_seed(seed)
    s = torch.arange(1, k + 1, device=device, dtype=torch.float32) ** -decay
    low = (torch.randn(m, k, generator=gd, device=device) * s) @ torch.randn(k, n, generator=gd, device=device)
    noise = torch.randn(m, n, generator=gd, device=device)
    low *= (1 - noise_frac) ** 0.5 / low.norm()
    noise *= noise_frac**0.5 / noise.norm()
    return (low + noise).reshape(shape)


def host_factors(spec, rank: int, shape):
    """The host's extract_lora on top triplets: up = U S, down = Vh, clamp at the 0.99 quantile, fp16."""
    import torch

    up, down = spec.U[:, :rank] * spec.S[:rank], spec.Vh[:rank]
    hi = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.99)
    return up.clamp(-hi, hi).half(), down.clamp(-hi, hi).half()


def rel_error(d, up, down) -> float:
    d = d.reshape(d.shape[0], -1).float()
    return float((d - up.flatten(1).float() @ down.flatten(1).float()).norm() / d.norm())


def check_against_host(svd_mod, rank: int) -> float:
    """Largest |error(our replica) - error(host extract_lora)| on small layers where the host's SVD is cheap."""
    from comfy_extras.nodes_lora_extract import extract_lora

    worst = 0.0
    for i, shape in enumerate([(320, 320), (320, 768), (640, 320, 3, 3)]):
        d = difference(shape, 1000 + i)
        host = rel_error(d, *(t.half() for t in extract_lora(d, rank)))
        ours = rel_error(d, *host_factors(svd_mod.randomized_svd(d.reshape(shape[0], -1), 4 * rank,
                                                                   power_iters=4), rank, shape))
        worst = max(worst, abs(host - ours) / host)
    return worst


def quality(rank: int) -> dict:
    import torch

    svd_mod, rank_mod = pack_module("core.adapters.svd"), pack_module("core.adapters.rank")
    extract_mod = pack_module("core.adapters.extract")
    out = {"host_rank": rank, "our_max_rank": 4 * rank,
           "replica_vs_host_max_rel_diff": check_against_host(svd_mod, rank)}
    for family in FAMILIES:
        t0 = time.perf_counter()
        shapes = subset(layer_shapes(family))
        diffs = [difference(s, i) for i, s in enumerate(shapes)]
        spectra = [svd_mod.randomized_svd(d.reshape(d.shape[0], -1), 4 * rank, power_iters=4, seed=i)
                   for i, d in enumerate(diffs)]
        host = [rel_error(d, *host_factors(sp, rank, d.shape)) for d, sp in zip(diffs, spectra, strict=True)]
        plain = [rel_error(d, (sp.U[:, :rank] * sp.S[:rank]).half(), sp.Vh[:rank].half())
                 for d, sp in zip(diffs, spectra, strict=True)]
        budget = sum(min(rank, *extract_mod.flat_shape(s)) * extract_mod.bytes_per_rank(s, torch.float16)
                     for s in shapes)
        items = [(f"l{i}", s, sp) for i, (s, sp) in enumerate(zip(shapes, spectra, strict=True))]
        ours_ex = extract_mod.build_lora(items, rank_mod.RankRule("size_mb", budget / 1e6), 4 * rank,
                                         torch.float16, budget)
        ours, used = [], 0
        for i, d in enumerate(diffs):
            up, down = (ours_ex.tensors.get(f"l{i}.lora_{n}.weight") for n in ("up", "down"))
            ours.append(1.0 if up is None else rel_error(d, up, down))
            used += 0 if up is None else (up.numel() + down.numel()) * 2
        ranks = [r.rank for r in ours_ex.layers]
        out[family] = {
            "layers": len(shapes), "distinct_shapes": len(set(shapes)), "factor_bytes_host": budget,
            "factor_bytes_ours": used, "mean_rel_error_host": statistics.mean(host),
            "mean_rel_error_fixed_rank_svd": statistics.mean(plain), "mean_rel_error_ours": statistics.mean(ours),
            "extract_error_ratio_vs_host": statistics.mean(ours) / statistics.mean(host),
            "extract_error_ratio_vs_fixed_rank_svd": statistics.mean(ours) / statistics.mean(plain),
            "our_ranks_min_median_max": [min(ranks), statistics.median(ranks), max(ranks)],
            "seconds": time.perf_counter() - t0,
        }
        print(family, json.dumps(out[family]), flush=True)
    return out


def cuda_time(fn, repeats: int) -> tuple[float, object]:
    import torch

    times, result = [], None
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), result


def measured_error(d, spec) -> float:
    """||D - U diag(S) Vh||_F / ||D||_F from the materialised product, fp32."""
    return float((d - (spec.U * spec.S) @ spec.Vh).norm() / d.norm())


def speed(rank: int, exact_budget_s: float) -> dict:
    import torch

    svd_mod = pack_module("core.adapters.svd")
    shapes = layer_shapes("flux")
    warm = difference((512, 512), 0, "cuda")
    svd_mod.randomized_svd(warm, rank), svd_mod.exact_svd(warm, rank)
    rows, spent = [], 0.0
    for i, (shape, count) in enumerate(sorted(shapes.items(), key=lambda x: -torch.Size(x[0]).numel())):
        d = difference(shape, i, "cuda")
        t_r, fast = cuda_time(lambda d=d: svd_mod.randomized_svd(d, rank, seed=1), 5)
        row = {"shape": list(shape), "count": count, "randomized_s": t_r,
               "randomized_rel_error": measured_error(d, fast), "randomized_rel_error_analytic":
               fast.relative_error(rank)}
        if spent < exact_budget_s:
            t_e, exact = cuda_time(lambda d=d: svd_mod.exact_svd(d, rank), 1)
            spent += t_e
            row.update(exact_s=t_e, exact_rel_error=measured_error(d, exact))
            if row["exact_rel_error"] > 1e-4:  # rank < min(m, n): there is an error to compare
                row["error_ratio"] = row["randomized_rel_error"] / row["exact_rel_error"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del d
    timed = [r for r in rows if "exact_s" in r]
    compared = [r for r in timed if "error_ratio" in r]
    tot_r = sum(r["randomized_s"] * r["count"] for r in rows)
    tot_e = sum(r["exact_s"] * r["count"] for r in timed)
    tot_r_timed = sum(r["randomized_s"] * r["count"] for r in timed)
    return {
        "rank": rank, "layers": sum(shapes.values()),
        "params": sum(torch.Size(s).numel() * n for s, n in shapes.items()),
        "per_shape": rows, "randomized_total_s": tot_r, "exact_total_s_timed_shapes": tot_e,
        "shapes_with_exact_timing": len(timed), "shapes": len(rows),
        "rsvd_speedup_flux": tot_e / tot_r_timed,
        "max_error_ratio": max(r["error_ratio"] for r in compared),
        "mean_error_ratio": statistics.mean(r["error_ratio"] for r in compared),
    }


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "date": datetime.date.today().isoformat(),
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return env


COMMANDS = {
    "quality": "python benchmarks/adapters.py --mode quality --json benchmarks/results/adapters-cpu.json",
    "speed": "source benchmarks/device_env.sh && python3 benchmarks/adapters.py --mode speed --exact-budget 60 "
             "--json $OUT/adapters-h200.json",
}


def markdown(result: dict) -> str:
    """The committed .md beside a result .json."""
    env = result["environment"]
    mode = "speed" if "rsvd_speedup_flux" in result else "quality"
    driver = f"driver {env['driver']}, " if env.get("driver") else f"{env['threads']} threads, "
    head = [f"# LoRA extraction {mode} ({env.get('gpu', env['cpu'])}, {driver}torch {env['torch']}, {env['date']})",
            "", f"Command: `{COMMANDS[mode]}`", "", "Method: see the docstring of `benchmarks/adapters.py`.", ""]
    if mode == "speed":
        rows = ["| shape | layers | randomized ms | exact ms | speedup | rel. error rSVD | exact | ratio |",
                "|---|---|---|---|---|---|---|---|"]
        for r in result["per_shape"]:
            rows.append(f"| {'x'.join(map(str, r['shape']))} | {r['count']} | {r['randomized_s'] * 1e3:.2f} | "
                        f"{r.get('exact_s', float('nan')) * 1e3:.1f} | "
                        f"{r.get('exact_s', float('nan')) / r['randomized_s']:.1f}x | "
                        f"{r['randomized_rel_error']:.4f} | {r.get('exact_rel_error', float('nan')):.4f} | "
                        f"{r.get('error_ratio', float('nan')):.4f} |")
        tail = ["", f"All {result['layers']} matrix layers ({result['params'] / 1e9:.1f}B parameters) at rank "
                f"{result['rank']}, extrapolated by layer counts from one timed layer per shape: randomized "
                f"{result['randomized_total_s']:.2f} s, exact {result['exact_total_s_timed_shapes']:.1f} s, "
                f"**rsvd_speedup_flux {result['rsvd_speedup_flux']:.1f}x**; error ratio randomized / exact: "
                f"mean {result['mean_error_ratio']:.4f}, max {result['max_error_ratio']:.4f} (rank-64 layers "
                "with min(m, n) = 64 are exact for both and left out of the ratio)."]
        return "\n".join(head + rows + tail) + "\n"
    rows = ["| family | layers (shapes) | host rank | host error | fixed-rank SVD error | ours, same bytes | "
            "ours / host | ours / fixed-rank SVD | our ranks min/median/max |", "|---|---|---|---|---|---|---|---|---|"]
    for fam in FAMILIES:
        r = result[fam]
        rows.append(f"| {fam} | {r['layers']} ({r['distinct_shapes']}) | {result['host_rank']} | "
                    f"{r['mean_rel_error_host']:.4f} | {r['mean_rel_error_fixed_rank_svd']:.4f} | "
                    f"{r['mean_rel_error_ours']:.4f} | **{r['extract_error_ratio_vs_host']:.3f}** | "
                    f"{r['extract_error_ratio_vs_fixed_rank_svd']:.3f} | "
                    f"{'/'.join(str(x) for x in r['our_ranks_min_median_max'])} |")
    tail = ["", f"Factor bytes: ours <= host's in every family. Mean relative weight error over layers, measured on "
            f"the stored fp16 factors. The host's algorithm replica differs from the host's own extract_lora by at "
            f"most {100 * result['replica_vs_host_max_rel_diff']:.2f}% (relative) on the layers checked."]
    return "\n".join(head + rows + tail) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", type=Path, help="only write the .md beside this existing result .json")
    ap.add_argument("--mode", choices=["quality", "speed"])
    ap.add_argument("--rank", type=int, default=None, help="host rank (quality, default 32) / SVD rank (speed, 64)")
    ap.add_argument("--exact-budget", type=float, default=90.0, help="speed: seconds of exact SVDs at most")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.markdown:
        args.markdown.with_suffix(".md").write_text(markdown(json.loads(args.markdown.read_text())))
        return
    import_host(cpu=args.mode == "quality")
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        result = quality(args.rank or 32) if args.mode == "quality" else speed(args.rank or 64, args.exact_budget)
    result["environment"] = environment()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
