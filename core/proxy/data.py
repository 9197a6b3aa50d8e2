"""Training images as a model sees them: random crops at random scales, random flips, at several resolutions.

`ImageBank` keeps images of different sizes in one atlas on the training device and cuts batches of square
crops with one `grid_sample` per mip level: a crop of side c source pixels, resized to `size`, is read from the
level 2^L with c / 2^L <= 2 * size (box-filtered, so a downscale never aliases by more than a bilinear 2x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class ImageBank:
    """Images (3, H_i, W_i) in [-1, 1], padded to (H_max, W_max) and stacked vertically into one atlas
    (1, 3, N H_max, W_max), with its mip levels (2x box pools; H_max and W_max are multiples of 2^(levels - 1), so
    no pool mixes two images). A batch of crops is one grid_sample per mip level over the atlas: no per-crop copy
    of an image."""

    def __init__(self, images: list[Tensor], device=None, levels: int = 4):
        if not images:
            raise ValueError("an ImageBank needs at least one image")
        device = torch.device(device or images[0].device)
        self.sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.float32, device=device)
        unit = 2 ** (levels - 1)
        h, w = (math.ceil(max(im.shape[d] for im in images) / unit) * unit for d in (-2, -1))
        atlas = torch.zeros(1, 3, len(images) * h, w, device=device)
        for i, im in enumerate(images):
            atlas[0, :, i * h: i * h + im.shape[-2], : im.shape[-1]] = im.to(device, torch.float32)
        self.cell = (h, w)
        self.mips = [atlas]
        for _ in range(levels - 1):
            self.mips.append(F.avg_pool2d(self.mips[-1], 2))

    def __len__(self) -> int:
        return self.sizes.shape[0]

    def crops(self, n: int, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.25, 1.0),
              flip: bool = True) -> Tensor:
        """(n, 3, size, size): image uniform, crop side = (shorter side - 1) * u with log u uniform in `scale`,
        position uniform inside the image (half a pixel clear of its edges, so bilinear taps stay inside),
        horizontal flip with probability 1/2; bilinear from the mip level where the crop is at most 2x `size`."""
        dev = self.mips[0].device
        rand = lambda *shape: torch.rand(*shape, generator=generator, device=generator.device).to(dev)  # noqa: E731
        idx = (rand(n) * len(self)).long().clamp_max(len(self) - 1)
        hw = self.sizes[idx]
        lo, hi = math.log(scale[0]), math.log(scale[1])
        side = (hw.min(1).values - 1) * torch.exp(lo + (hi - lo) * rand(n))
        cy = 0.5 + side / 2 + rand(n) * (hw[:, 0] - 1 - side) + idx * self.cell[0]  # atlas rows, edge units
        cx = 0.5 + side / 2 + rand(n) * (hw[:, 1] - 1 - side)
        sign = torch.where(rand(n) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
        g = (2 * torch.arange(size, device=dev, dtype=torch.float32) + 1) / size - 1  # output pixel centres
        half = side[:, None] / 2
        ys = 2 * (cy[:, None] + half * g) / (len(self) * self.cell[0]) - 1  # (n, size) normalised atlas coords
        xs = 2 * (cx[:, None] + half * sign[:, None] * g) / self.cell[1] - 1
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1)  # (n, size, size, 2)
        level = torch.clamp(torch.floor(torch.log2(side / (2 * size))) + 1, 0, len(self.mips) - 1).long()
        out = torch.empty(n, 3, size, size, device=dev)
        for lv in level.unique().tolist():
            sel = (level == lv).nonzero().flatten()
            folded = grid[sel].reshape(1, len(sel) * size, size, 2)
            got = F.grid_sample(self.mips[lv], folded, mode="bilinear", padding_mode="border", align_corners=False)
            out[sel] = got.reshape(3, len(sel), size, size).transpose(0, 1)
        return out


def multires_batches(resolutions: dict[int, float], token_budget: int, tokens_per_pixel: float,
                     generator: torch.Generator, max_batch: int = 1024):
    """Endless (size, batch) pairs: size drawn with the given weights, batch = token_budget / tokens of the size
    (at least 1, at most max_batch), so every step costs about the same."""
    sizes = list(resolutions)
    weights = torch.tensor([resolutions[s] for s in sizes], dtype=torch.float64)
    while True:
        size = sizes[int(torch.multinomial(weights, 1, generator=generator))]
        tokens = size * size * tokens_per_pixel
        yield size, int(max(1, min(max_batch, token_budget // max(tokens, 1))))
