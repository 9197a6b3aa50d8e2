"""Demo files of the 2026 families (host/family_demo_files.py): what the stock loaders make of them, what an older
host skips, and the demo conditioning of those families."""

from __future__ import annotations

import pytest
import torch

# file key -> host model-config class the UNETLoader path must detect
MODELS = {"flux2_klein": "Flux2", "wan22_ti2v_5b": "WAN22_T2V", "wan22_a14b_high": "WAN21_T2V",
          "wan22_a14b_low": "WAN21_T2V", "hunyuan_video15": "HunyuanVideo15", "ltx2": "LTXAV"}
# file key -> (VAE first_stage_model class, latent channels)
VAES = {"flux2_vae": ("AutoencoderKL", 128), "wan22_taehv": ("TAEHV", 48), "hv15_taehv": ("TAEHV", 32),
        "ltx2_vae": ("VideoVAE", 128)}
# demo conditioning family -> (tiny builder module, its family)
CONDITIONING = {"flux2_klein": ("tiny_image_families", "flux2_klein"),
                "wan22": ("tiny_video_families", "wan22_ti2v_5b"),
                "hunyuan_video15": ("tiny_video_families", "hunyuan_video15"), "ltx2": ("tiny_video_families", "ltx2")}


@pytest.fixture(scope="module")
def files(comfy_host):
    return comfy_host.module("host.family_demo_files")


@pytest.fixture(scope="module")
def written(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("family_models")
    paths, skipped = files.write(root)
    return root, paths, skipped


def _need(files, key):
    lacking = files.missing(key)
    if lacking is not None:
        pytest.skip(f"this ComfyUI has no {lacking}")


def test_every_file_is_written_or_skipped_with_a_reason(files, written):
    root, paths, skipped = written
    assert {p.name for p in paths} | {files.FILES[k][1] for k in skipped} == {n for _, n in files.FILES.values()}
    assert all(isinstance(why, str) and why for why in skipped.values())
    for path in paths:
        assert path.stat().st_size < 80 * 2**20, f"{path.name} is not tiny"
    assert files.write(root) == ([], skipped)  # present files are kept


@pytest.mark.parametrize("key", MODELS)
def test_unet_loader_detects_the_file(files, written, key):
    _need(files, key)
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(str(written[0].joinpath(*files.FILES[key])))
    assert type(patcher.model.model_config).__name__ == MODELS[key]


@pytest.mark.parametrize("key", VAES)
def test_vae_loader_builds_the_family_vae(files, written, key):
    _need(files, key)
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(written[0].joinpath(*files.FILES[key])), return_metadata=True)
    vae = comfy.sd.VAE(sd=sd, metadata=metadata)
    cls, channels = VAES[key]
    assert type(vae.first_stage_model).__name__ == cls
    assert vae.latent_channels == channels


def test_the_files_are_deterministic(files):
    key = "wan22_a14b_low"
    _need(files, key)
    a, b = files.state_dict(key)[0], files.state_dict(key)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = files.state_dict(key, seed=1)[0]
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("family", CONDITIONING)
def test_demo_conditioning_matches_the_tiny_models(comfy_host, family):
    """PyraDemoConditioning's shapes for the new families are those of the tiny builders' conditioning."""
    module, tiny = CONDITIONING[family]
    ours = comfy_host.module("host.demo_models").demo_conditioning(family, 1)
    theirs = comfy_host.module(f"host.{module}").conditioning(tiny, 1)
    assert ours[0][0].shape == theirs[0][0].shape
    assert set(ours[0][1]) <= set(theirs[0][1])
