"""Block-sparse attention on the GPU: predicted block mask + FlexAttention vs dense SDPA (cuDNN, flash).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sparse_attention.py --json OUT/sparse-attention-h200.json

Per sequence length (32760 and 75600 tokens: Wan 2.1 at 480p and 720p, 81 frames), 24 heads, head dim 128,
bf16, on synthetic q/k with local structure (a smooth random signal along the sequence plus noise, so
attention concentrates near the diagonal as in video DiTs), at 80 % and 90 % block sparsity (keep ratio
0.2 / 0.1, diagonal included in the budget, block size 128):
  cudnn, flash   dense SDPA restricted to one backend
  sparse_total   predict_block_mask + BlockMask build + compiled flex_attention (what the node runs)
  sparse_kernel  the compiled flex_attention call alone on a prebuilt BlockMask
  error          ||sparse - dense|| / ||dense|| at the predicted mask
First, a sweep of the kernel's Triton tile configurations (kernel alone, 32k tokens, 80 % sparsity); the cases
then run with the fastest, which is the one to set as core/attention/block_sparse.py KERNEL_OPTIONS.
Times are medians of CUDA-event timings after warm-up. benchmarks/summaries.py gathers the headline
keys with the other issue-7 figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _host import device_info, pack_module

TOKENS = {"32k": 32760, "75k": 75600}
SPARSITY = {"s80": 0.8, "s90": 0.9}
HEADS, DIM, BLOCK = 24, 128, 128


def median_ms(fn, repeats: int = 20) -> float:
    """Median of single-call CUDA-event timings after warm-up (kernels/timing.py)."""
    return pack_module("kernels.timing").cuda_median_ms(fn, repeats=repeats, inner=1, warmup=3)


def structured_qkv(n: int, seed: int = 0):
    """q, k, v (1, HEADS, n, DIM) bf16: a shared smooth signal along the sequence plus noise."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(seed)
    coarse = torch.randn(1, HEADS * DIM, max(2, n // 512), device="cuda", generator=g)
    smooth = F.interpolate(coarse, size=n, mode="linear", align_corners=True).view(1, HEADS, DIM, n)
    smooth = smooth.transpose(-1, -2)
    q = smooth + 0.5 * torch.randn(smooth.shape, device="cuda", generator=g)
    k = smooth + 0.5 * torch.randn(smooth.shape, device="cuda", generator=g)
    v = torch.randn(smooth.shape, device="cuda", generator=g)
    return [t.to(torch.bfloat16).contiguous() for t in (q, k, v)]


def dense(backend_name: str):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend_name]

    def run(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)

    return run


TILE_CONFIGS = {  # name: flex_attention kernel_options (BLOCK_M, BLOCK_N, num_stages, num_warps)
    "default": None,
    "m128n64s3w4": {"BLOCK_M": 128, "BLOCK_N": 64, "num_stages": 3, "num_warps": 4},
    "m128n128s3w4": {"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 3, "num_warps": 4},
    "m128n128s2w8": {"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 2, "num_warps": 8},
    "m128n128s3w8": {"BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 3, "num_warps": 8},
    "m64n128s3w4": {"BLOCK_M": 64, "BLOCK_N": 128, "num_stages": 3, "num_warps": 4},
    "m64n64s3w4": {"BLOCK_M": 64, "BLOCK_N": 64, "num_stages": 3, "num_warps": 4},
    "default_tma": {"USE_TMA": True},
}


def sweep_tiles(attn, sparse_mod, n: int, sparsity: float) -> dict:
    """Kernel-alone ms per tile configuration on one predicted mask (a failed compile is recorded, not fatal)."""
    import torch

    q, k, v = structured_qkv(n)
    mask = attn.predict_block_mask(q, k, BLOCK, keep_ratio=1.0 - sparsity)
    flex_mask = sparse_mod.to_flex_block_mask(mask.expand(1, HEADS, -1, -1), BLOCK, n, n)
    ref = sparse_mod.SparseAttentionBackend(None).kernel(q)(q, k, v, flex_mask)
    times = {}
    for name, options in TILE_CONFIGS.items():
        try:
            kernel = sparse_mod.SparseAttentionBackend(options).kernel(q)
            err = ((kernel(q, k, v, flex_mask).float() - ref.float()).norm() / ref.float().norm()).item()
            times[name] = {"ms": median_ms(lambda kernel=kernel: kernel(q, k, v, flex_mask)), "diff_vs_default": err}
        except Exception as exc:  # a config the compiler rejects is a result of the sweep
            times[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print("tile", name, times[name], flush=True)
        torch._dynamo.reset()
    return times


def bench_case(attn, sparse_mod, n: int, sparsity: float, options: dict | None) -> dict:
    import torch

    torch.cuda.empty_cache()  # the previous case's tensors are gone with its frame
    q, k, v = structured_qkv(n)
    row = {"tokens": n, "target_sparsity": sparsity}
    ref = dense("cudnn")(q, k, v)
    for name in ("cudnn", "flash"):
        row[f"{name}_ms"] = median_ms(lambda name=name: dense(name)(q, k, v))
    backend = sparse_mod.SparseAttentionBackend(options)
    keep = 1.0 - sparsity

    def total():
        mask = attn.predict_block_mask(q, k, BLOCK, keep_ratio=keep)
        return backend(q, k, v, mask, BLOCK)

    out = total()
    mask = attn.predict_block_mask(q, k, BLOCK, keep_ratio=keep)
    row["sparsity"] = attn.block_sparsity(mask)
    row["error"] = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    row["fallback_reason"] = backend.fallback_reason
    row["sparse_total_ms"] = median_ms(total)
    row["predict_ms"] = median_ms(lambda: attn.predict_block_mask(q, k, BLOCK, keep_ratio=keep))
    flex_mask = sparse_mod.to_flex_block_mask(mask.expand(1, HEADS, -1, -1), BLOCK, n, n)
    kernel = backend.kernel(q)
    row["sparse_kernel_ms"] = median_ms(lambda: kernel(q, k, v, flex_mask))
    for name in ("cudnn", "flash"):
        row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / row["sparse_total_ms"]
    return row


def markdown(out: dict) -> str:
    lines = ["# Block-sparse attention (FlexAttention + predicted mask) vs dense SDPA", "",
             f"Device: {json.dumps(out['device'])}", "", f"Command: `{out['command']}`", "",
             "Tile sweep (kernel alone, 32k tokens, 80 % sparsity): " + ", ".join(
                 f"{name} {r['ms']:.2f} ms" if "ms" in r else f"{name} failed"
                 for name, r in out["tile_sweep_32k_s80"].items()),
             "", f"Cases run with `{out['tile_config']['name']}`: "
             f"{json.dumps(out['tile_config']['kernel_options'])}", "",
             "| case | sparsity | cuDNN ms | flash ms | sparse total ms | mask ms | kernel ms | x cuDNN | x flash | "
             "rel. error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in out["cases"].items():
        lines.append(f"| {key} | {r['sparsity']:.3f} | {r['cudnn_ms']:.2f} | {r['flash_ms']:.2f} | "
                     f"{r['sparse_total_ms']:.2f} | {r['predict_ms']:.2f} | {r['sparse_kernel_ms']:.2f} | "
                     f"{r['speedup_vs_cudnn']:.2f} | {r['speedup_vs_flash']:.2f} | {r['error']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="full results (a .md beside it)")
    parser.add_argument("--merge", type=Path, help="also merge the headline keys into this JSON file")
    args = parser.parse_args()
    attn, sparse_mod = pack_module("core.attention"), pack_module("core.attention.block_sparse")
    out = {"device": device_info(), "command": " ".join(["python3", *sys.argv]), "cases": {}}
    out["tile_sweep_32k_s80"] = sweep = sweep_tiles(attn, sparse_mod, TOKENS["32k"], SPARSITY["s80"])
    best = min((name for name in sweep if "ms" in sweep[name]), key=lambda name: sweep[name]["ms"])
    out["tile_config"] = {"name": best, "kernel_options": TILE_CONFIGS[best]}
    for tkey, n in TOKENS.items():
        for skey, s in SPARSITY.items():
            out["cases"][f"{tkey}_{skey}"] = row = bench_case(attn, sparse_mod, n, s, TILE_CONFIGS[best])
            print(f"{tkey}_{skey}", json.dumps(row), flush=True)
    headline = {f"attn_speedup_{case}_vs_cudnn": r["speedup_vs_cudnn"] for case, r in out["cases"].items()}
    headline |= {f"attn_speedup_{case}_vs_flash": r["speedup_vs_flash"] for case, r in out["cases"].items()}
    out["headline"] = headline
    print(json.dumps(headline), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        args.json.with_suffix(".md").write_text(markdown(out))
    if args.merge:
        merged = json.loads(args.merge.read_text()) if args.merge.exists() else {}
        args.merge.write_text(json.dumps(merged | headline, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
