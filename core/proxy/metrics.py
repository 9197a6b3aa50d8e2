"""Image similarity against a reference: PSNR and SSIM (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5,
K1 0.01, K2 0.03) for images in [-1, 1] (data range 2), per image of a batch (B, C, H, W)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """(B,) 10 log10(range^2 / MSE)."""
    mse = (x.double() - ref.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def ssim(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """(B,) mean SSIM over channels and valid window positions."""
    x, ref = x.double(), ref.double()
    g = torch.exp(-((torch.arange(11, dtype=torch.float64, device=x.device) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    c = x.shape[1]
    win = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)
    blur = lambda t: F.conv2d(t, win, groups=c)  # noqa: E731
    mx, my = blur(x), blur(ref)
    vx, vy, cov = blur(x * x) - mx**2, blur(ref * ref) - my**2, blur(x * ref) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
