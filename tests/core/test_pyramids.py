"""core/multilevel/pyramids.py: Laplacian and wavelet pyramids reconstruct exactly; level edits, mixes and bad input."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
pyramids = importlib.import_module("pyra_pack.core.multilevel.pyramids")


@pytest.mark.parametrize("kind", pyramids.KINDS)
@pytest.mark.parametrize("shape", [(2, 3, 32, 48), (1, 4, 13, 21), (1, 16, 3, 16, 16)])
def test_reconstruction_is_exact(kind, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    levels = min(3, pyramids.max_levels(*shape[-2:]))
    p = pyramids.decompose(x, levels, kind)
    assert p.levels == levels and p.low.shape[-2] == -(-shape[-2] // 2**levels)
    assert torch.allclose(pyramids.reconstruct(p), x, atol=5e-6)


@pytest.mark.parametrize("kind", pyramids.KINDS)
def test_levels_split_the_spectrum(kind):
    """A smooth ramp lives in the residual; white noise's finest level holds the most energy."""
    ramp = torch.linspace(0, 1, 64)[None, None, None, :].expand(1, 1, 64, 64)
    p = pyramids.decompose(ramp, 3, kind)
    assert float(p.band(0).abs().max()) < 0.05 + (0.4 if kind != "laplacian" else 0)
    noise = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    q = pyramids.decompose(noise, 3, kind)
    energy = [float(q.band(i).pow(2).sum()) for i in range(4)]
    assert energy[0] == max(energy)


@pytest.mark.parametrize("kind", pyramids.KINDS)
def test_editing_a_level_changes_only_that_band(kind):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    p = pyramids.decompose(x, 2, kind)
    zeroed = pyramids.reconstruct(p.with_band(0, torch.zeros_like(p.band(0))))
    assert not torch.allclose(zeroed, x, atol=1e-3)
    if kind == "laplacian":  # overcomplete: the result is the upsampled coarser level, exactly
        assert torch.allclose(zeroed, pyramids.upsample(pyramids.pool2(x), (32, 32)), atol=1e-5)
    else:  # orthogonal: the edited level re-decomposes to zero, the others are unchanged
        again = pyramids.decompose(zeroed, 2, kind)
        assert float(again.band(0).abs().max()) < 1e-4
        assert torch.allclose(again.band(2), p.band(2), atol=1e-4)
    assert torch.allclose(pyramids.reconstruct(p.scaled([1.0, 1.0, 1.0])), x, atol=5e-6)


def test_mix_takes_low_from_one_and_detail_from_the_other():
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    pa, pb = pyramids.decompose(a, 2), pyramids.decompose(b, 2)
    hybrid = pyramids.mix(pa, pb, [0.0, 0.0, 1.0])
    assert torch.allclose(hybrid.band(0), pa.band(0)) and torch.allclose(hybrid.low, pb.low)
    assert torch.allclose(pyramids.reconstruct(pyramids.mix(pa, pb, [0.0])), a, atol=5e-6)


def test_bad_requests():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="do not fit"):
        pyramids.decompose(x, 5)
    with pytest.raises(ValueError, match="unknown pyramid kind"):
        pyramids.decompose(x, 1, "db2")
    p = pyramids.decompose(x, 1)
    with pytest.raises(ValueError, match="does not exist"):
        p.band(2)
    with pytest.raises(ValueError, match="resize it"):
        p.with_band(0, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="same kind"):
        pyramids.mix(p, pyramids.decompose(x, 1, "haar"), [0.5])
