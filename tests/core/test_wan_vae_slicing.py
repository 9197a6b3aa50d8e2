"""core/vae/wan: the banded Wan 2.1 decode equals the host's WanVAE.decode (tiny real architecture, random weights)."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from packload import load_pack_package
from vae_helpers import seeded_

load_pack_package()
vae = importlib.import_module("pyra_pack.core.vae")
wan = importlib.import_module("pyra_pack.core.vae.wan")

TOL_FP32 = 1e-4


def latent(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# Odd and even frame counts: 0.33.0 decodes the first latent frame, then pairs (the last chunk of an even count is
# one frame); 0.8.1 and older one frame at a time.
@pytest.mark.parametrize("shape, rows", [((1, 16, 1, 6, 5), 2), ((2, 16, 3, 7, 5), 1), ((2, 16, 3, 7, 5), 3),
                                         ((1, 16, 2, 6, 5), 2), ((1, 16, 4, 6, 5), 3),
                                         ((1, 16, 5, 9, 7), 2), ((1, 16, 5, 9, 7), 9)])
def test_wan_banded_equals_full_decode(wan_vae, shape, rows):
    z = latent(shape)
    with torch.no_grad():
        ref = wan_vae.decode(z)
    out = vae.sliced_decode(wan_vae, z, rows)
    b, _, t, h, w = shape
    assert out.shape == ref.shape == (b, 3, 1 + 4 * (t - 1), 8 * h, 8 * w)
    assert ref.std() > 0.1   # not a flat video
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_wan_rgba_head_equals_full_decode():
    """A Wan 2.1 VAE with 4 output channels (0.33.0 builds the head from the file, `conv_out_channels`)."""
    import inspect

    import comfy.ldm.wan.vae

    if "conv_out_channels" not in inspect.signature(comfy.ldm.wan.vae.WanVAE).parameters:
        pytest.skip("this host's WanVAE always decodes 3 channels")
    model = seeded_(comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                             temperal_downsample=[False, True, True], conv_out_channels=4), 2,
                    lambda name: "gamma" in name)
    z = latent((1, 16, 3, 6, 5))
    with torch.no_grad():
        ref = model.decode(z)
    out = vae.sliced_decode(model, z, 2)
    assert out.shape == ref.shape == (1, 4, 9, 48, 40)
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_causal_padding_reads_both_host_layouts():
    """0.8.1 and older: the F.pad tuple in `_padding`; 0.33.0: an int (the frames) and the rows in `padding`."""
    old = torch.nn.Conv3d(2, 2, 3)
    old._padding, old.padding = (1, 1, 1, 1, 2, 0), (0, 0, 0)
    new = torch.nn.Conv3d(2, 2, 3, padding=(0, 1, 1))
    new._padding = 2
    assert wan.causal_padding(old) == wan.causal_padding(new) == (2, 1, 1)
    odd = torch.nn.Conv3d(2, 2, 3)
    odd._padding, odd.padding = (1, 1, 1, 1, 1, 1), (0, 0, 0)   # frames padded after: not causal
    with pytest.raises(vae.SliceUnsupported, match="unknown causal padding"):
        wan.CausalConv(odd)
    odd._padding = "causal"
    with pytest.raises(vae.SliceUnsupported, match="unknown causal padding"):
        wan.CausalConv(odd)


def test_wan_missing_halo_or_time_cache_is_detected(wan_vae, monkeypatch):
    """The comparison can fail: a conv without its halo rows, or a band cache reset every chunk, is far off."""
    z = latent((1, 16, 3, 7, 5))
    with torch.no_grad():
        ref = wan_vae.decode(z)
    with monkeypatch.context() as m:
        m.setattr(wan.CausalConv, "need", lambda self, a, b, h_in: (a, b))   # zero padding at every band edge
        assert (vae.sliced_decode(wan_vae, z, 2) - ref).abs().max().item() > 1e-2
    with monkeypatch.context() as m:
        real = wan.CausalConv.__call__

        def forgetful(self, *args):
            self.cache = None
            return real(self, *args)

        m.setattr(wan.CausalConv, "__call__", forgetful)
        assert (vae.sliced_decode(wan_vae, z, 2) - ref).abs().max().item() > 1e-2


def test_wan_auto_band_and_errors(wan_vae):
    assert vae.band_channels(wan_vae) == 4 * 2 * 8
    assert vae.decoder_for(wan_vae)[0] == "wan"
    with pytest.raises(vae.SliceUnsupported, match="5-D"):
        wan.wan_decode(wan_vae, latent((1, 16, 6, 5)), 2)
    with pytest.raises(vae.SliceUnsupported, match=r"Wan 2\.1"):
        wan.wan_decode(torch.nn.Linear(2, 2), latent((1, 16, 1, 6, 5)), 2)


@pytest.mark.parametrize("cached_frames, t, top, bottom", [(0, 1, 1, 0), (1, 1, 0, 1), (2, 4, 0, 0), (2, 1, 1, 1)])
def test_causal_conv_buffer_equals_cat_and_pad(cached_frames, t, top, bottom):
    """One padded buffer per conv holds what the host's torch.cat + F.pad build (columns pad inside the conv)."""
    conv = torch.nn.Conv3d(3, 4, 3, padding=1)
    conv._padding, conv.padding = (1, 1, 1, 1, 2, 0), (0, 0, 0)   # what the 0.8.1 host's CausalConv3d sets
    op = wan.CausalConv(conv)
    x = latent((1, 3, t, 6, 5), seed=2).transpose(3, 4)   # a non-contiguous band (1, 3, t, 5, 6)
    cached = latent((1, 3, cached_frames, 5, 6), seed=3) if cached_frames else None
    ref = x if cached is None else torch.cat([cached, x], dim=2)
    ref = torch.nn.functional.pad(ref, (0, 0, top, bottom, 2 - cached_frames, 0))
    assert torch.equal(op._padded(x, cached, top, bottom), ref)
    if cached is not None:   # the comparison can fail: a buffer without the cached frames differs
        assert not torch.equal(op._padded(x, torch.zeros_like(cached), top, bottom), ref)


def test_wan_output_dtype(wan_vae):
    """Bands go straight into an output of the requested dtype: the fp32 result rounded, and a bf16 model's
    output is as close to the fp32 decode as the host's own bf16 decode (at most 2x its gap)."""
    z = latent((1, 16, 3, 7, 5))
    out32 = vae.sliced_decode(wan_vae, z, 2)
    out16 = vae.sliced_decode(wan_vae, z, 2, out_dtype=torch.bfloat16)
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16
    assert torch.equal(out16, out32.bfloat16())
    model16 = copy.deepcopy(wan_vae).bfloat16()
    with torch.no_grad():
        ref32, host16 = wan_vae.decode(z), model16.decode(z.bfloat16())
    ours16 = vae.sliced_decode(model16, z.bfloat16(), 2, out_dtype=torch.bfloat16)
    assert ours16.dtype == torch.bfloat16 and ours16.shape == ref32.shape
    gap = (host16.float() - ref32).abs().max().item()
    assert 0 < (ours16.float() - ref32).abs().max().item() <= 2 * gap


def test_latent_features_release_their_caches(wan_vae):
    """The latent-resolution part's causal caches do not outlive it (they would sit beside every band's)."""
    whole, _ = wan.wan_programs(wan_vae)
    with torch.no_grad():
        feats = wan.latent_features(wan_vae, latent((1, 16, 3, 7, 5)), whole)
    assert feats.shape == (1, 4 * 8, 3, 7, 5)
    convs = [op for op in whole if isinstance(op, wan.CausalConv)]
    assert convs and all(op.cache is None for op in convs)


def test_one_frame_runs_checkpointed_segments(wan_vae, monkeypatch):
    """One latent frame (Qwen-Image) takes `decode_frame`: checkpoints between residual blocks, none right after a
    nearest upsampling; equal to the host's decode. The check can fail: ops that keep their time state from one
    band to the next (no `FirstChunk` reset) are far off, or fail on the other band's cache shapes."""
    _, band = wan.wan_programs(wan_vae)
    points = wan.frame_checkpoints(band, 9)
    heights = wan.Program(band, [], 9).heights
    assert points and not any(wan._is_upsample(band[i - 1]) or heights[i] == heights[-1] for i in points)
    assert all(sum(isinstance(op, wan.Save) for op in band[:i]) == sum(getattr(op, "pops_saved", False)
                                                                    for op in band[:i]) for i in points)
    z = latent((1, 16, 1, 9, 7))
    with torch.no_grad():
        ref = wan_vae.decode(z)
    calls = []
    real = wan.decode_frame
    monkeypatch.setattr(wan, "decode_frame", lambda *a, **k: calls.append(1) or real(*a, **k))
    for rows in (1, 2, 9):
        assert (vae.sliced_decode(wan_vae, z, rows) - ref).abs().max().item() <= TOL_FP32
    assert len(calls) == 3
    monkeypatch.setattr(wan.FirstChunk, "__call__",
                        lambda self, x, *args: self.op(x.unsqueeze(2), *args).squeeze(2))   # no reset
    try:
        assert (vae.sliced_decode(wan_vae, z, 2) - ref).abs().max().item() > 1e-2
    except RuntimeError as err:
        assert "Sizes of tensors must match" in str(err)
