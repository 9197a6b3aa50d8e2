"""core/vae/wan_encode: the banded one-frame Wan 2.1 encode equals the host's WanVAE.encode (tiny real
architecture, random weights)."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
wan = importlib.import_module("pyra_pack.core.vae.wan")
wan_encode = importlib.import_module("pyra_pack.core.vae.wan_encode")
vae = importlib.import_module("pyra_pack.core.vae")

TOL_FP32 = 1e-4


def image(shape, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("shape", [(1, 3, 1, 64, 48), (2, 3, 1, 72, 56), (1, 3, 1, 40, 24)])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_wan_one_frame_encode_equals_the_hosts(wan_vae, shape, rows):
    x = image(shape)
    with torch.no_grad():
        ref = wan_vae.encode(x)
    out = wan_encode.wan_encode(wan_vae, x, rows)
    assert out.shape == ref.shape == (shape[0], 16, 1, shape[-2] // 8, shape[-1] // 8)
    assert ref.std() > 0.05
    assert (out - ref).abs().max().item() <= TOL_FP32


def test_the_encode_check_can_fail(wan_vae, monkeypatch):
    """Checkpoints lie between blocks at a quarter of the input size and below; a downsampling without the host's
    bottom zero row, or causal convolutions that carry a cache from one band into the next, are far off (or fail)."""
    prog = wan_encode.encode_program(wan_vae, 64)
    heights = prog.heights
    assert prog.bounds[1:-1] and all(4 * heights[i] <= heights[0] for i in prog.bounds[1:-1])
    x = image((1, 3, 1, 64, 48))
    with torch.no_grad():
        ref = wan_vae.encode(x)
    down = importlib.import_module("pyra_pack.core.vae.kl_encode").Downsample2x
    with monkeypatch.context() as m:
        m.setattr(down, "need", lambda self, a, b, h_in: (2 * a, min(2 * b, h_in)))   # one row short
        try:
            assert (wan_encode.wan_encode(wan_vae, x, 2) - ref).abs().max().item() > 1e-3
        except RuntimeError:
            pass   # a band of the wrong height
    with monkeypatch.context() as m:   # ops that keep their causal cache from one band to the next
        m.setattr(wan.FirstChunk, "__init__", lambda self, op: setattr(self, "op", op))
        m.setattr(wan.FirstChunk, "__call__", lambda self, x, *args: self.op(x.unsqueeze(2), *args).squeeze(2))
        try:
            assert (wan_encode.wan_encode(wan_vae, x, 2) - ref).abs().max().item() > 1e-3
        except RuntimeError as err:
            assert "Sizes of tensors must match" in str(err)


def test_what_it_refuses(wan_vae):
    with pytest.raises(vae.SliceUnsupported, match="one frame"):
        wan_encode.wan_encode(wan_vae, image((1, 3, 5, 16, 16)), 2)
    with pytest.raises(vae.SliceUnsupported, match=r"Wan 2\.1"):
        wan_encode.wan_encode(torch.nn.Linear(2, 2), image((1, 3, 1, 16, 16)), 2)
