"""PyraExactVAEDecode and PyraExactVAEEncode on the LTX video VAE (host/tiny_video_families: the LTX-2 layout at 8
base channels, loaded as a file with its config metadata) against the host's decode and encode in fp32: as the host
chunks them, timestep conditioned (LTX-2's decoder, whose noise both decodes draw from the same generator state),
under inference mode, and each part of the time streaming (end padding, held residual frames, reflected borders, the
doubled first frame of a time fold) shown to matter."""

from __future__ import annotations

import logging

import pytest
import torch

TOL = 1e-4


@pytest.fixture(scope="module")
def vid(comfy_host):
    module = comfy_host.module("host.tiny_video_families")
    if not module.has_ltx2_vae():
        pytest.skip(f"this host's LTX video VAE lacks {module.LTX2_VAE_CLASS} (the LTX-2 layout)")
    return module


@pytest.fixture(scope="module")
def plain(vid):
    return vid.ltx_vae()


@pytest.fixture(scope="module")
def conditioned(vid):
    return vid.ltx_vae(timestep_conditioning=True)


def latent(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def seeded(fn, seed=0):
    torch.manual_seed(seed)
    return fn()


def decode_node(comfy_host, vae, z, rows):
    return comfy_host.node("PyraExactVAEDecode").execute({"samples": z}, vae, rows).result[0]


def stock(vae, z):
    images = vae.decode(z)
    return images.reshape(-1, *images.shape[-3:])


def err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_timestep_conditioned_decode_matches_the_hosts(comfy_host, conditioned, caplog, rows):
    z = latent((1, 128, 3, 3, 2))
    with caplog.at_level(logging.INFO):
        out = seeded(lambda: decode_node(comfy_host, conditioned, z, rows))
    assert "host's own decode" not in caplog.text
    ref = seeded(lambda: stock(conditioned, z))
    assert out.shape == ref.shape == (17, 96, 64, 3)
    assert err(out, ref) <= TOL
    assert err(out, seeded(lambda: stock(conditioned, z), seed=1)) > TOL   # the host's noise is in it


@pytest.mark.parametrize("chunk_bytes", [1, 20_000])
def test_matches_the_hosts_chunked_decode(comfy_host, conditioned, monkeypatch, chunk_bytes):
    """Host 0.33.0 splits an activation into chunks of frames wherever it exceeds get_max_chunk_size (32-128 MiB
    on a GPU, so the tiny VAE never chunks); forced small, the host runs its chunked path, and ours equals it."""
    import comfy.ldm.lightricks.vae.causal_video_autoencoder as host_ltx

    if not hasattr(host_ltx, "get_max_chunk_size"):
        pytest.skip("this host decodes the whole video at once (no chunked LTX decode before 0.33.0)")
    core = comfy_host.module("core.vae")
    model = conditioned.first_stage_model
    z = latent((1, 128, 4, 3, 2), seed=2)
    with torch.no_grad():
        whole = seeded(lambda: model.decode(z))
        monkeypatch.setattr(host_ltx, "get_max_chunk_size", lambda device: chunk_bytes)
        chunked = seeded(lambda: model.decode(z))
        out = seeded(lambda: core.decoder_for(model)[1](model, z, 1))
    assert err(chunked, whole) <= TOL   # the host's chunking changes nothing but summation order
    assert err(out, chunked) <= TOL


def test_exact_decode_runs_under_inference_mode(comfy_host, conditioned, caplog):
    """The server runs prompts under torch.inference_mode(); tests/e2e/test_vae_decode.py has the server row."""
    z = latent((1, 128, 2, 2, 2), seed=3)
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        out = seeded(lambda: decode_node(comfy_host, conditioned, z, 1))
        ref = seeded(lambda: stock(conditioned, z))
    assert "host's own" not in caplog.text
    assert err(out, ref) <= TOL


def _patched_init(monkeypatch, ltx, **attrs):
    """Every TimeConv built from now on gets `attrs` after its own __init__."""
    real = ltx.TimeConv.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        for name, value in attrs.items():
            setattr(self, name, value)

    monkeypatch.setattr(ltx.TimeConv, "__init__", init)


def test_zero_borders_instead_of_reflected_ones_are_caught(comfy_host, plain, monkeypatch):
    ltx = comfy_host.module("core.vae.ltx")
    z = latent((1, 128, 2, 3, 2), seed=4)
    ref = stock(plain, z)
    assert err(decode_node(comfy_host, plain, z, 1), ref) <= TOL
    _patched_init(monkeypatch, ltx, reflect=False)
    assert err(decode_node(comfy_host, plain, z, 1), ref) > TOL


def test_a_decode_without_the_end_padding_fails(comfy_host, plain, monkeypatch):
    """Without the last frame repeated at the end each convolution emits one frame too few: the decode raises
    rather than return a video with frames missing."""
    _patched_init(monkeypatch, comfy_host.module("core.vae.ltx"), back=0)
    with pytest.raises(AssertionError, match="frame"):
        decode_node(comfy_host, plain, latent((1, 128, 2, 2, 2)), 1)


def test_dropping_the_held_residual_frames_is_caught(comfy_host, plain, monkeypatch):
    """A residual add whose main path lags it must hold the residual's later frames for the next chunk."""
    ltx = comfy_host.module("core.vae.ltx")
    z = latent((1, 128, 3, 2, 2), seed=5)
    ref = stock(plain, z)

    def forgetful(dest, held, new):
        return dest + new[:, :, :dest.shape[2]], new[:, :, :0]

    monkeypatch.setattr(ltx, "lag_add", forgetful)
    with pytest.raises(Exception):   # noqa: B017 (a shape error or a wrong result, never a pass)
        assert err(decode_node(comfy_host, plain, z, 1), ref) <= TOL


def test_noise_injecting_decoder_takes_the_hosts_decode_logged(comfy_host, vid, caplog):
    """LTXV 0.9.1's decoder adds fresh spatial noise per call, which no banding reproduces."""
    vae = vid.ltx_vae(inject_noise=True)
    z = latent((1, 128, 2, 2, 2), seed=6)
    with caplog.at_level(logging.INFO):
        out = seeded(lambda: decode_node(comfy_host, vae, z, 1))
    assert "injects spatial noise" in caplog.text and "using the host's own decode" in caplog.text
    assert torch.equal(out, seeded(lambda: stock(vae, z)))


def encode_node(comfy_host, vae, pixels, rows):
    return comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, rows).result[0]["samples"]


@pytest.mark.parametrize("frames, latent_frames", [(1, 1), (9, 2), (17, 3)])
@pytest.mark.parametrize("rows", [0, 1, 3])
def test_encode_matches_the_hosts(comfy_host, plain, caplog, frames, latent_frames, rows):
    """One image (an image-to-video start frame) or a clip of 1 + 8k frames."""
    pixels = torch.rand((frames, 70, 100, 3), generator=torch.Generator().manual_seed(frames))   # cropped to 64x96
    with caplog.at_level(logging.INFO):
        out = encode_node(comfy_host, plain, pixels, rows)
    assert "host's own encode" not in caplog.text
    ref = plain.encode(pixels)
    assert out.shape == ref.shape == (1, 128, latent_frames, 2, 3)
    assert out.dtype == ref.dtype and out.device == ref.device
    assert err(out, ref) <= TOL
    assert err(out, plain.encode(pixels.flip(2))) > TOL   # the check can fail: another clip's latent


def test_encode_without_the_doubled_first_frame_is_caught(comfy_host, plain, monkeypatch):
    """A time fold pairs the very first frame with itself; pairing it with the next one shifts every latent frame."""
    enc = comfy_host.module("core.vae.ltx_encode")
    pixels = torch.rand((9, 64, 64, 3), generator=torch.Generator().manual_seed(8))
    ref = plain.encode(pixels)
    assert err(encode_node(comfy_host, plain, pixels, 1), ref) <= TOL
    real_reset = enc.SpaceToDepth.reset

    def reset(self):
        real_reset(self)
        self.pad_first = False

    monkeypatch.setattr(enc.SpaceToDepth, "reset", reset)
    with pytest.raises(Exception):   # noqa: B017 (a frame count error or a wrong latent, never a pass)
        assert err(encode_node(comfy_host, plain, pixels, 1), ref) <= TOL


def test_exact_encode_runs_under_inference_mode(comfy_host, plain, caplog):
    pixels = torch.rand((9, 64, 64, 3), generator=torch.Generator().manual_seed(9))
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        out = encode_node(comfy_host, plain, pixels, 1)
        ref = plain.encode(pixels)
    assert "host's own" not in caplog.text
    assert err(out, ref) <= TOL


def test_a_clip_of_other_lengths_takes_the_hosts_encode_logged(comfy_host, plain, caplog):
    """12 frames: host 0.33.0 drops the last 3, 0.8.1 refuses the clip; the node does what the host does."""
    pixels = torch.rand((12, 64, 64, 3), generator=torch.Generator().manual_seed(12))
    try:
        ref = plain.encode(pixels)
    except ValueError as host_error:
        with pytest.raises(ValueError, match=str(host_error)[:30]):
            encode_node(comfy_host, plain, pixels, 1)
        return
    with caplog.at_level(logging.INFO):
        out = encode_node(comfy_host, plain, pixels, 1)
    assert "not 1 + 8k" in caplog.text and "using the host's own encode" in caplog.text
    assert torch.equal(out, ref)


def test_a_cancelled_prompt_stops_the_decode_between_bands(comfy_host, plain, monkeypatch):
    """The progress bar moves per band, and the host's interrupt flag stops the decode at the next band."""
    import comfy.model_management as mm
    import comfy.utils

    updates = []
    real = comfy.utils.ProgressBar.update_absolute

    def record(self, value, total=None, preview=None):
        updates.append((value, total))
        if len(updates) == 2:   # after the second band: the user presses Cancel
            mm.interrupt_current_processing(True)
        return real(self, value, total, preview)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", record)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            decode_node(comfy_host, plain, latent((1, 128, 2, 3, 2)), 1)
    finally:
        mm.interrupt_current_processing(False)
    assert len(updates) == 2 and 0 < updates[0][0] < updates[1][0] < updates[1][1]   # two bands, then the stop
