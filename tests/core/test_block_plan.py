"""core/attention BlockPlan: the kept blocks are a prefix of the ranking, and the BlockMask built from the plan
without sorting equals the reference builder's, list by list (full and partial)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
attn = importlib.import_module("pyra_pack.core.attention")
bsa = importlib.import_module("pyra_pack.kernels.block_sparse_attention")
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

SETTINGS = [  # keep_mass, keep_ratio, text_tokens, text_at_end
    (0.5, 0.0, 0, False), (0.9, 0.0, 70, False), (0.01, 0.0, 150, True),  # forced blocks exceed the mass
    (1.0, 0.0, 0, False), (0.9, 0.2, 0, False), (0.9, 0.5, 40, True), (0.9, 0.1, 200, False),
]


def qkv(n, heads=3, dim=16, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=g) for _ in range(3)]


def old_predictor_mask(q, k, block, keep_mass, keep_ratio, text_tokens, text_at_end):
    """The predictor before BlockPlan (scatter the kept ranks, OR the forced blocks): the plan must match it."""
    qp, kp = attn.pool_blocks(q, block), attn.pool_blocks(k, block)
    probs = torch.softmax(qp @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    n, blocks = q.shape[-2], probs.shape[-1]
    text = torch.zeros(blocks, dtype=torch.bool)
    if text_tokens and text_at_end:
        text[(n - text_tokens) // block:] = True
    elif text_tokens:
        text[: math.ceil(text_tokens / block)] = True
    forced = torch.eye(blocks, dtype=torch.bool) | text[None, :] | text[:, None]
    order = torch.argsort(probs + 2.0 * forced, dim=-1, descending=True)
    rank_probs = probs.gather(-1, order)
    if keep_ratio > 0:
        keep = (torch.arange(blocks) < max(1, round(keep_ratio * blocks))).expand_as(rank_probs)
    elif keep_mass >= 1.0:
        keep = torch.ones_like(rank_probs, dtype=torch.bool)
    else:
        keep = (rank_probs.cumsum(-1) - rank_probs) < keep_mass
    return torch.zeros_like(keep).scatter(-1, order, keep) | forced


def dense_list(counts, idx, blocks):
    """(…, nq) counts and (…, nq, w) indices -> bool (…, nq, blocks): the blocks of one BlockMask list."""
    valid = (torch.arange(idx.shape[-1]) < counts[..., None]).to(torch.int32)
    hits = torch.zeros(*idx.shape[:-1], blocks, dtype=torch.int32).scatter_add_(-1, idx.long(), valid)
    assert hits.max() <= 1, "a block listed twice"
    return hits.bool()


def lists(flex_mask, blocks):
    return (dense_list(flex_mask.kv_num_blocks, flex_mask.kv_indices, blocks),
            dense_list(flex_mask.full_kv_num_blocks, flex_mask.full_kv_indices, blocks))


@pytest.mark.parametrize("n", [320, 256, 300 + 64 * 3])
@pytest.mark.parametrize("setting", SETTINGS)
def test_plan_keeps_a_prefix_of_its_ranking_and_matches_the_old_predictor(n, setting):
    q, k, _ = qkv(n)
    plan = attn.predict_block_plan(q, k, 64, *setting)
    blocks = plan.mask.shape[-1]
    assert plan.order.dtype == plan.counts.dtype == torch.int32
    assert torch.equal(dense_list(plan.counts, plan.order, blocks), plan.mask)
    assert torch.equal(plan.mask, old_predictor_mask(q, k, 64, *setting))
    assert torch.equal(attn.predict_block_mask(q, k, 64, *setting), plan.mask)


@pytest.mark.parametrize("n", [320, 256, 300])
@pytest.mark.parametrize("setting", SETTINGS)
def test_plan_builder_equals_reference_builder(n, setting):
    q, k, _ = qkv(n)
    plan = attn.predict_block_plan(q, k, 64, *setting)
    blocks = plan.mask.shape[-1]
    fast_mask, ref_mask = bsa.plan_to_flex_block_mask(plan, n, n), bsa.to_flex_block_mask(plan.mask, 64, n, n)
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        # the compiled kernel reads these with dense strides (an expanded count tensor gave wrong output on the GPU)
        mine, theirs = getattr(fast_mask, name), getattr(ref_mask, name)
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype and mine.is_contiguous(), name
    fast, ref = lists(fast_mask, blocks), lists(ref_mask, blocks)
    assert torch.equal(fast[0], ref[0]) and torch.equal(fast[1], ref[1])
    assert fast[0].any() == bool(n % 64)  # ragged: the kept last key block is partial, in every row keeping it
    assert torch.equal(fast[0] | fast[1], plan.mask)


def test_comparison_detects_a_ragged_block_left_in_the_full_list():
    q, k, _ = qkv(300)
    plan = attn.predict_block_plan(q, k, 64, keep_mass=1.0)
    from torch.nn.attention.flex_attention import BlockMask

    naive = BlockMask.from_kv_blocks(torch.zeros_like(plan.counts), plan.order[..., :1], plan.counts, plan.order,
                                     BLOCK_SIZE=64, seq_lengths=(300, 300), compute_q_blocks=False)
    blocks = plan.mask.shape[-1]
    ref = lists(bsa.to_flex_block_mask(plan.mask, 64, 300, 300), blocks)
    assert not torch.equal(lists(naive, blocks)[1], ref[1])


@pytest.mark.parametrize("n", [300, 320])
def test_flex_with_plan_equals_dense_masked_reference(n):
    q, k, v = qkv(n)
    plan = attn.predict_block_plan(q, k, 64, keep_mass=0.5, text_tokens=20)
    ref = bsa.dense_masked_attention(q, k, v, plan.mask, 64)
    torch.testing.assert_close(bsa.flex_block_sparse_attention(q, k, v, plan, 64), ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(bsa.SparseAttentionBackend()(q, k, v, plan, 64), ref)  # CPU: the reference itself
    with pytest.raises(ValueError, match="128-token blocks"):
        bsa.flex_block_sparse_attention(q, k, v, attn.predict_block_plan(q, k, 128), 64)
