"""core/proxy: the patch-PCA codec, the crop bank, the Flux timestep rule and the image metrics."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from packload import load_pack_package

load_pack_package()
proxy = importlib.import_module("pyra_pack.core.proxy")


def _images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_codec_is_exact_on_its_span_and_standardised():
    x = _images(8, 32)
    full = proxy.PatchPCACodec.fit(x, factor=4, channels=48)  # all 3 * 4 * 4 components: lossless
    z = full.encode(x)
    assert z.shape == (8, 48, 8, 8)
    assert torch.allclose(full.decode(z), x, atol=1e-4)
    assert torch.allclose(z.permute(1, 0, 2, 3).flatten(1).std(1), torch.ones(48), atol=1e-3)
    lossy = proxy.PatchPCACodec.fit(x, factor=4, channels=8)
    err = (lossy.decode(lossy.encode(x)) - x).square().mean()
    assert err > 1e-3  # the check can fail: 8 of 48 components lose detail
    back = proxy.PatchPCACodec.from_state_dict(lossy.state_dict())
    assert torch.equal(back.encode(x), lossy.encode(x))


def test_codec_keeps_the_most_variance():
    x = _images(8, 32)
    x = x + torch.linspace(-1, 1, 32)[None, None, None, :] * 3  # a strong horizontal ramp dominates
    codec = proxy.PatchPCACodec.fit(x, factor=4, channels=4)
    pca_err = (codec.decode(codec.encode(x)) - x).square().mean()
    rnd = torch.linalg.qr(torch.randn(48, 4, generator=torch.Generator().manual_seed(3)))[0].T
    other = proxy.PatchPCACodec(rnd.contiguous(), codec.mean, torch.ones(4), 4)
    assert pca_err < (other.decode(other.encode(x)) - x).square().mean()


def test_crops_stay_inside_their_image_and_flip():
    g = torch.Generator().manual_seed(0)
    a = torch.full((3, 40, 40), 0.5)
    a[:, :, :20] = -0.5  # left half dark
    b = torch.full((3, 64, 64), -1.0)
    bank = proxy.ImageBank([a, b])
    crops = bank.crops(64, 16, g, scale=(0.25, 1.0))
    assert crops.shape == (64, 3, 16, 16)
    assert crops.min() >= -1 and crops.max() <= 0.5 + 1e-6
    from_b = crops.flatten(1).eq(-1).all(1)
    assert from_b.any() and (~from_b).any()  # both images are drawn
    assert not (crops.abs() < 0.25).all(dim=(1, 2, 3)).any()  # the atlas padding (0) is never the content
    bleed = proxy.ImageBank([torch.full((3, 16, 16), 1.0), torch.full((3, 16, 16), -1.0)])
    edge = bleed.crops(100, 8, torch.Generator().manual_seed(2), scale=(0.9, 1.0))
    spread = edge.flatten(1).amax(1) - edge.flatten(1).amin(1)
    assert spread.max() < 1e-5  # no tap reads the neighbouring image in the atlas
    assert (edge.mean((1, 2, 3)) > 0).any() and (edge.mean((1, 2, 3)) < 0).any()
    one = proxy.ImageBank([a])
    flips = one.crops(200, 8, torch.Generator().manual_seed(1), scale=(1.0, 1.0))
    left = flips[..., :4].mean((1, 2, 3))
    assert (left < 0).any() and (left > 0).any()  # whole-image crops, both orientations
    plain = one.crops(50, 8, torch.Generator().manual_seed(1), scale=(1.0, 1.0), flip=False)
    assert (plain[..., :4].mean((1, 2, 3)) < 0).all()


def test_multires_batches_keep_the_token_budget():
    g = torch.Generator().manual_seed(0)
    it = proxy.multires_batches({128: 0.5, 512: 0.5}, 4096, 1 / 256, g)
    seen = {next(it) for _ in range(40)}
    assert seen == {(128, 64), (512, 4)}


def test_timesteps_follow_flux_shift():
    assert proxy.flux_mu(256) == pytest.approx(0.5) and proxy.flux_mu(4096) == pytest.approx(1.15)
    small = proxy.sample_timesteps(4000, 256, torch.Generator().manual_seed(0))
    large = proxy.sample_timesteps(4000, 4096, torch.Generator().manual_seed(0))
    assert 0 < float(small.min()) and float(large.max()) < 1
    assert (large > small).all()  # same u, larger shift: noisier
    e = math.exp(1.15)
    assert float(large.median()) == pytest.approx(e / (e + 1), abs=0.02)
    x0, noise = torch.zeros(2, 3), torch.ones(2, 3)
    xt, v = proxy.flow_targets(x0, noise, torch.tensor([0.25, 1.0]))
    assert torch.allclose(xt[:, 0], torch.tensor([0.25, 1.0])) and torch.equal(v, noise)


def test_psnr_and_ssim():
    x = _images(2, 32)
    assert torch.allclose(proxy.ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert (proxy.ssim(noisy, x) < 0.99).all()
    assert torch.allclose(proxy.psnr(x + 0.02, x), torch.full((2,), 20 * math.log10(2 / 0.02), dtype=torch.float64))


def test_patch_sliced_wasserstein():
    """Two batches of one distribution are close, whatever their sizes and pairing; a contrast change, a shift in
    colour or a blur (the same pixels' histogram moved, or only their spatial statistics) are far; the 1-D case
    distance of a shift is the shift."""
    a, b = _images(8, 48, seed=1), _images(4, 64, seed=2)
    same = proxy.patch_sliced_wasserstein(a, b, patch=4)
    assert same < 0.05
    assert proxy.patch_sliced_wasserstein(a, 0.5 * b, patch=4) > 5 * same
    assert proxy.patch_sliced_wasserstein(a, b + 0.3, patch=4) > 5 * same
    blurred = torch.nn.functional.avg_pool2d(b, 3, 1, 1)
    assert proxy.patch_sliced_wasserstein(a, blurred, patch=4) > 5 * same
    x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)   # patch 1, one channel: a shift moves every quantile by it
    got = proxy.patch_sliced_wasserstein(x, x + 0.25, patch=1, patches=20000, directions=4)
    assert abs(got - 0.25) < 0.02
