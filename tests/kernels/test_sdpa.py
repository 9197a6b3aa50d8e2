"""kernels/sdpa: the score-free fused call and the chunked reference agree; the fastest choice is plain SDPA on
the CPU."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from packload import load_pack_package

load_pack_package()
sdpa = importlib.import_module("pyra_pack.kernels.sdpa")


def _qkv(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_fused_sdpa_equals_chunked_attention():
    """The GPU's one-call attention (tried here with the CPU's flash kernel) equals the chunked reference."""
    q, k, v = (_qkv((1, 1, 50, 16), seed) for seed in (1, 2, 3))
    fused = sdpa.fused_sdpa(q, k, v)
    assert fused is not None
    chunked = sdpa.chunked_sdpa(q, k, v, budget_bytes=3 * 50 * 4 * 7)   # chunks of 7 queries
    assert (fused - chunked).abs().max().item() <= 1e-5
    assert (fused - chunked.flip(2)).abs().max().item() > 1e-2   # the check can fail


def test_chunked_reference_equals_plain_sdpa_for_any_chunk():
    q, k, v = (_qkv((2, 3, 33, 8), seed) for seed in (4, 5, 6))
    whole = F.scaled_dot_product_attention(q, k, v)
    for budget in (1, 3 * 33 * 4 * 5, 1 << 30):
        assert torch.allclose(sdpa.chunked_sdpa(q, k, v, budget), whole, atol=1e-6)


def test_fastest_sdpa_is_plain_sdpa_on_cpu():
    q, k, v = (_qkv((1, 2, 40, 16), seed) for seed in (7, 8, 9))
    assert torch.equal(sdpa.fastest_sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v))
