"""DFM levels: an S-level Laplacian pyramid of a latent, coarse first, and the per-level patch geometry.

Level 0 is the coarsest (stage 1 of the paper), at 1/2^(S-1) of the full size; level S-1 is the finest
Laplacian band at full size. Split and merge are core.multilevel.pyramids' decompose / reconstruct (exact to float
rounding). Levels are spatial only: a video latent (B, C, T, H, W) is split frame by frame (every level keeps
all T frames), which is what Wan's 1 x 2 x 2 patch allows: a temporal level would need a temporal patch > 1 to
land on the same token grid. Every level lands on the base model's token grid: the finest level keeps the base
patch p, level i uses patch p / 2^(S-1-i), so S <= log2(p) + 1 for a pretrained model (p = 2: two levels).

The new per-level layers start from the base model's (ALGORITHMS.md section 1, "initialise copies from the
pretrained layers and the coarse patch embed from a down-mixed img_in"): with nearest-neighbour up-sampling U,
a level-i patch embedding W_i = W o U (the block sum of the base kernel) and a level-i output head
rows_i = band_i(rows) (block means minus their coarser block means) make the per-level model equal the base
for S = 1 exactly; for S > 1 they are a start, not an identity (the pyramid up-samples bilinearly).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..multilevel.pyramids import Pyramid, decompose, reconstruct
from ..samplers.pyramid import pool, unpool


class DFMShapeError(ValueError):
    """A latent or level count that the DFM geometry cannot take; the message says what to change."""


def max_levels(patch: int) -> int:
    """Most levels that keep the token grid of a model with square patch `patch`."""
    return int(math.log2(patch)) + 1 if patch & (patch - 1) == 0 else 1


def check_levels(levels: int, patch: int) -> None:
    if not 1 <= levels <= max_levels(patch):
        raise DFMShapeError(f"a model with patch size {patch} keeps its token grid for 1 to {max_levels(patch)} "
                            f"DFM levels, not {levels}: choose fewer levels")


def level_factor(i: int, levels: int) -> int:
    """Down-sampling factor of level i (0 = coarsest) relative to the full latent."""
    return 2 ** (levels - 1 - i)


def level_patch(i: int, levels: int, patch: int) -> int:
    return patch // level_factor(i, levels)


def level_sizes(height: int, width: int, levels: int, patch: int) -> list[tuple[int, int]]:
    """(h, w) of every level, coarse first; raises unless the latent divides into whole patches."""
    check_levels(levels, patch)
    if height % patch or width % patch:
        raise DFMShapeError(f"a {width}x{height} latent does not divide into {patch}x{patch} patches: use a size "
                            f"that is a multiple of {patch} latent pixels ({patch * 8} image pixels)")
    return [(height // level_factor(i, levels), width // level_factor(i, levels)) for i in range(levels)]


def split(x: Tensor, levels: int) -> list[Tensor]:
    """(B, C, H, W) -> levels coarse first: [low, band_{S-2}, ..., band_0] of core.multilevel.pyramids."""
    if levels == 1:
        return [x]
    p = decompose(x, levels - 1)
    return [p.low.to(x.dtype), *[b.to(x.dtype) for b in reversed(p.bands)]]


def merge(parts: list[Tensor]) -> Tensor:
    """Inverse of `split` (exact to float rounding)."""
    if len(parts) == 1:
        return parts[0]
    return reconstruct(Pyramid("laplacian", list(reversed(parts[1:])), parts[0], parts[0].dtype))


def partial_merge(parts: list[Tensor], active: int) -> Tensor:
    """The full-size reconstruction from the first `active` levels (the finer ones zero): a preview."""
    return merge([p if i < active else torch.zeros_like(p) for i, p in enumerate(parts)])


def pack(parts: list[Tensor]) -> Tensor:
    """Levels (B, C, h_i, w_i) -> one (B, C, 1, sum h_i w_i) tensor the host can batch like a latent; video
    levels (B, C, T, h_i, w_i) -> (B, C, 1, 1, sum T h_i w_i), still 5-D as the host expects of a video model."""
    flat = torch.cat([p.flatten(2) for p in parts], dim=2)
    return flat.reshape(*flat.shape[:2], *[1] * (parts[0].ndim - 3), flat.shape[2])


def unpack(x: Tensor, sizes: list[tuple[int, ...]]) -> list[Tensor]:
    """Inverse of `pack`; sizes: each level's shape after (B, C): (h, w), or (T, h, w) for video."""
    flat = x.flatten(2)
    chunks = flat.split([math.prod(s) for s in sizes], dim=2)
    return [c.reshape(*c.shape[:2], *s) for c, s in zip(chunks, sizes, strict=True)]


def band_map(img: Tensor, i: int, levels: int) -> Tensor:
    """Level i of (..., p, p) patches with nearest up-sampling: the init map of the output heads."""
    f = level_factor(i, levels)
    low = pool(img, f) if f > 1 else img
    if i == 0:
        return low
    return low - unpool(pool(img, 2 * f), 2)


def embed_map(kernel: Tensor, i: int, levels: int) -> Tensor:
    """Base patch kernel (..., p, p) composed with nearest up-sampling from level i: its block sums."""
    f = level_factor(i, levels)
    return pool(kernel, f) * f * f if f > 1 else kernel.clone()
