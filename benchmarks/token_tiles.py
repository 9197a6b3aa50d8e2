"""Block-sparse attention error against dense attention, tile order vs raster order of the video tokens (CPU).

    $(python3 tools/host.py python) benchmarks/token_tiles.py --json benchmarks/results/token-tiles-cpu.json

Stand-in: q = k is a random field smoothed over frames, height and width (three passes of a 5-wide box filter),
scaled so the attention is peaked; v is white noise. It is built to have the 3-D locality that video attention
is reported to have, which is what tiles exploit: it shows the mechanism, not a trained model's gain. The mask is
Pyra's predictor (keep ratio), run in raster order and in core/attention/token_tiles.py's order; the error is
||sparse - dense|| / ||dense|| of the attention output.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from _host import pack_module


def smooth_qkv(grid, dim: int = 32, sharpness: float = 4.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    field = torch.randn(1, dim, *grid, generator=g)
    for _ in range(3):
        field = F.avg_pool3d(F.pad(field, (2, 2, 2, 2, 2, 2), mode="replicate"), 5, stride=1)
    field = (field - field.mean()) / field.std()
    q = (field.flatten(2).transpose(1, 2) * sharpness / dim ** 0.25)[:, None]   # (1, 1, N, dim)
    return q, q.clone(), torch.randn(q.shape, generator=g)


def sparse_error(q, k, v, perm, block: int, keep_ratio: float) -> float:
    attn, bsa = pack_module("core.attention"), pack_module("kernels.block_sparse_attention")
    inv = pack_module("core.attention.token_tiles").inverse(perm)
    qp, kp, vp = (t[:, :, perm] for t in (q, k, v))
    plan = attn.predict_block_plan(qp, kp, block, keep_ratio=keep_ratio, compiled=False)
    out = bsa.dense_masked_attention(qp, kp, vp, plan.mask, block)[:, :, inv]
    dense = F.scaled_dot_product_attention(q, k, v)
    return float((out - dense).norm() / dense.norm())


def measure(grid=(8, 16, 16), block: int = 64, keep_ratios=(0.1, 0.25)) -> dict:
    tiles = pack_module("core.attention.token_tiles")
    q, k, v = smooth_qkv(grid)
    orders = {"raster": torch.arange(math.prod(grid)), "tiles": tiles.tile_order(grid, block)}
    rows = {str(r): {name: sparse_error(q, k, v, perm, block, r) for name, perm in orders.items()}
            for r in keep_ratios}
    return {"grid": list(grid), "block": block, "tile": list(tiles.tile_shape(grid, block)), "errors": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="results (a .md beside it)")
    args = parser.parse_args()
    res = measure()
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Block-sparse attention: tile order vs raster order (CPU, synthetic 3-D-smooth attention)", "",
             f"Command: `python benchmarks/token_tiles.py --json {args.json}`", "",
             f"Grid {res['grid']} tokens, blocks of {res['block']}, tiles {res['tile']}. Relative error of the "
             "attention output against dense attention.", "", "| blocks kept | raster | tiles |", "|---|---|---|"]
    lines += [f"| {float(r):.0%} | {e['raster']:.3f} | {e['tiles']:.3f} |" for r, e in res["errors"].items()]
    args.json.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
