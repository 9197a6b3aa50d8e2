"""benchmarks/token_tiles.py: on attention with local structure in three dimensions the tile order keeps more of
what matters than the raster order at the same block sparsity, and keep-all is unchanged by the order."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
bench = importlib.import_module("token_tiles")


def test_tiles_keep_more_of_local_3d_attention_than_raster_order():
    res = bench.measure()
    for keep_ratio, err in res["errors"].items():
        assert err["tiles"] < 0.8 * err["raster"], (keep_ratio, err)


def test_keep_all_is_unchanged_by_the_order():
    grid = (4, 8, 8)
    q, k, v = bench.smooth_qkv(grid)
    tiled = bench.pack_module("core.attention.token_tiles").tile_order(grid, 64)
    assert bench.sparse_error(q, k, v, tiled, 64, 1.0) < 1e-5
    assert bench.sparse_error(q, k, v, torch.arange(math.prod(grid)), 64, 1.0) < 1e-5
