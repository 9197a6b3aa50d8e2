"""core/multilevel/wavelet.py: exact reconstruction, energy, band replacement; the checks catch a bad filter."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
wavelet = importlib.import_module("pyra_pack.core.multilevel.wavelet")


@pytest.mark.parametrize("wave", ["haar", "db4"])
def test_filters_are_orthonormal(wave):
    h, g = wavelet.filters(wave)
    for k in range(0, len(h), 2):
        assert float((h[: len(h) - k] * h[k:]).sum()) == pytest.approx(1.0 if k == 0 else 0.0, abs=1e-12)
        assert float((h[: len(h) - k] * g[k:]).sum()) == pytest.approx(0.0, abs=1e-12)
    assert float(h.sum()) == pytest.approx(2**0.5)


@pytest.mark.parametrize("wave", ["haar", "db4"])
@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (1, 3, 17, 23), (1, 16, 3, 8, 10), (1, 1, 5, 6)])
def test_reconstruction_is_exact(wave, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for pad in (None, 3):
        assert torch.allclose(wavelet.idwt2(wavelet.dwt2(x, wave, pad), wave), x, atol=2e-6)
    pyramid = wavelet.decompose(x, 2, wave)
    assert torch.allclose(wavelet.reconstruct(pyramid, wave), x, atol=5e-6)


@pytest.mark.parametrize("wave", ["haar", "db4"])
def test_unpadded_transform_keeps_energy(wave):
    x = torch.randn(2, 3, 32, 32, dtype=torch.float32)
    bands = wavelet.dwt2(x, wave, pad=0)
    energy = sum(float(t.pow(2).sum()) for t in (bands.ll, *bands.details))
    assert energy == pytest.approx(float(x.pow(2).sum()), rel=1e-5)
    assert bands.ll.shape[-2:] == (16, 16)


def test_a_non_orthogonal_filter_fails_the_reconstruction_check(monkeypatch):
    monkeypatch.setitem(wavelet.WAVELETS, "broken", (0.5, 0.9))
    x = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(wavelet.idwt2(wavelet.dwt2(x, "broken"), "broken"), x, atol=1e-3)


def test_haar_low_band_replacement_pins_the_2x2_means():
    x, ref = torch.randn(2, 3, 32, 32), torch.randn(1, 3, 32, 32)
    y = wavelet.replace_low_band(x, ref, levels=1, wave="haar")
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool(y, 2), pool(ref, 2).expand(2, -1, -1, -1), atol=1e-5)
    # the detail is x's: y - x is constant on each 2x2 block
    diff = y - x
    assert torch.allclose(diff, torch.nn.functional.interpolate(pool(diff, 2), scale_factor=2), atol=1e-5)


def test_low_band_replacement_strength_and_shape_checks():
    x, ref = torch.randn(1, 4, 24, 24), torch.randn(1, 4, 24, 24)
    assert torch.allclose(wavelet.replace_low_band(x, ref, strength=0.0), x, atol=2e-6)
    half = wavelet.replace_low_band(x, ref, strength=0.5)
    full = wavelet.replace_low_band(x, ref, strength=1.0)
    assert torch.allclose(half, (x + full) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="reference is"):
        wavelet.replace_low_band(x, ref[..., :20, :20])
    with pytest.raises(ValueError, match="unknown wavelet"):
        wavelet.dwt2(x, "db9")
