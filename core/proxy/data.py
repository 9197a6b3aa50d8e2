"""Training images as a model sees them: random crops at random scales, random flips, at several resolutions.

`ImageBank` keeps images of different sizes in one padded tensor on the training device and cuts batches of
square crops with one `grid_sample` per mip level: a crop of side c source pixels, resized to `size`, is read
from the level 2^L with c / 2^L <= 2 * size (box-filtered, so a downscale never aliases by more than a bilinear 2x).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class ImageBank:
    """Images (3, H_i, W_i) in [-1, 1], padded into (N, 3, H_max, W_max) with their mip levels (2x box pools)."""

    def __init__(self, images: list[Tensor], device=None, levels: int = 4):
        if not images:
            raise ValueError("an ImageBank needs at least one image")
        device = torch.device(device or images[0].device)
        self.sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.float32, device=device)
        h = max(im.shape[-2] for im in images)
        w = max(im.shape[-1] for im in images)
        h, w = (math.ceil(v / 2**levels) * 2**levels for v in (h, w))
        stack = torch.zeros(len(images), 3, h, w, device=device)
        for i, im in enumerate(images):
            stack[i, :, : im.shape[-2], : im.shape[-1]] = im.to(device, torch.float32)
        self.mips = [stack]
        for _ in range(levels - 1):
            self.mips.append(F.avg_pool2d(self.mips[-1], 2))

    def __len__(self) -> int:
        return self.sizes.shape[0]

    def crops(self, n: int, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.25, 1.0),
              flip: bool = True) -> Tensor:
        """(n, 3, size, size): image uniform, crop side = shorter side * u with log u uniform in `scale`,
        position uniform inside the image, horizontal flip with probability 1/2 (bilinear resize)."""
        dev = self.mips[0].device
        rand = lambda *shape: torch.rand(*shape, generator=generator, device=generator.device).to(dev)  # noqa: E731
        idx = (rand(n) * len(self)).long().clamp_max(len(self) - 1)
        hw = self.sizes[idx]
        lo, hi = math.log(scale[0]), math.log(scale[1])
        side = hw.min(1).values * torch.exp(lo + (hi - lo) * rand(n))
        cy = side / 2 + rand(n) * (hw[:, 0] - side)
        cx = side / 2 + rand(n) * (hw[:, 1] - side)
        sign = torch.where(rand(n) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
        level = torch.clamp(torch.floor(torch.log2(side / (2 * size))) + 1, 0, len(self.mips) - 1).long()
        out = torch.empty(n, 3, size, size, device=dev)
        full_h, full_w = self.mips[0].shape[-2:]
        for lv in level.unique().tolist():
            sel = (level == lv).nonzero().flatten()
            theta = torch.zeros(len(sel), 2, 3, device=dev)
            theta[:, 0, 0] = side[sel] / full_w * sign[sel]
            theta[:, 0, 2] = 2 * cx[sel] / full_w - 1
            theta[:, 1, 1] = side[sel] / full_h
            theta[:, 1, 2] = 2 * cy[sel] / full_h - 1
            grid = F.affine_grid(theta, [len(sel), 3, size, size], align_corners=False)
            out[sel] = F.grid_sample(self.mips[lv][idx[sel]], grid, mode="bilinear", padding_mode="border",
                                     align_corners=False)
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
