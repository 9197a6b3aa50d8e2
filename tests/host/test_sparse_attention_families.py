"""PyraSparseAttention on the DiTs of 2026 (host/tiny_image_families.py, host/tiny_video_families.py), 256
image tokens each: keep-all equals the unpatched model, sparse settings reach the sparsity asked for in the
self-attention (joint with the text for Chroma, Qwen-Image and HunyuanVideo 1.5, the video tokens alone for
LTX) and change the latent a little, the base model stays untouched. Random weights: this says the hooks fit,
nothing of quality."""

from __future__ import annotations

import pytest
import torch
from family_helpers import TinyFamily

IMAGE = {"chroma": (1, 16, 32, 32), "qwen_image": (1, 16, 1, 32, 32), "z_image": (1, 16, 32, 32)}
VIDEO = ("hunyuan_video15", "ltxv", "ltx2")
FAMILY = {"hunyuan_video15": "hunyuan_video", "z_image": "lumina2"}
STEPS = 3
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture
def tiny(comfy_host, request):
    t = TinyFamily(comfy_host, request.param)
    shape = IMAGE.get(t.family) or t.mod.latent_shape(t.family, frames=1, height=16, width=16)
    return t.family, t, shape


def _sample(model, t: TinyFamily, shape):
    return t.sample(model, shape, STEPS, seed=3)


@pytest.mark.parametrize("tiny", [*IMAGE, *VIDEO], indirect=True)
def test_keep_all_exact_sparse_close_base_untouched(comfy_host, tiny):
    hooks = comfy_host.module("host.sparse_attention")
    family, mod, shape = tiny
    base = mod.build()
    family_key = FAMILY.get(family, family)
    assert hooks.detect_family(base) == family_key
    plain = _sample(base, mod, shape)
    options_before = repr(base.model_options)

    def patched(keep_mass, keep_ratio):
        clone = base.clone()
        settings = hooks.SparseSettings(keep_mass, keep_ratio, 64, hooks.SigmaWindow(0.0, 1.0), -1, False)
        return clone, hooks.install(clone, family_key, settings)

    keep_all, stats = patched(1.0, 0.0)
    assert torch.equal(_sample(keep_all, mod, shape), plain)
    assert stats.sparse_calls > 0

    sparse, stats = patched(1.0, 0.5)
    out = _sample(sparse, mod, shape)
    assert stats.sparse_calls > 0 and stats.history[-1] > 0.2, stats.summary()
    assert not torch.equal(out, plain) and torch.isfinite(out).all()
    assert (out - plain).abs().mean() < 0.5 * plain.abs().mean()
    if family in ("ltxv", "ltx2"):   # one cross-attention to the text per self-attention stays dense
        assert stats.dense_calls >= stats.sparse_calls
    if family == "hunyuan_video15":   # the joint blocks are sparse (cond and uncond batched), the text refiner's
        dm = base.model.diffusion_model   # shorter self-attention is not
        assert stats.sparse_calls == STEPS * (len(dm.double_blocks) + len(dm.single_blocks)) and stats.dense_calls

    assert torch.equal(_sample(base, mod, shape), plain)
    assert repr(base.model_options) == options_before


@pytest.mark.parametrize("tiny", ["hunyuan_video15", "ltxv"], indirect=True)
def test_video_tiles_change_the_blocks_not_the_keep_all_result(comfy_host, tiny):
    """With the tile order (the default) keep-all is still the plain model; sparse, the blocks differ from the
    raster order's, so the latent does too (the text of HunyuanVideo stays whole: it moves behind the tiles)."""
    hooks = comfy_host.module("host.sparse_attention")
    family, mod, shape = tiny
    base = mod.build()
    key = FAMILY.get(family, family)
    plain = _sample(base, mod, shape)
    outs = {}
    for tiles in (True, False):
        for keep_ratio in (0.0, 0.5):
            clone = base.clone()
            settings = hooks.SparseSettings(1.0, keep_ratio, 64, hooks.SigmaWindow(0.0, 1.0), -1, False, tiles)
            hooks.install(clone, key, settings)
            outs[tiles, keep_ratio] = _sample(clone, mod, shape)
    assert torch.equal(outs[True, 0.0], plain) and torch.equal(outs[False, 0.0], plain)
    assert not torch.equal(outs[True, 0.5], outs[False, 0.5])
