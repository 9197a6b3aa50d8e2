"""core/attention/token_tiles.py: the tile order is a permutation whose blocks are compact tiles of the patch grid,
the text goes last and the inverse undoes it (its effect on attention: tests/benchmarks/test_token_tiles.py)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
tiles = importlib.import_module("pyra_pack.core.attention.token_tiles")


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
