"""PyraExactVAEDecode in the in-process host: the demo VAEs and a tiny KL VAE, against the stock VAEDecode."""

from __future__ import annotations

import logging

import pytest
import torch

TOL = 1e-4


@pytest.fixture(scope="module")
def mod(comfy_host):
    return comfy_host.module("host.vae")


@pytest.fixture(scope="module")
def demo_vaes(comfy_host, tmp_path_factory):
    import comfy.sd
    import comfy.utils

    demo = comfy_host.module("host.demo_models")
    root = tmp_path_factory.mktemp("models")
    demo.write_demo_models(root)
    load = {}
    for key in ("taesd", "taesd3", "wan21_vae"):
        sub, name = demo.DEMO_FILES[key]
        load[key] = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(root / sub / name)))
    return load


TINY_KL = {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 2],
    "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}


@pytest.fixture(scope="module")
def tiny_kl(comfy_host):
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    model = AutoencoderKL(**TINY_KL)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            scale = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.5
            p.copy_((0.0 if p.ndim >= 2 else base) + scale * torch.randn(p.shape, generator=g))
    return comfy.sd.VAE(sd=model.state_dict(), config={"params": TINY_KL})


@pytest.fixture(scope="module")
def inference_vaes(demo_vaes, tiny_kl):
    """The same VAEs loaded as the server loads them: inside torch.inference_mode() (the server runs every prompt,
    loaders included, under it), so every weight is an inference tensor, which has no version counter."""
    import comfy.sd

    with torch.inference_mode():
        vaes = {key: comfy.sd.VAE(sd=vae.get_sd()) for key, vae in demo_vaes.items()}
        vaes["kl"] = comfy.sd.VAE(sd=tiny_kl.get_sd(), config={"params": TINY_KL})
    for vae in vaes.values():
        assert all(p.is_inference() for p in vae.first_stage_model.parameters())
    return vaes


def latent(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_node(comfy_host, vae, z, rows):
    out = comfy_host.node("PyraExactVAEDecode").execute({"samples": z}, vae, rows)
    return out.result[0]


def stock(vae, z):
    images = vae.decode(z)
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


@pytest.mark.parametrize("key, channels", [("taesd", 4), ("taesd3", 16)])
def test_demo_taesd_matches_vae_decode(comfy_host, demo_vaes, key, channels):
    vae = demo_vaes[key]
    z = latent((2, channels, 9, 7))
    ref = stock(vae, z)
    for rows in (0, 2):
        out = run_node(comfy_host, vae, z, rows)
        assert out.shape == ref.shape == (2, 72, 56, 3)
        assert (out - ref).abs().max().item() <= TOL


def test_tiny_kl_matches_vae_decode(comfy_host, tiny_kl):
    z = latent((2, 4, 11, 9))
    ref = stock(tiny_kl, z)
    out = run_node(comfy_host, tiny_kl, z, 3)
    assert out.shape == ref.shape == (2, 44, 36, 3)
    assert (out - ref).abs().max().item() <= TOL
    assert ref.std() > 0.05   # not a flat image


@pytest.mark.parametrize("frames, rows", [(1, 0), (2, 3)])
def test_demo_wan_vae_decodes_exactly(comfy_host, demo_vaes, caplog, frames, rows):
    vae = demo_vaes["wan21_vae"]
    z = latent((2, 16, frames, 9, 7))
    with caplog.at_level(logging.INFO):
        out = run_node(comfy_host, vae, z, rows)
    assert "host's own decode" not in caplog.text
    ref = stock(vae, z)
    assert out.shape == ref.shape == (2 * (1 + 4 * (frames - 1)), 72, 56, 3)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("key, shape", [("kl", (2, 4, 11, 9)), ("taesd", (1, 4, 9, 7)), ("taesd3", (1, 16, 6, 5)),
                                        ("wan21_vae", (1, 16, 3, 9, 7))])
def test_decode_under_inference_mode_as_in_the_server(comfy_host, inference_vaes, caplog, key, shape):
    """The server's path: VAE loaded and latent decoded under torch.inference_mode(). (The KL decode once read the
    weights' version counter there and failed on every KL VAE: `Inference tensors do not track version counter`.)"""
    vae = inference_vaes[key]
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        z = latent(shape)
        ref = stock(vae, z)
        out = run_node(comfy_host, vae, z, 2)
    assert "host's own decode" not in caplog.text   # the exact path ran, not the fallback
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL


def test_encode_under_inference_mode_as_in_the_server(comfy_host, inference_vaes, caplog):
    vae = inference_vaes["kl"]
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        pixels = torch.rand((1, 40, 36, 3), generator=torch.Generator().manual_seed(5))
        ref = vae.encode(pixels)
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 2).result[0]["samples"]
    assert "host's own encode" not in caplog.text
    assert out.shape == ref.shape == (1, 4, 10, 8)   # cropped to 40 x 32; this tiny VAE downsamples 4x
    assert (out - ref).abs().max().item() <= TOL


def test_other_vaes_fall_back_to_host_decode(comfy_host, mod, tiny_kl, monkeypatch, caplog):
    def unsupported(model):
        raise mod.SliceUnsupported("no exact sliced decoder for TestVAE")

    monkeypatch.setattr(mod, "decoder_for", unsupported)
    z = latent((1, 4, 6, 5))
    with caplog.at_level(logging.INFO):
        out = run_node(comfy_host, tiny_kl, z, 0)
    assert "TestVAE; using the host's own decode" in caplog.text
    assert (out - stock(tiny_kl, z)).abs().max().item() == 0


def test_unsupported_layer_found_while_decoding_falls_back(comfy_host, demo_vaes, monkeypatch, caplog):
    """A layer the slicer rejects once it builds its program (an unknown causal padding layout of a future host)
    gives the host's decode and one log line, not an error."""
    wan = comfy_host.module("core.vae.wan")

    def unknown(conv):
        raise wan.SliceUnsupported("unknown causal padding 'future' of CausalConv3d")

    monkeypatch.setattr(wan, "causal_padding", unknown)
    vae = demo_vaes["wan21_vae"]
    z = latent((1, 16, 2, 6, 5))
    with caplog.at_level(logging.INFO):
        out = run_node(comfy_host, vae, z, 2)
    assert caplog.text.count("unknown causal padding 'future' of CausalConv3d; using the host's own decode") == 1
    assert torch.equal(out, stock(vae, z))


def test_channel_and_dimension_mismatch_name_both(comfy_host, mod, tiny_kl, demo_vaes):
    with pytest.raises(mod.LatentMismatch, match=r"16 channels.*expects 4"):
        run_node(comfy_host, tiny_kl, latent((1, 16, 8, 8)), 0)
    with pytest.raises(mod.LatentMismatch, match=r"4-D image latents.*5-D"):
        run_node(comfy_host, tiny_kl, latent((1, 4, 2, 8, 8)), 0)
    with pytest.raises(mod.LatentMismatch, match=r"4 channels.*expects 16"):
        run_node(comfy_host, demo_vaes["taesd3"], latent((1, 4, 8, 8)), 0)


def test_out_of_memory_halves_the_band_and_stays_exact(comfy_host, mod, tiny_kl, monkeypatch, caplog):
    import comfy.model_management as mm

    real = mod.decoder_for(tiny_kl.first_stage_model)[1]
    tried = []

    def flaky(model, z, rows, out_device):
        tried.append(rows)
        if rows > 2:
            raise mm.OOM_EXCEPTION("simulated out of memory")
        return real(model, z, rows, out_device)

    monkeypatch.setattr(mod, "decoder_for", lambda model: ("kl", flaky))
    z = latent((1, 4, 11, 9))
    with caplog.at_level(logging.WARNING):
        out = mod.exact_decode(tiny_kl, z, 8)
    assert tried == [8, 4, 2] and "retrying with 4" in caplog.text
    assert (out - stock(tiny_kl, z)).abs().max().item() <= TOL


def test_exact_encode_matches_vae_encode(comfy_host, tiny_kl):
    pixels = torch.rand((2, 45, 38, 4), generator=torch.Generator().manual_seed(3))   # RGBA, cropped to 40 x 32
    ref = tiny_kl.encode(pixels[..., :3])
    out = comfy_host.node("PyraExactVAEEncode").execute(pixels, tiny_kl, 2).result[0]["samples"]
    assert out.shape == ref.shape == (2, 4, 10, 8)   # this tiny VAE downsamples 4x
    assert (out - ref).abs().max().item() <= TOL


def test_exact_encode_falls_back_for_other_vaes(comfy_host, demo_vaes, caplog):
    vae = demo_vaes["taesd"]
    pixels = torch.rand((1, 32, 32, 3), generator=torch.Generator().manual_seed(4))
    with caplog.at_level(logging.INFO):
        out = comfy_host.node("PyraExactVAEEncode").execute(pixels, vae, 0).result[0]["samples"]
    assert "host's own encode" in caplog.text
    assert torch.equal(out, vae.encode(pixels))
