"""core/vae/wan: the banded Wan 2.1 decode equals the host's WanVAE.decode (tiny real architecture, random weights)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from host import comfyui_dir
from packload import load_pack_package

load_pack_package()
vae = importlib.import_module("pyra_pack.core.vae")
wan = importlib.import_module("pyra_pack.core.vae.wan")

TOL_FP32 = 1e-4


@pytest.fixture(scope="module")
def wan_vae():
    """The Wan 2.1 layout the host builds (dim 8 instead of 96), seeded fan-in weights, gammas away from 1."""
    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ldm.wan.vae

    model = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                     temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_((1.0 if "gamma" in name else 0.0) + 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def latent(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, rows", [((1, 16, 1, 6, 5), 2), ((2, 16, 3, 7, 5), 1), ((2, 16, 3, 7, 5), 3),
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
