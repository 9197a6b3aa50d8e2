"""PyraExactVAEDecode / PyraExactVAEEncode on the VAEs of the 2026 families (the tiny VAEs of
host/tiny_image_families.py and host/tiny_video_families.py, built by the host's comfy.sd.VAE), against the host's
own decode and encode in fp32: Flux.2 (KL + latent batch norm), Qwen-Image (the Wan 2.1 class), Wan 2.2 TI2V-5B,
HunyuanVideo 1.5 and LTX-2 decodes exact (LTX's own cases, decode and encode: test_ltx_vae.py)."""

from __future__ import annotations

import logging

import pytest
import torch

TOL = 1e-4


@pytest.fixture(scope="module")
def mod(comfy_host):
    return comfy_host.module("host.vae")


class _TinyVAEs(dict):
    """family -> the host's tiny VAE of it, built on first use; a host without the family's classes skips."""

    def __init__(self, img, vid):
        super().__init__()
        self.img, self.vid = img, vid

    def __missing__(self, family):
        image = family in ("flux2", "qwen_image")
        missing = self.img.missing_host_class(family) if image else ", ".join(self.vid.missing_host_classes(family))
        if missing:
            pytest.skip(f"this host lacks {missing}, which the {family} VAE needs")
        self[family] = (self.img if image else self.vid).tiny_vae(family)
        return self[family]


@pytest.fixture(scope="module")
def vaes(comfy_host):
    return _TinyVAEs(comfy_host.module("host.tiny_image_families"), comfy_host.module("host.tiny_video_families"))


def latent(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def decode_node(comfy_host, vae, z, rows):
    return comfy_host.node("PyraExactVAEDecode").execute({"samples": z}, vae, rows).result[0]


def stock(vae, z):
    images = vae.decode(z)
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def err(a, b):
    return (a - b).abs().max().item()


CASES = [("flux2", (2, 128, 5, 3), (2, 80, 48, 3)), ("qwen_image", (1, 16, 1, 9, 7), (1, 72, 56, 3)),
         ("wan22_ti2v_5b", (1, 48, 1, 4, 4), (1, 64, 64, 3)), ("wan22_ti2v_5b", (2, 48, 3, 5, 3), (18, 80, 48, 3)),
         ("hunyuan_video15", (1, 32, 1, 4, 4), (1, 64, 64, 3)), ("hunyuan_video15", (2, 32, 3, 5, 3), (18, 80, 48, 3)),
         ("hunyuan_video15", (1, 32, 4, 3, 2), (13, 48, 32, 3)),
         ("ltx2", (1, 128, 3, 3, 2), (17, 96, 64, 3)), ("ltx2", (2, 128, 2, 2, 2), (18, 64, 64, 3)),
         ("ltx2", (1, 128, 1, 2, 2), (1, 64, 64, 3))]


@pytest.mark.parametrize("family, shape, image", CASES)
@pytest.mark.parametrize("rows", [0, 1, 3])
def test_exact_decode_matches_the_hosts(comfy_host, vaes, caplog, family, shape, image, rows):
    vae = vaes[family]
    z = latent(shape)
    with caplog.at_level(logging.INFO):
        out = decode_node(comfy_host, vae, z, rows)
    assert "host's own decode" not in caplog.text   # the exact path ran
    ref = stock(vae, z)
    assert out.shape == ref.shape == image
    assert err(out, ref) <= TOL
    assert ref.std() > 0.05   # not a flat image


def test_the_check_fails_on_a_wrong_input(comfy_host, vaes):
    """The same comparison on a latent one value away (0.05 at one position) is far outside the tolerance."""
    for family, shape, _ in CASES:
        z = latent(shape)
        wrong = z.clone()
        wrong[(0,) * (z.ndim - 2) + (1, 1)] += 0.05
        assert err(decode_node(comfy_host, vaes[family], wrong, 1), stock(vaes[family], z)) > TOL, family


def test_flux2_decode_needs_the_latent_batch_norm(comfy_host, vaes, monkeypatch):
    """Leaving out Flux.2's denormalisation (unpatching only, in kl.latent_in) is caught by the same check."""
    kl = comfy_host.module("core.vae.kl")
    vae, z = vaes["flux2"], latent((1, 128, 4, 4))
    ref = stock(vae, z)
    assert err(decode_node(comfy_host, vae, z, 1), ref) <= TOL
    monkeypatch.setattr(kl, "latent_in", _plain_unpatch)
    assert err(decode_node(comfy_host, vae, z, 1), ref) > TOL


def _plain_unpatch(model, z):
    """Flux.2's 2x2 unpatching without the batch norm's scale and shift (a wrong decoder input)."""
    b, c4, h, w = z.shape
    return z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


def test_wan22_decode_needs_the_first_chunk_shortcut(comfy_host, vaes, monkeypatch):
    """The DupUp3D shortcut drops the leading frame only on the first chunk; running every chunk as the first
    gives the wrong frame count (8 instead of 5), and the decode fails rather than return it."""
    wan22 = comfy_host.module("core.vae.wan22")
    vae, z = vaes["wan22_ti2v_5b"], latent((1, 48, 2, 4, 4))
    assert stock(vae, z).shape[0] == 5
    monkeypatch.setattr(wan22.AddDupUp, "reset", lambda self: setattr(self, "first", False))
    with pytest.raises(RuntimeError):
        decode_node(comfy_host, vae, z, 1)   # 8 frames do not fit the 5 of the host's layout


def test_flux2_encode_matches_the_hosts(comfy_host, vaes, caplog):
    vae = vaes["flux2"]
    pixels = torch.rand((2, 83, 50, 3), generator=torch.Generator().manual_seed(3))   # cropped to 80 x 48
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    ref = vae.encode(pixels)
    assert out.shape == ref.shape == (2, 128, 5, 3)
    assert err(out, ref) <= TOL
    assert err(out, vae.encode(pixels.flip(1))) > TOL   # the check can fail: another image's latent


def test_hunyuan15_decode_needs_the_replicate_border(comfy_host, vaes, monkeypatch):
    """Zero instead of replicate padding at the image's top and bottom rows is caught by the same check."""
    hv = comfy_host.module("core.vae.hunyuan15")
    vae, z = vaes["hunyuan_video15"], latent((1, 32, 2, 4, 4))
    ref = stock(vae, z)
    real_pad = hv.F.pad

    def zero_rows(x, pad, mode="constant", value=None):
        if mode == "replicate" and x.ndim == 5 and (pad[2] or pad[3]):
            x = real_pad(x, (0, 0, pad[2], pad[3]))
            pad = (pad[0], pad[1], 0, 0, *pad[4:])
        return real_pad(x, pad, mode=mode) if mode == "replicate" else real_pad(x, pad, mode=mode, value=value)

    monkeypatch.setattr(hv.F, "pad", zero_rows)
    assert err(decode_node(comfy_host, vae, z, 1), ref) > TOL


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_qwen_image_encode_matches_the_hosts(comfy_host, vaes, caplog, rows):
    """One image through the Wan 2.1 class (the host encodes it as a one-frame video) in bands."""
    vae = vaes["qwen_image"]
    pixels = torch.rand((1, 75, 58, 3), generator=torch.Generator().manual_seed(5))   # cropped to 72 x 56
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, rows).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    ref = vae.encode(pixels)
    assert out.shape == ref.shape == (1, 16, 1, 9, 7)
    assert err(out, ref) <= TOL
    assert err(out, vae.encode(pixels.flip(1))) > TOL   # the check can fail: another image's latent


def test_qwen_image_batch_is_encoded_as_the_host_encodes_it_one_video(comfy_host, vaes, caplog):
    """The host encodes a batch of images with a Wan-class VAE as one video of that many frames (5 frames: 2 latent
    frames, the second from frames 1-4 through the time downsamplings); so does the node."""
    vae = vaes["qwen_image"]
    pixels = torch.rand((5, 32, 32, 3), generator=torch.Generator().manual_seed(6))
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    ref = vae.encode(pixels)
    assert out.shape == ref.shape == (1, 16, 2, 4, 4)
    assert err(out, ref) <= TOL


@pytest.mark.parametrize("family, channels", [("wan22_ti2v_5b", 48), ("hunyuan_video15", 32)])
@pytest.mark.parametrize("rows", [0, 1, 2])
def test_start_frame_encode_matches_the_hosts(comfy_host, vaes, caplog, family, channels, rows):
    """The start image of an image-to-video run in bands: Wan 2.2 TI2V-5B (patchified 2x2, AvgDown3D shortcuts)
    and HunyuanVideo 1.5 (replicate padding, DnSmpl folds with grouped-mean shortcuts)."""
    vae = vaes[family]
    pixels = torch.rand((1, 83, 50, 3), generator=torch.Generator().manual_seed(5))   # cropped to 80 x 48
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, rows).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    ref = vae.encode(pixels)
    assert out.shape == ref.shape == (1, channels, 1, 5, 3)
    assert err(out, ref) <= TOL
    assert err(out, vae.encode(pixels.flip(1))) > TOL   # the check can fail: another image's latent


def test_wan22_encode_needs_the_avg_shortcut_rows(comfy_host, vaes, monkeypatch):
    """The shortcut averages rows [2a, 2b) of the block input; reading them one row off is caught."""
    enc = comfy_host.module("core.vae.wan22_encode")
    vae = vaes["wan22_ti2v_5b"]
    pixels = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(8))
    ref = vae.encode(pixels)
    real = enc.AddAvgDown.__call__

    def shifted(self, x, r0, a, b, h_in, stack):
        s, s0 = stack[-1]
        if self.avg.factor_s == 2 and s.shape[-2] > 2 * (b - a):
            stack[-1] = (s[..., 1:, :], s0)   # the same rows, labelled one row early
        return real(self, x, r0, a, b, h_in, stack)

    monkeypatch.setattr(enc.AddAvgDown, "__call__", shifted)
    try:
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
        assert err(out, ref) > TOL
    except RuntimeError:
        pass   # a band of the wrong height


def test_hunyuan15_encode_needs_the_grouped_mean_shortcut(comfy_host, vaes, monkeypatch):
    """Leaving out DnSmpl's folded-input shortcut is caught by the same check."""
    enc = comfy_host.module("core.vae.hunyuan15_encode")
    vae = vaes["hunyuan_video15"]
    pixels = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(8))
    ref = vae.encode(pixels)
    real = enc.Fold2x.__call__

    def no_shortcut(self, h, r0, a, b, h_in, stack):
        s, s0 = stack[-1]
        stack[-1] = (torch.zeros_like(s), s0)
        return real(self, h, r0, a, b, h_in, stack)

    monkeypatch.setattr(enc.Fold2x, "__call__", no_shortcut)
    out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
    assert err(out, ref) > TOL


@pytest.mark.parametrize("family, channels, down", [("wan22_a14b_low", 16, 8), ("wan22_ti2v_5b", 48, 16),
                                                   ("hunyuan_video15", 32, 16)])
@pytest.mark.parametrize("frames, latent_frames", [(5, 2), (11, 3), (13, 4)])
@pytest.mark.parametrize("rows", [0, 1, 3])
def test_video_encode_matches_the_hosts(comfy_host, vaes, caplog, family, channels, down, frames, latent_frames, rows):
    """A clip through the Wan 2.1 (A14B's), Wan 2.2 or HunyuanVideo 1.5 VAE (the host drops frames past the last
    1 + 4k), streamed in bands of rows in chunks of frames (1, 4, 4, ... and 1, 8, 8, ...; host 0.33.0 runs the Wan
    2.1 encoder on chunks of 2)."""
    vae = vaes[family]
    pixels = torch.rand((frames, 70, 52, 3), generator=torch.Generator().manual_seed(frames))   # cropped to 64x48
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, rows).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    ref = vae.encode(pixels)
    assert out.shape == ref.shape == (1, channels, latent_frames, 64 // down, 48 // down)
    assert err(out, ref) <= TOL
    assert err(out, vae.encode(pixels.flip(0))) > TOL   # the check can fail: the clip played backwards


@pytest.mark.parametrize("family", ["wan22_a14b_low", "wan22_ti2v_5b"])
def test_wan_video_encode_needs_the_time_downsampling(comfy_host, vaes, monkeypatch, family):
    """Passing every chunk through the time downsampling as the first one does gives the wrong frame count."""
    enc = comfy_host.module("core.vae.wan_encode")
    monkeypatch.setattr(enc.TimeDown, "reset", lambda self: None)
    monkeypatch.setattr(enc.TimeDown, "__call__", lambda self, x, *args: x)
    pixels = torch.rand((5, 64, 48, 3), generator=torch.Generator().manual_seed(2))
    with pytest.raises(Exception):   # noqa: B017 (a frame count error, never a latent)
        comfy_host.node("PyraExactVAEEncode").execute(pixels, vaes[family], 1)


def test_hunyuan15_video_encode_needs_the_time_fold(comfy_host, vaes, monkeypatch, caplog):
    """Folding every chunk as the first one (one frame) is refused: the node falls back to the host's encode."""
    enc = comfy_host.module("core.vae.hunyuan15_encode")
    monkeypatch.setattr(enc.Fold2xVideo, "reset", lambda self: setattr(self, "first", True))
    real = enc.Fold2xVideo.__call__

    def always_first(self, *args):
        self.first = True
        return real(self, *args)

    monkeypatch.setattr(enc.Fold2xVideo, "__call__", always_first)
    vae = vaes["hunyuan_video15"]
    pixels = torch.rand((5, 64, 48, 3), generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
    assert "starts with one frame" in caplog.text and "using the host's own encode" in caplog.text
    assert torch.equal(out, vae.encode(pixels))


@pytest.mark.parametrize("family, shape", [("wan22_ti2v_5b", (1, 48, 6, 4, 3)), ("hunyuan_video15", (1, 32, 6, 3, 2)),
                                           ("ltx2", (1, 128, 6, 3, 2))])
@pytest.mark.parametrize("chunk", [1, 2, 3, 8])
def test_any_chunk_of_latent_frames_gives_the_hosts_decode(comfy_host, vaes, family, shape, chunk):
    """The carried decode runs a band's latent frames in chunks (the node's choice, `host.vae`); every size decodes
    what the host's first-stage model does, and a wrong chunk boundary (its time caches dropped) would not."""
    core = comfy_host.module("core.vae")
    model = vaes[family].first_stage_model
    z = latent(shape, seed=chunk)
    with torch.no_grad():
        ref = model.decode(z).float()
        out = core.decoder_for(model)[1](model, z, 1, chunk=chunk)
    assert out.shape == ref.shape
    assert err(out, ref) <= TOL


@pytest.mark.parametrize("family", ["wan22_a14b_low", "wan22_ti2v_5b", "hunyuan_video15"])
def test_exact_nodes_run_under_inference_mode(comfy_host, vaes, caplog, family):
    """The server runs every prompt under torch.inference_mode(); the exact encodes (one image, a clip) and the
    carried decode (a video) run there and give the host's results. The tiny VAEs are narrowed builds of the host's
    classes (host/tiny_video_families.py), which a VAELoader file of that size would not detect, so this stands in
    for the real-server row of tests/e2e/test_vae_decode.py."""
    vae = vaes[family]
    pixels = torch.rand((1, 64, 48, 3), generator=torch.Generator().manual_seed(9))
    z = latent((1, vae.latent_channels, 3, 4, 3), seed=9)
    clip = torch.rand((5, 64, 48, 3), generator=torch.Generator().manual_seed(10))
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        enc = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 1).result[0]["samples"]
        enc_clip = comfy_host.node("PyraExactVAEEncode").execute(clip, vae, 1).result[0]["samples"]
        dec = decode_node(comfy_host, vae, z, 1)
        ref_enc, ref_clip, ref_dec = vae.encode(pixels), vae.encode(clip), stock(vae, z)
    assert "host's own" not in caplog.text
    assert err(enc, ref_enc) <= TOL and err(enc_clip, ref_clip) <= TOL and err(dec, ref_dec) <= TOL
