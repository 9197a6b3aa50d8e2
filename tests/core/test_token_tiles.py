"""core/attention/token_tiles.py: the tile order is a permutation whose blocks are compact tiles of the patch grid,
the text goes last, the inverse undoes it, attention is unchanged by it, and on attention with local structure in
three dimensions it keeps more of what matters than the raster order at the same block sparsity."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from packload import load_pack_package

load_pack_package()
tiles = importlib.import_module("pyra_pack.core.attention.token_tiles")
attn = importlib.import_module("pyra_pack.core.attention")
bsa = importlib.import_module("pyra_pack.kernels.block_sparse_attention")


@pytest.mark.parametrize("grid,block,tile", [((21, 45, 80), 128, (4, 4, 8)), ((1, 64, 64), 128, (1, 8, 16)),
                                             ((31, 22, 40), 128, (4, 4, 8)), ((2, 3, 5), 128, (2, 2, 4)),
                                             ((64, 64), 64, (8, 8))])
def test_tile_shape(grid, block, tile):
    assert tiles.tile_shape(grid, block) == tile


@pytest.mark.parametrize("grid", [(5, 9, 12), (1, 16, 16), (3, 8, 20)])
def test_blocks_of_the_order_are_whole_tiles_then_the_rest_in_raster_order(grid):
    block = 32
    tile = tiles.tile_shape(grid, block)
    perm = tiles.tile_order(grid, block)
    n = math.prod(grid)
    assert torch.equal(torch.sort(perm).values, torch.arange(n))
    coords = torch.stack(torch.unravel_index(perm, grid), -1)
    full = math.prod(g // t for g, t in zip(grid, tile, strict=True))
    for b in range(full):
        box = coords[b * block:(b + 1) * block]
        assert tuple((box.max(0).values - box.min(0).values + 1).tolist()) == tile
    rest = perm[full * block:]
    assert torch.equal(rest, torch.sort(rest).values)


def test_sequence_order_puts_the_text_last_and_inverts():
    grid, lead = (2, 8, 8), 7
    perm, inv = tiles.sequence_order(grid, 32, lead)
    assert torch.equal(perm[-lead:], torch.arange(lead)) and perm[:-lead].min() == lead
    x = torch.randn(lead + 128)
    assert torch.equal(x[perm][inv], x)


def _smooth_qkv(grid, dim=32, sharpness=4.0, seed=0):
    """q = k: a random field smoothed over all three axes (neighbours in time and space attend to each other),
    scaled so the attention is peaked; v white noise."""
    g = torch.Generator().manual_seed(seed)
    field = torch.randn(1, dim, *grid, generator=g)
    for _ in range(3):
        field = F.avg_pool3d(F.pad(field, (2, 2, 2, 2, 2, 2), mode="replicate"), 5, stride=1)
    field = (field - field.mean()) / field.std()
    q = (field.flatten(2).transpose(1, 2) * sharpness / dim ** 0.25)[:, None]   # (1, 1, N, dim)
    return q, q.clone(), torch.randn(q.shape, generator=g)


def _sparse_error(q, k, v, perm, block, keep_ratio):
    inv = tiles.inverse(perm)
    qp, kp, vp = (t[:, :, perm] for t in (q, k, v))
    plan = attn.predict_block_plan(qp, kp, block, keep_ratio=keep_ratio, compiled=False)
    out = bsa.dense_masked_attention(qp, kp, vp, plan.mask, block)[:, :, inv]
    dense = F.scaled_dot_product_attention(q, k, v)
    return float((out - dense).norm() / dense.norm())


def test_tiles_keep_more_of_local_3d_attention_than_raster_order():
    grid, block = (8, 16, 16), 64
    q, k, v = _smooth_qkv(grid)
    raster = torch.arange(math.prod(grid))
    tiled = tiles.tile_order(grid, block)
    for keep_ratio in (0.1, 0.25):
        err_raster = _sparse_error(q, k, v, raster, block, keep_ratio)
        err_tiles = _sparse_error(q, k, v, tiled, block, keep_ratio)
        print(f"keep {keep_ratio}: relative error raster {err_raster:.4f}, tiles {err_tiles:.4f}")
        assert err_tiles < 0.8 * err_raster
    # keep-all: the permutation changes nothing
    assert _sparse_error(q, k, v, tiled, block, 1.0) < 1e-5
