"""Block-sparse attention on the GPU: predicted block mask + FlexAttention vs dense SDPA (cuDNN, flash).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sparse_attention.py --json OUT/sparse-attention-h200.json

Per sequence length (32760 and 75600 tokens: Wan 2.1 at 480p and 720p, 81 frames), 24 heads, head dim 128,
bf16, on synthetic q/k with local structure (a smooth random signal along the sequence plus noise, so
attention concentrates near the diagonal as in video DiTs), at 80 % and 90 % block sparsity (keep ratio
0.2 / 0.1, diagonal included in the budget, block size 128):
  cudnn, flash        dense SDPA restricted to one backend
  sparse_total        predict_block_plan + BlockMask from the plan + compiled flex_attention (what the node
                      runs), with the faster of the eager and compiled predictor (named in `predictor`)
  sparse_total_ref    the previous path: predict_block_mask + the sorting reference builder + the same kernel
  predict_eager, predict_compiled, build_ref, build_plan, kernel: the parts alone
  error               ||sparse - dense|| / ||dense|| at the predicted mask
Timings: "single" = one call between CUDA events (the launch cost of a lone call shows), "queued" = 10
back-to-back calls per event pair (as in a model, where the GPU queue is full and CPU launch cost hides).
First, the kernel alone on a few kernel_options variants (32k tokens, 80 % sparsity: the two best tile
configurations of the earlier sweep, and TMA with ROWS_GUARANTEED_SAFE, which holds here: every query block
keeps its diagonal block, so no query row is fully masked; TMA with 128x128 tiles; TMA with PRESCALE_QK); the
cases then run with the fastest, which is the
one to set as kernels/block_sparse_attention/flex.py KERNEL_OPTIONS. Medians of CUDA-event timings after warm-up.
benchmarks/summaries.py gathers the headline keys with the other issue-7 figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _host import device_info, pack_module, write_report

TOKENS = {"32k": 32760, "75k": 75600}
SPARSITY = {"s80": 0.8, "s90": 0.9}
HEADS, DIM, BLOCK = 24, 128, 128


def median_ms(fn, repeats: int = 20) -> float:
    """Median of single-call CUDA-event timings after warm-up (kernels/timing.py)."""
    return pack_module("kernels.timing").cuda_median_ms(fn, repeats=repeats, inner=1, warmup=3)


def queued_ms(fn, repeats: int = 5) -> float:
    """Median per-call time of 10 back-to-back calls between two CUDA events (the GPU queue stays full)."""
    return pack_module("kernels.timing").cuda_median_ms(fn, repeats=repeats, inner=10, warmup=3)


def structured_qkv(n: int, seed: int = 0, heads: int = HEADS, dim: int = DIM, device: str = "cuda"):
    """q, k, v (1, heads, n, dim) bf16: a shared smooth signal along the sequence plus noise."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(seed)
    coarse = torch.randn(1, heads * dim, max(2, n // 512), device=device, generator=g)
    smooth = F.interpolate(coarse, size=n, mode="linear", align_corners=True).view(1, heads, dim, n)
    smooth = smooth.transpose(-1, -2)
    q = smooth + 0.5 * torch.randn(smooth.shape, device=device, generator=g)
    k = smooth + 0.5 * torch.randn(smooth.shape, device=device, generator=g)
    v = torch.randn(smooth.shape, device=device, generator=g)
    return [t.to(torch.bfloat16).contiguous() for t in (q, k, v)]


def dense(backend_name: str):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend_name]

    def run(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)

    return run


KERNEL_VARIANTS = {  # name: flex_attention kernel_options; the first two were the fastest of the tile sweep
    "tma": {"USE_TMA": True},
    "m128n128s2w8": {"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2, "num_warps": 8},
    "tma_rows_safe": {"USE_TMA": True, "ROWS_GUARANTEED_SAFE": True},
    "tma_m128n128s2w8": {"USE_TMA": True, "BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2, "num_warps": 8},
    "tma_prescale": {"USE_TMA": True, "PRESCALE_QK": True},
}


def sweep_kernels(attn, bsa, n: int, sparsity: float) -> dict:
    """Kernel-alone ms per kernel_options variant on one predicted mask (a failed compile is recorded)."""
    import torch

    q, k, v = structured_qkv(n)
    plan = attn.predict_block_plan(q, k, BLOCK, keep_ratio=1.0 - sparsity)
    flex_mask = bsa.plan_to_flex_block_mask(plan, n, n)
    ref = bsa.SparseAttentionBackend(None).kernel(q)(q, k, v, flex_mask)
    times = {}
    for name, options in KERNEL_VARIANTS.items():
        try:
            kernel = bsa.SparseAttentionBackend(options).kernel(q)
            err = ((kernel(q, k, v, flex_mask).float() - ref.float()).norm() / ref.float().norm()).item()
            times[name] = {"ms": median_ms(lambda kernel=kernel: kernel(q, k, v, flex_mask)), "diff_vs_default": err}
        except Exception as exc:  # a variant the compiler rejects is a result of the sweep
            times[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print("kernel", name, times[name], flush=True)
        torch._dynamo.reset()
    return times


def bench_dense(n: int) -> dict:
    q, k, v = structured_qkv(n)
    row = {}
    for name in ("cudnn", "flash"):
        row[f"{name}_ms"] = median_ms(lambda name=name: dense(name)(q, k, v))
        row[f"{name}_queued_ms"] = queued_ms(lambda name=name: dense(name)(q, k, v))
    return row


def bench_case(attn, bsa, n: int, sparsity: float, options: dict | None, dense_row: dict) -> dict:
    import torch

    torch.cuda.empty_cache()  # the previous case's tensors are gone with its frame
    q, k, v = structured_qkv(n)
    row = {"tokens": n, "target_sparsity": sparsity} | dense_row
    ref = dense("cudnn")(q, k, v)
    backend = bsa.SparseAttentionBackend(options)
    keep = 1.0 - sparsity

    def predict(compiled):
        return attn.predict_block_plan(q, k, BLOCK, keep_ratio=keep, compiled=compiled)

    def total(compiled):
        return backend(q, k, v, predict(compiled), BLOCK)

    def total_ref():
        return backend(q, k, v, attn.predict_block_mask(q, k, BLOCK, keep_ratio=keep), BLOCK)

    plan = predict(False)
    compiled_plan = predict(True)
    row["compiled_plan_equal"] = all(torch.equal(getattr(plan, f), getattr(compiled_plan, f))
                                     for f in ("mask", "order", "counts"))
    row["sparsity"] = attn.block_sparsity(plan.mask)
    row["error"] = ((total(False).float() - ref.float()).norm() / ref.float().norm()).item()
    row["fallback_reason"] = backend.fallback_reason
    row["predict_eager_ms"] = median_ms(lambda: predict(False))
    row["predict_compiled_ms"] = median_ms(lambda: predict(True))
    mask = plan.mask.expand(1, HEADS, -1, -1)
    row["build_ref_ms"] = median_ms(lambda: bsa.to_flex_block_mask(mask, BLOCK, n, n))
    row["build_plan_ms"] = median_ms(lambda: bsa.plan_to_flex_block_mask(plan, n, n))
    kernel, flex_mask = backend.kernel(q), bsa.plan_to_flex_block_mask(plan, n, n)
    row["kernel_ms"] = median_ms(lambda: kernel(q, k, v, flex_mask))
    row["kernel_queued_ms"] = queued_ms(lambda: kernel(q, k, v, flex_mask))
    ascending = bsa.to_flex_block_mask(mask, BLOCK, n, n)  # same blocks, listed in index order
    row["kernel_ascending_queued_ms"] = queued_ms(lambda: kernel(q, k, v, ascending))
    compiled = row["predict_compiled_ms"] < row["predict_eager_ms"]
    row["predictor"] = "compiled" if compiled else "eager"
    row["sparse_total_ms"] = median_ms(lambda: total(compiled))
    row["sparse_total_queued_ms"] = queued_ms(lambda: total(compiled))
    row["sparse_total_ref_ms"] = median_ms(total_ref)
    row["sparse_total_ref_queued_ms"] = queued_ms(total_ref)
    for name in ("cudnn", "flash"):
        row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / row["sparse_total_ms"]
        row[f"speedup_vs_{name}_queued"] = row[f"{name}_queued_ms"] / row["sparse_total_queued_ms"]
    return row


def headline(cases: dict) -> dict:
    """attn_speedup_<case>_vs_<dense>[_queued] from the single-call and the queued totals."""
    out = {}
    for suffix in ("", "_queued"):
        for name in ("cudnn", "flash"):
            out |= {f"attn_speedup_{case}_vs_{name}{suffix}": r[f"speedup_vs_{name}{suffix}"]
                    for case, r in cases.items()}
    return out


def markdown(out: dict) -> str:
    sweep = out.get("kernel_variants_32k_s80")
    swept = ("Kernel alone by kernel_options (32k tokens, 80 % sparsity): " + ", ".join(
        f"{name} {r['ms']:.2f} ms" if "ms" in r else f"{name} failed" for name, r in sweep.items())
        if sweep else "Kernel variant given (--kernel), no sweep.")
    lines = ["# Block-sparse attention (FlexAttention + predicted mask) vs dense SDPA", "",
             f"Device: {json.dumps(out['device'])}", "", f"Command: `{out['command']}`", "",
             swept, "", f"Cases run with `{out['kernel_config']['name']}`: "
             f"{json.dumps(out['kernel_config']['kernel_options'])}", "",
             "Single call (one call between CUDA events) and queued (10 back-to-back calls, the GPU queue full, "
             "as in a model). Sparse total = predictor (the faster one, named) + BlockMask from the plan + kernel; "
             "ref total = the previous path (sorting BlockMask builder).", "",
             "| case | sparsity | cuDNN ms | flash ms | sparse total ms | ref total ms | x cuDNN | x flash | "
             "cuDNN queued | flash queued | sparse queued | ref queued | x cuDNN queued | x flash queued | "
             "rel. error |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in out["cases"].items():
        lines.append(
            f"| {key} | {r['sparsity']:.3f} | {r['cudnn_ms']:.2f} | {r['flash_ms']:.2f} | {r['sparse_total_ms']:.2f} | "
            f"{r['sparse_total_ref_ms']:.2f} | {r['speedup_vs_cudnn']:.2f} | {r['speedup_vs_flash']:.2f} | "
            f"{r['cudnn_queued_ms']:.2f} | {r['flash_queued_ms']:.2f} | {r['sparse_total_queued_ms']:.2f} | "
            f"{r['sparse_total_ref_queued_ms']:.2f} | {r['speedup_vs_cudnn_queued']:.2f} | "
            f"{r['speedup_vs_flash_queued']:.2f} | {r['error']:.4f} |")
    lines += ["", "Breakdown (single call, ms):", "",
              "| case | predict eager | predict compiled | predictor used | compiled = eager | build ref | "
              "build plan | kernel | kernel queued |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in out["cases"].items():
        lines.append(f"| {key} | {r['predict_eager_ms']:.2f} | {r['predict_compiled_ms']:.2f} | {r['predictor']} | "
                     f"{r['compiled_plan_equal']} | {r['build_ref_ms']:.2f} | {r['build_plan_ms']:.2f} | "
                     f"{r['kernel_ms']:.2f} | {r['kernel_queued_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="full results (a .md beside it)")
    parser.add_argument("--cases", default="", help="comma-separated case keys (e.g. 75k_s90); default all")
    parser.add_argument("--kernel", choices=list(KERNEL_VARIANTS),
                        help="use this kernel variant and skip the sweep (the node's is tma_m128n128s2w8)")
    args = parser.parse_args()
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    attn, bsa = pack_module("core.attention"), pack_module("kernels.block_sparse_attention")
    out = {"device": device_info(), "command": " ".join(["python3", *sys.argv]), "cases": {}}
    if args.kernel:
        best = args.kernel
    else:
        out["kernel_variants_32k_s80"] = sweep = sweep_kernels(attn, bsa, TOKENS["32k"], SPARSITY["s80"])
        best = min((name for name in sweep if "ms" in sweep[name]), key=lambda name: sweep[name]["ms"])
    out["kernel_config"] = {"name": best, "kernel_options": KERNEL_VARIANTS[best]}
    for tkey, n in TOKENS.items():
        skeys = [k for k in SPARSITY if not wanted or f"{tkey}_{k}" in wanted]
        if not skeys:
            continue
        dense_row = bench_dense(n)
        for skey in skeys:
            s = SPARSITY[skey]
            row = bench_case(attn, bsa, n, s, KERNEL_VARIANTS[best], dense_row)
            out["cases"][f"{tkey}_{skey}"] = row
            print(f"{tkey}_{skey}", json.dumps(row), flush=True)
    out["headline"] = headline(out["cases"])
    print(json.dumps(out["headline"]), flush=True)
    write_report(args.json, out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
