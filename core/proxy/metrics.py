"""Image similarity against a reference: PSNR and SSIM (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5,
K1 0.01, K2 0.03) for images in [-1, 1] (data range 2), per image of a batch (B, C, H, W); and a distance between
two sets of images that needs no pairing, the sliced Wasserstein distance of their patches."""

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


def patch_sliced_wasserstein(x: Tensor, y: Tensor, patch: int = 8, patches: int = 4096, directions: int = 256,
                             seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between the patch distributions of two image batches (B, C, H, W), of any
    sizes: `patches` random `patch` x `patch` patches from each, flattened and projected on `directions` random
    unit vectors; per direction the sorted projections are matched (the 1-D optimal transport), and the result is
    the root mean squared difference over directions and quantiles. 0 for identical distributions; it grows with
    any difference of the two in colour, contrast or texture, and needs no correspondence between the images."""
    g = torch.Generator().manual_seed(seed)

    def sample(images: Tensor) -> Tensor:
        b, _, h, w = images.shape
        idx = torch.randint(0, b, (patches,), generator=g)
        top = torch.randint(0, h - patch + 1, (patches,), generator=g)
        left = torch.randint(0, w - patch + 1, (patches,), generator=g)
        rows = (top[:, None] + torch.arange(patch)[None, :])[:, :, None]
        cols = (left[:, None] + torch.arange(patch)[None, :])[:, None, :]
        out = images.double().cpu()[idx[:, None, None], :, rows, cols]   # (patches, patch, patch, C)
        return out.flatten(1)

    px, py = sample(x), sample(y)
    dirs = torch.randn(px.shape[1], directions, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    qx, _ = (px @ dirs).sort(dim=0)
    qy, _ = (py @ dirs).sort(dim=0)
    return float((qx - qy).square().mean().sqrt())
