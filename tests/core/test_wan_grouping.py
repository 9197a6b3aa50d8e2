"""Operator Grouping of Wan blocks (core/slicing/wan_grouping.py through host/feature_slicing.py) against the host."""

from __future__ import annotations

import pytest
import torch

FRAMES, HEIGHT, WIDTH = 3, 6, 10  # 180 tokens after the 1x2x2 patch: patch grid 3 x 6 x 10


def wan_model(cross: str = "t2v", heads: int = 4, dim: int = 64):
    import comfy.ldm.wan.model as wan
    import comfy.ops

    torch.manual_seed(0)
    model = wan.WanModel(model_type=cross, dim=dim, ffn_dim=3 * dim, num_heads=heads, num_layers=1, text_dim=32,
                         operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def block_inputs(model, batch=2, per_frame=False, img_tokens=0):
    g = torch.Generator().manual_seed(1)
    tokens = FRAMES * HEIGHT * WIDTH
    x = torch.randn(batch, tokens, model.dim, generator=g)
    e = torch.randn(batch, FRAMES if per_frame else 1, 6, model.dim, generator=g)
    e = e if per_frame else e[:, 0]
    context = torch.randn(batch, img_tokens + 7, model.dim, generator=g)
    freqs = model.rope_encode(FRAMES, HEIGHT * 2, WIDTH * 2, dtype=torch.float32)
    return x, e, freqs, context


def run_block(block, x, e, freqs, context, img_tokens=0):
    with torch.no_grad():
        return block(x.clone(), e=e, freqs=freqs, context=context, context_img_len=img_tokens, transformer_options={})


def twin(comfy_host, block, tokens):
    import comfy.ldm.wan.model as wan

    attention = comfy_host.module("host.feature_slicing")._host_attention
    return comfy_host.module("core.slicing.wan_grouping").grouped_block(block, tokens, attention, wan.apply_rope1)


@pytest.mark.parametrize("tokens", [1, 7, 32, 64, 179])
@pytest.mark.parametrize("cross", ["t2v", "i2v"])
def test_grouped_block_equals_host_block(comfy_host, tokens, cross):
    model = wan_model(cross)
    img = 5 if cross == "i2v" else 0
    x, e, freqs, context = block_inputs(model, img_tokens=img)
    block = model.blocks[0]
    want = run_block(block, x, e, freqs, context, img)
    got = run_block(twin(comfy_host, block, tokens), x, e, freqs, context, img)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert not torch.allclose(want, x, atol=1e-2), "the block changes its input"


def test_per_frame_modulation_and_single_batch(comfy_host):
    model = wan_model()
    x, e, freqs, context = block_inputs(model, batch=1, per_frame=True)
    assert e.ndim == 4
    block = model.blocks[0]
    want = run_block(block, x, e, freqs, context)
    got = run_block(twin(comfy_host, block, 25), x, e, freqs, context)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_wrong_freqs_rows_are_detected(comfy_host):
    """The check can fail: a slice that took the first rows of freqs instead of its own differs from the host."""
    model = wan_model()
    x, e, freqs, context = block_inputs(model)
    block = model.blocks[0]
    want = run_block(block, x, e, freqs, context)
    broken = twin(comfy_host, block, 32)
    original = torch.Tensor.__getitem__

    class FirstRows(torch.Tensor):
        def __getitem__(self, index):  # freqs[:, start:stop] -> freqs[:, 0:stop - start]
            if isinstance(index, tuple) and len(index) == 2 and isinstance(index[1], slice) and index[1].start:
                index = (index[0], slice(0, index[1].stop - index[1].start))
            return original(self, index)

    got = run_block(broken, x, e, freqs.as_subclass(FirstRows), context)
    assert (got.as_subclass(torch.Tensor) - want).abs().max() > 1e-3


def test_input_is_not_written_and_small_inputs_run_whole(comfy_host):
    model = wan_model()
    x, e, freqs, context = block_inputs(model)
    block = model.blocks[0]
    keep = x.clone()
    with torch.no_grad():
        twin(comfy_host, block, 16)(x, e=e, freqs=freqs, context=context, context_img_len=0, transformer_options={})
    assert torch.equal(x, keep)
    assert torch.equal(run_block(twin(comfy_host, block, 10_000), x, e, freqs, context),
                       run_block(block, x, e, freqs, context))


def test_head_groups_cover_every_head_once(comfy_host):
    head_groups = comfy_host.module("core.slicing.wan_grouping").head_groups
    for heads, tokens, slice_tokens in ((40, 75_600, 4096), (4, 180, 32), (1, 10, 3), (5, 10, 100)):
        cols = head_groups(heads, 8, tokens, slice_tokens)
        assert [c.start for c in cols] == [0] + [c.stop for c in cols[:-1]]
        assert sum(c.stop - c.start for c in cols) == heads * 8 and all((c.stop - c.start) % 8 == 0 for c in cols)
    assert len(head_groups(40, 128, 75_600, 4096)) == 20


def test_node_groups_host_blocks_and_falls_back_to_ffn_slicing_for_subclasses(comfy_host):
    import comfy.ldm.wan.model as wan

    apply = comfy_host.module("host.feature_slicing")
    patcher = comfy_host.module("host.demo_models").build_tiny_model("wan21")
    clone, report = apply.slice_features(patcher, 16)
    assert report.grouped == ["blocks.0"] and not report.ffn_sliced and "1 Wan blocks grouped" in report.summary()
    assert type(clone.object_patches["diffusion_model.blocks.0"]).__name__ == "GroupedWanAttentionBlock"
    assert not patcher.object_patches and type(patcher.model.diffusion_model.blocks[0]) is wan.WanAttentionBlock

    class OtherBlock(wan.WanAttentionBlock):
        pass

    block = patcher.model.diffusion_model.blocks[0]
    assert apply.groupable(block) and not apply.groupable(copy_as(block, OtherBlock))


def copy_as(module, cls):
    import copy

    twin = copy.copy(module)
    twin.__class__ = cls
    return twin


@pytest.mark.parametrize("name", ["attn1_patch", "attn2_patch"])
def test_attention_patches_run_as_in_the_host_block(comfy_host, name, caplog):
    """Newer hosts (0.33.0) run attn1_patch / attn2_patch inside the Wan block; the grouped forward skipped them
    silently. With such a patch it now runs the host's own forward (logged): the results are the host's."""
    import inspect

    import comfy.ldm.wan.model as wan

    model = wan_model()
    x, e, freqs, context = block_inputs(model)
    block = model.blocks[0]
    seen = []

    def patch(args):
        seen.append(args["x"].shape)
        return args["x"] * 1.5 + 0.25

    options = {"patches": {name: [patch]}}
    with torch.no_grad():
        want = block(x.clone(), e=e, freqs=freqs, context=context, context_img_len=0, transformer_options=options)
        plain = run_block(block, x, e, freqs, context)
        host_runs_it = bool(seen)
        seen.clear()
        with caplog.at_level("WARNING", logger="pyra"):
            got = twin(comfy_host, block, 32)(x.clone(), e=e, freqs=freqs, context=context, context_img_len=0,
                                              transformer_options=options)
    assert torch.equal(got, want)
    assert bool(seen) == host_runs_it
    source = inspect.getsource(wan.WanAttentionBlock.forward) + inspect.getsource(wan.WanSelfAttention.forward)
    if name in source:  # the host honours this patch: the grouped block must too
        assert host_runs_it and not torch.allclose(want, plain), "the patch must change the output"
        assert name in caplog.text
