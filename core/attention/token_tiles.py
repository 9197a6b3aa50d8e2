"""Token order for block masks over video and image tokens: blocks of compact (frames x height x width) tiles.

A DiT flattens its patch grid (F, H, W) row-major, so a block of 128 consecutive tokens is a strip of one or two
rows of one frame: its pooled query and key average tokens that are far apart on the other axes, and a strip
has more neighbours outside it than a compact tile of the same size. Attention is equivariant under a common
permutation of the tokens (queries, keys and values permuted alike, the output permuted back), so the block
mask may be predicted and applied in any order. `tile_order` gives the order where every block is one tile of
`block_size` tokens, as cubic as the grid allows (Sparse VideoGen and radial attention group video tokens the
same way). Tokens of the partial tiles at the grid's far edges follow the full tiles, in raster order, and the
text (if any) comes last, so the full tiles stay aligned to the blocks.
"""

from __future__ import annotations

import math

import torch

from ...kernels.bounded import BoundedCache

_orders = BoundedCache(32)


def tile_shape(grid: tuple[int, ...], block_size: int) -> tuple[int, ...]:
    """The tile of `block_size` tokens (a power of two) over `grid`: the smallest side is doubled while it fits
    in the grid (the last axis first on ties), so the tile is as cubic as the grid allows. A grid too small for
    a whole tile gets the largest tile that fits."""
    tile = [1] * len(grid)
    while math.prod(tile) < block_size:
        grow = [d for d in range(len(grid)) if tile[d] * 2 <= grid[d]]
        if not grow:
            break
        d = min(reversed(grow), key=lambda i: tile[i])
        tile[d] *= 2
    return tuple(tile)


def tile_order(grid: tuple[int, ...], block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Long (prod(grid),): perm such that tokens[perm] lists the full tiles one after another (each in raster
    order), then the tokens of no full tile, in raster order. Kept per (grid, block size, device)."""
    grid = tuple(int(g) for g in grid)

    def build() -> torch.Tensor:
        tile = tile_shape(grid, block_size)
        idx = torch.arange(math.prod(grid)).view(grid)
        full = tuple(g // t * t for g, t in zip(grid, tile, strict=True))
        inner = idx[tuple(slice(0, f) for f in full)]
        # (n0, t0, n1, t1, ...) -> (n0, n1, ..., t0, t1, ...): tile after tile, each tile in raster order
        split = inner.reshape([s for f, t in zip(full, tile, strict=True) for s in (f // t, t)])
        n = len(grid)
        tiled = split.permute(*range(0, 2 * n, 2), *range(1, 2 * n, 2)).reshape(-1)
        in_tile = torch.zeros(math.prod(grid), dtype=torch.bool)
        in_tile[tiled] = True
        return torch.cat((tiled, idx.reshape(-1)[~in_tile])).to(device)

    return _orders.get((grid, block_size, str(device)), build)


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes `perm`: x[perm][inverse(perm)] == x."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def sequence_order(grid: tuple[int, ...], block_size: int, lead: int = 0,
                   device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, inverse) over a sequence of `lead` tokens (text) followed by the grid's tokens: the grid's tiles
    first (tile_order), the `lead` tokens last. Kept per (grid, block size, lead, device)."""
    grid = tuple(int(g) for g in grid)

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        perm = tile_order(grid, block_size) + lead
        perm = torch.cat((perm, torch.arange(lead))).to(device)
        return perm, inverse(perm)

    return _orders.get(("sequence", grid, block_size, lead, str(device)), build)
