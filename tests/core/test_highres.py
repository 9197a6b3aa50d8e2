"""core/samplers/highres.py: stage planning, sharpening and the structure-guidance post-CFG function."""

from __future__ import annotations

import importlib

import pytest
import torch
from packload import load_pack_package

load_pack_package()
hr = importlib.import_module("pyra_pack.core.samplers.highres")
wavelet = importlib.import_module("pyra_pack.core.multilevel.wavelet")


def test_scales_and_per_stage_values():
    assert hr.parse_scales("2") == [2.0]
    assert hr.parse_scales("1.5, 2; 3") == [1.5, 2.0, 3.0]
    assert hr.parse_per_stage("10", 3, "cfg") == [10.0, 10.0, 10.0]
    assert hr.parse_per_stage("10, 7", 3, "cfg") == [10.0, 7.0, 7.0]
    assert hr.parse_per_stage("10, 7, 5, 4", 2, "cfg") == [10.0, 7.0]


@pytest.mark.parametrize("bad", ["", "1", "0.5", "2, 1.5", "2, 2", "x", "nan"])
def test_bad_scales_are_rejected(bad):
    with pytest.raises(ValueError):
        hr.parse_scales(bad)


def test_stage_sizes_and_levels():
    assert hr.stage_size((64, 96), 2.0, 2) == (128, 192)
    assert hr.stage_size((13, 20), 1.5, 2) == (20, 30)
    assert hr.stage_size((13, 20), 1.5, 8) == (16, 32)
    assert [hr.wavelet_levels(s) for s in (1.25, 1.5, 2.0, 3.0, 4.0)] == [1, 1, 1, 1, 2]


def test_sharpen_boosts_high_frequencies_only():
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hr.sharpen(x, 0.0), x)
    y = hr.sharpen(x, 1.0)
    assert torch.allclose(y.mean((-1, -2)), x.mean((-1, -2)), atol=1e-2), "the mean (DC) is kept"
    high = lambda t: (t - hr.gaussian_blur3(t, 1.0)).pow(2).sum()  # noqa: E731
    assert float(high(y)) > 2 * float(high(x))


def test_resize_keeps_video_frames():
    x = torch.randn(1, 16, 3, 8, 10)
    assert hr.resize(x, (16, 20)).shape == (1, 16, 3, 16, 20)


def test_structure_guide_acts_only_on_the_first_steps():
    ref = torch.randn(2, 4, 16, 16)
    guide = hr.StructureGuide(ref, until_sigma=0.5, levels=1, wave="haar")
    x0 = torch.randn(2, 4, 16, 16)
    early = guide({"denoised": x0, "sigma": torch.tensor([0.8, 0.8])})
    late = guide({"denoised": x0, "sigma": torch.tensor([0.3, 0.3])})
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool(early, 2), pool(ref, 2), atol=1e-5)
    assert torch.equal(late, x0)
    assert guide.calls == 1


def test_structure_guide_pixel_mode_round_trips_through_the_given_codec():
    ref = torch.rand(1, 3, 32, 32)
    to_px = lambda z: torch.nn.functional.interpolate(z[:, :3], scale_factor=2)  # noqa: E731
    from_px = lambda im: torch.cat([torch.nn.functional.avg_pool2d(im, 2), torch.zeros(1, 1, 16, 16)], 1)  # noqa: E731
    guide = hr.StructureGuide(ref, 0.1, levels=1, wave="haar", to_pixels=to_px, from_pixels=from_px)
    out = guide({"denoised": torch.randn(1, 4, 16, 16), "sigma": torch.tensor([1.0])})
    assert out.shape == (1, 4, 16, 16)
    assert torch.allclose(out[:, :3], torch.nn.functional.avg_pool2d(ref, 2), atol=1e-5)
