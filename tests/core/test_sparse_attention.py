"""core/attention: mask predictor properties, the FlexAttention path against the dense masked reference."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from packload import load_pack_package

load_pack_package()
attn = importlib.import_module("pyra_pack.core.attention")
bsa = importlib.import_module("pyra_pack.kernels.block_sparse_attention")
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def qkv(n=320, heads=2, dim=16, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=g) for _ in range(3)]


@pytest.mark.parametrize("n,block", [(320, 64), (300, 64), (256, 128)])
def test_diagonal_and_text_always_kept(n, block):
    q, k, _ = qkv(n)
    blocks = math.ceil(n / block)
    for text_at_end in (False, True):
        mask = attn.predict_block_mask(q, k, block, keep_mass=0.01, text_tokens=70, text_at_end=text_at_end)
        assert mask.shape == (1, 2, blocks, blocks)
        assert mask.diagonal(dim1=-2, dim2=-1).all()
        text = sorted({b for b in range(blocks) if b * block < 70} if not text_at_end
                      else {b for b in range(blocks) if (b + 1) * block > n - 70})
        assert text and mask[..., :, text].all() and mask[..., text, :].all()
    tight = attn.predict_block_mask(q, k, block, keep_mass=0.01)
    assert attn.block_sparsity(tight) > 0  # the threshold really drops blocks


def test_mass_one_keeps_everything_and_mass_grows_monotonically():
    q, k, _ = qkv(512)
    assert attn.predict_block_mask(q, k, 64, keep_mass=1.0).all()
    kept = [attn.predict_block_mask(q, k, 64, keep_mass=m).sum().item() for m in (0.2, 0.5, 0.8, 0.99)]
    assert kept == sorted(kept) and kept[0] < kept[-1]


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_keep_ratio_respected(ratio):
    q, k, _ = qkv(1280)
    mask = attn.predict_block_mask(q, k, 64, keep_ratio=ratio)
    assert (mask.sum(-1) == round(ratio * 20)).all()
    with_text = attn.predict_block_mask(q, k, 64, keep_ratio=ratio, text_tokens=64)  # text counts in the budget
    assert (with_text.sum(-1)[..., 1:] == round(ratio * 20)).all() and with_text[..., 0, :].all()


def test_predictor_keeps_the_structured_blocks():
    """Key block (i + 3) mod 8 is made to match query block i: the predictor must find it."""
    g = torch.Generator().manual_seed(1)
    centers = 4 * torch.randn(8, 32, generator=g)
    q = (centers.repeat_interleave(64, 0) + torch.randn(512, 32, generator=g))[None, None]
    k = (centers.roll(3, 0).repeat_interleave(64, 0) + torch.randn(512, 32, generator=g))[None, None]
    mask = attn.predict_block_mask(q, k, 64, keep_ratio=2 / 8)
    for i in range(8):
        assert mask[0, 0, i, (i + 3) % 8] and mask[0, 0, i, i]


def test_expand_block_mask_ragged():
    bm = torch.tensor([[True, False], [False, True]])
    el = bsa.expand_block_mask(bm, 4, 6, 5)
    assert el.shape == (6, 5) and el[:4, :4].all() and not el[:4, 4].any() and el[4:, 4].all()


@pytest.mark.parametrize("n,block", [(256, 64), (300, 64), (384, 128)])
def test_flex_equals_dense_masked_reference(n, block):
    q, k, v = qkv(n, batch=2)
    mask = attn.predict_block_mask(q, k, block, keep_mass=0.5, text_tokens=20)
    ref = bsa.dense_masked_attention(q, k, v, mask, block)
    fast = bsa.flex_block_sparse_attention(q, k, v, mask, block)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=1e-4)
    dense = F.scaled_dot_product_attention(q, k, v)
    assert (ref - dense).abs().max() > 1e-3  # the mask changes the result: the comparison is not vacuous


@pytest.mark.parametrize("n", [256, 300])
def test_keep_all_equals_dense_sdpa(n):
    q, k, v = qkv(n)
    mask = attn.predict_block_mask(q, k, 64, keep_mass=1.0)
    dense = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(bsa.flex_block_sparse_attention(q, k, v, mask, 64), dense, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(bsa.dense_masked_attention(q, k, v, mask, 64), dense, atol=2e-6, rtol=1e-5)


def test_reference_against_float64_softmax():
    q, k, v = qkv(200)
    mask = attn.predict_block_mask(q, k, 64, keep_mass=0.4)
    el = bsa.expand_block_mask(mask, 64, 200, 200)
    scores = (q.double() @ k.double().transpose(-1, -2) / 4).masked_fill(~el, float("-inf"))
    exact = torch.softmax(scores, -1) @ v.double()
    torch.testing.assert_close(bsa.dense_masked_attention(q, k, v, mask, 64).double(), exact, atol=1e-5, rtol=1e-5)


def test_wrong_mask_is_detected():
    q, k, v = qkv(256)
    mask = attn.predict_block_mask(q, k, 64, keep_mass=0.5)
    ref = bsa.dense_masked_attention(q, k, v, mask, 64)
    broken = mask.clone()
    broken[0, 0, 1, :] = ~broken[0, 0, 1, :]
    broken[0, 0, 1, 1] = True
    fast = bsa.flex_block_sparse_attention(q, k, v, broken, 64)
    assert not torch.allclose(fast, ref, atol=2e-5, rtol=1e-4)


def test_backend_falls_back_on_cpu_with_one_reason(caplog, monkeypatch):
    monkeypatch.setattr(importlib.import_module("pyra_pack.kernels.fallback"), "_said", set())  # a fresh process
    q, k, v = qkv(256)
    mask = attn.predict_block_mask(q, k, 64, keep_mass=0.5)
    backend = bsa.SparseAttentionBackend()
    with caplog.at_level("WARNING"):
        out1 = backend(q, k, v, mask, 64)
        out2 = backend(q, k, v, mask, 64)
    assert torch.equal(out1, bsa.dense_masked_attention(q, k, v, mask, 64)) and torch.equal(out1, out2)
    reasons = [r for r in caplog.records if "block-sparse attention" in r.getMessage()
               and "using the reference" in r.getMessage()]
    assert len(reasons) == 1 and "cpu" in backend.fallback_reason


def test_bad_input_errors():
    q, k, _ = qkv(128)
    with pytest.raises(ValueError, match="self-attention"):
        attn.predict_block_mask(q, k[..., :64, :], 64)
    with pytest.raises(ValueError, match="keep_ratio"):
        attn.predict_block_mask(q, k, 64, keep_ratio=1.5)


@pytest.mark.parametrize(("n", "block", "dtype"),
                         [(320, 64, torch.float32), (300, 64, torch.bfloat16), (40, 64, torch.float32)])
def test_pool_blocks_is_the_mean_of_each_blocks_real_tokens(n, block, dtype):
    x = qkv(n)[0].to(dtype)
    want = torch.stack([x[..., i: i + block, :].float().mean(-2) for i in range(0, n, block)], dim=-2)
    got = attn.pool_blocks(x, block)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
