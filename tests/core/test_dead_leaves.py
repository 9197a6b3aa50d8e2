"""Dead-leaves images: the byte-argmax generator matches the plain float formulation and looks like the data."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
from packload import load_pack_package

load_pack_package()
analytic = importlib.import_module("pyra_pack.core.analytic")


@pytest.mark.parametrize("seed,size", [(0, 64), (1, 32), (2, 48)])
def test_fast_generator_matches_the_reference(seed, size):
    fast = analytic.dead_leaves(8, size, torch.Generator().manual_seed(seed))
    ref = analytic.dead_leaves_reference(8, size, torch.Generator().manual_seed(seed))
    assert fast.shape == (8, 3, size, size) and fast.dtype == torch.float32
    assert torch.equal(fast, ref)  # float rounding at a disc edge could flip a pixel; none does at these seeds


def test_the_comparison_can_fail_and_images_are_dead_leaves():
    g = torch.Generator().manual_seed(0)
    x = analytic.dead_leaves(16, 64, g)
    assert x.min() >= -1 and x.max() <= 1
    colours = x.permute(0, 2, 3, 1).reshape(16, -1, 3)
    assert all(1 < len(torch.unique(c, dim=0)) <= 121 for c in colours)  # flat discs over one background
    other = analytic.dead_leaves(16, 64, torch.Generator().manual_seed(1))
    assert not torch.equal(x, other)
    smaller = analytic.dead_leaves_reference(16, 64, torch.Generator().manual_seed(0), r_max=12.0)
    assert not torch.equal(x, smaller)  # another radius law is told apart
    power = torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)).abs().square().mean((0, 1))
    f = torch.fft.fftfreq(64)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    bands = [power[(radius > lo) & (radius <= lo * 2)].mean() for lo in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)]
    slopes = [float((a / b).log2()) for a, b in itertools.pairwise(bands)]  # per octave; natural images: about 2
    assert all(1.2 < s < 3.5 for s in slopes), slopes  # white noise: 0
