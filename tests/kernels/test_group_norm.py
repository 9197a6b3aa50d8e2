"""kernels/group_norm: both backends equal torch's GroupNorm when given the whole tensor's statistics, in fp32 and
bf16, with and without the affine; the check fails on wrong statistics."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from packload import load_pack_package

load_pack_package()
gn = importlib.import_module("pyra_pack.kernels.group_norm")


def _case(dtype, affine: bool, groups: int = 8, channels: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(2, channels, 6, 5, generator=g) * 3 + 1).to(dtype)
    weight = torch.randn(channels, generator=g) if affine else None
    bias = torch.randn(channels, generator=g) if affine else None
    var, mean = torch.var_mean(x.float().reshape(2, groups, -1), dim=-1, correction=0)
    return x, mean, torch.rsqrt(var + 1e-6), weight, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("backend", ["reference", "batch_norm"])
def test_equals_torch_group_norm(dtype, affine, backend):
    x, mean, rstd, weight, bias = _case(dtype, affine)
    want = F.group_norm(x.float(), 8, weight, bias, eps=1e-6).to(dtype)
    if backend == "reference":
        got = gn.group_norm_reference(x, mean, rstd, weight, bias, 8)
    else:
        got = gn.group_norm_batch_norm(x, gn.per_channel(mean, rstd, weight, bias, 1e-6, 32, x.device), 1e-6)
    assert got.dtype == dtype
    # tolerance: fp32 within 1e-5 of torch; bf16 within one bf16 rounding step of the fp32 result
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7 * want.float().abs().max().item()
    assert (got.float() - want.float()).abs().max().item() <= tol


def test_wrong_statistics_are_caught():
    x, mean, rstd, weight, bias = _case(torch.float32, True)
    want = F.group_norm(x, 8, weight, bias, eps=1e-6)
    got = gn.group_norm_reference(x, mean + 0.1, rstd, weight, bias, 8)
    assert (got - want).abs().max().item() > 1e-2
