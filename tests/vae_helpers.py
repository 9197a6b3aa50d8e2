"""Shared set-up of the VAE slicing tests: seeded weights under which every norm's affine part matters."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _norm_weight(name: str) -> bool:
    return "norm" in name and name.endswith("weight")


def seeded_(module: torch.nn.Module, seed: int = 0, is_scale: Callable[[str], bool] = _norm_weight) -> torch.nn.Module:
    """Fan-in scaled weights; 1-D parameters drawn around 1 where `is_scale(name)` (norm scales: GroupNorm weights
    by default, Wan's RMS_norm `gamma`), else around 0, so that each norm's affine part matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_((1.0 if is_scale(name) else 0.0) + 0.5 * torch.randn(p.shape, generator=g))
    return module.eval()
