"""Small sampling helpers shared by the in-process tests (the host must already be imported)."""

from __future__ import annotations

import torch


def denoise(patcher, cond, shape=(1, 4, 8, 8)) -> torch.Tensor:
    """The denoised x0 of one Euler step from fixed noise (seed 7) on a zero latent, CFG 1."""
    import comfy.sample

    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    seen = {}
    comfy.sample.sample(patcher, noise, 1, 1.0, "euler", "simple", cond, cond, torch.zeros(shape),
                        callback=lambda s, x0, x, t: seen.update(x0=x0.clone()), disable_pbar=True)
    return seen["x0"]
