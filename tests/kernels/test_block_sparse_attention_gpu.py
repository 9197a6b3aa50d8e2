"""Block-sparse attention on the GPU: the compiled FlexAttention path over a predicted plan (ragged length, text
tokens) against the dense masked reference, and the compiled predictor against the eager one."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
attn = importlib.import_module("pyra_pack.core.attention")
bsa = importlib.import_module("pyra_pack.kernels.block_sparse_attention")

pytestmark = pytest.mark.gpu


def qkv(n: int, heads: int = 4, dim: int = 64, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(1, heads, n, dim, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)]


@pytest.mark.parametrize("n", [1000, 1024])
def test_compiled_flex_matches_dense_masked_reference(n):
    q, k, v = qkv(n)
    plan = attn.predict_block_plan(q, k, 128, keep_ratio=0.3, text_tokens=77)
    ref = bsa.dense_masked_attention(q.float(), k.float(), v.float(), plan.mask, 128)
    out = bsa.SparseAttentionBackend()(q, k, v, plan, 128)
    assert out.shape == q.shape and out.dtype == q.dtype
    err = float((out.float() - ref).norm() / ref.norm())
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # bf16 error scale of the plain kernel
    dense_err = float((plain.float() - torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float())).norm() / ref.norm())
    assert err <= 2 * dense_err + 1e-3, (err, dense_err)
    # a different mask gives a different result: the comparison can fail
    other = bsa.dense_masked_attention(q.float(), k.float(), v.float(), plan.mask.roll(1, -1), 128)
    assert float((out.float() - other).norm() / other.norm()) > 10 * err


def test_compiled_predictor_matches_eager():
    q, k, _ = qkv(1000, heads=8)
    eager = attn.predict_block_plan(q, k, 128, keep_mass=0.9, text_tokens=64, compiled=False)
    compiled = attn.predict_block_plan(q, k, 128, keep_mass=0.9, text_tokens=64, compiled=True)
    assert torch.equal(eager.counts, compiled.counts)
    assert torch.equal(eager.mask, compiled.mask)
