"""core/vae/carry: the streamed video decode computes every row of every op once, keeps only the rows it reads
again, and equals the host's decode (the Wan 2.1 layout the host builds, tiny width)."""

from __future__ import annotations

import importlib
from itertools import pairwise

import pytest
import torch
from packload import load_pack_package

load_pack_package()
carry = importlib.import_module("pyra_pack.core.vae.carry")
rowops = importlib.import_module("pyra_pack.core.vae.rowops")
wan = importlib.import_module("pyra_pack.core.vae.wan")


@pytest.mark.parametrize("h, rows", [(7, 1), (9, 2), (9, 4), (6, 6)])
def test_every_output_row_is_computed_once(wan_vae, h, rows):
    _, band_ops = wan.wan_programs(wan_vae)
    plan = carry.CarryPlan(band_ops, h, rows)
    for i in range(len(band_ops)):
        steps = [band[i] for band in plan.steps if band[i] is not None]
        spans = [(s.a, s.b) for s in steps]
        assert spans[0][0] == 0 and spans[-1][1] == plan.heights[i + 1]
        assert all(b0 == a1 for (_, b0), (a1, _) in pairwise(spans))   # no row twice, none left out
    # a 3x3 convolution keeps at most its two halo rows (plus a band it cannot use yet), not the decoder's halo
    convs = [i for i, op in enumerate(band_ops) if isinstance(op, (wan.CausalConv, wan.Frames))
             and isinstance(getattr(op, "op", op), rowops.Conv)]
    scale = [max(1, rows * plan.heights[i] // h) for i in convs]
    assert all(plan.kept_rows[i] <= 2 + s for i, s in zip(convs, scale, strict=True))


def test_lag_drains_in_bands_no_larger_than_the_band(wan_vae):
    _, band_ops = wan.wan_programs(wan_vae)
    h, rows = 8, 1
    plan = carry.CarryPlan(band_ops, h, rows)
    assert plan.bands[-1] == (h, h)   # bands without input after the last latent row
    for band in plan.steps:
        for i, step in enumerate(band):
            if step is not None:
                assert step.b - step.a <= max(1, rows * plan.heights[i + 1] // h)


def test_dropping_the_carry_changes_the_decode(wan_vae, monkeypatch):
    """The test above can fail: a buffer that forgets its rows between bands reads rows it no longer has."""
    z = torch.randn((1, 16, 3, 6, 5), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = wan_vae.decode(z)
        assert (wan.wan_decode(wan_vae, z, 2) - ref).abs().max() <= 1e-4
        forget = carry._Buffer.drop_before

        def drop_all(self, row):
            forget(self, row)
            self.t, self.r0 = self.t[..., :0, :], self.r0 + self.t.shape[-2]

        monkeypatch.setattr(carry._Buffer, "drop_before", drop_all)
        with pytest.raises((RuntimeError, AssertionError, IndexError)):
            out = wan.wan_decode(wan_vae, z, 2)
            assert (out - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("chunk", [2, 3, 5])
def test_chunks_of_frames_decode_the_same(wan_vae, chunk):
    z = torch.randn((1, 16, 5, 6, 5), generator=torch.Generator().manual_seed(chunk))
    with torch.no_grad():
        ref = wan_vae.decode(z)
        assert wan.first_then(5, chunk) == [1, *([chunk] * (4 // chunk)), *([4 % chunk] if 4 % chunk else [])]
        assert (wan.wan_decode(wan_vae, z, 2, chunk=chunk) - ref).abs().max() <= 1e-4


def test_a_first_chunk_of_two_frames_is_caught(wan_vae, monkeypatch):
    """The host's first chunk is one frame (a time upsampling passes it through); a split that starts with two
    frames decodes something else, and the check above would see it."""
    z = torch.randn((1, 16, 3, 6, 5), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(wan, "first_then", lambda n_t, chunk: [2, n_t - 2])
    with torch.no_grad(), pytest.raises((RuntimeError, AssertionError)):
        out = wan.wan_decode(wan_vae, z, 2, chunk=2)
        assert (out - wan_vae.decode(z)).abs().max() <= 1e-4
