"""Pyramid nodes, coarse previews and multi-level decoding in-process on the demo models."""

from __future__ import annotations

import pytest
import torch


def run(comfy_host, node_id: str, **inputs):
    return comfy_host.node(node_id).execute(**inputs).result


@pytest.mark.parametrize("kind", ["laplacian", "haar", "db4"])
def test_image_split_level_merge_round_trip(comfy_host, kind):
    image = torch.rand(2, 37, 50, 3, generator=torch.Generator().manual_seed(0))
    (pyramid,) = run(comfy_host, "PyraPyramidSplit", kind=kind, levels=3, image=image)
    merged, _ = run(comfy_host, "PyraPyramidMerge", pyramid=pyramid)
    assert merged.shape == image.shape and torch.allclose(merged, image, atol=1e-5)
    view, _ = run(comfy_host, "PyraPyramidLevel", pyramid=pyramid, level=1, full_size=True, offset=0.5)
    assert view.shape == image.shape
    small, raw = run(comfy_host, "PyraPyramidLevel", pyramid=pyramid, level=3, full_size=False, offset=0.5)
    assert small.shape[1:3] == pyramid.low.shape[-2:] and torch.allclose(raw["samples"], pyramid.low)


def test_latent_pyramid_keeps_the_latent_dict_and_video_shape(comfy_host):
    samples = torch.randn(1, 16, 3, 16, 24)
    (pyramid,) = run(comfy_host, "PyraPyramidSplit", kind="haar", levels=2, latent={"samples": samples,
                                                                                     "batch_index": [4]})
    image, latent = run(comfy_host, "PyraPyramidMerge", pyramid=pyramid)
    assert torch.allclose(latent["samples"], samples, atol=1e-5) and latent["batch_index"] == [4]
    assert image.shape == (3, 16, 24, 3) and 0 <= float(image.min()) and float(image.max()) <= 1


def test_edit_and_mix_nodes(comfy_host):
    a, b = torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3)
    (pa,) = run(comfy_host, "PyraPyramidSplit", kind="laplacian", levels=2, image=a)
    (pb,) = run(comfy_host, "PyraPyramidSplit", kind="laplacian", levels=2, image=b)
    (flat,) = run(comfy_host, "PyraPyramidEdit", pyramid=pa, weights="0, 0", level=0, offset=0.5)
    assert float(flat.band(0).abs().max()) == 0 and torch.equal(flat.low, pa.low)
    view, _ = run(comfy_host, "PyraPyramidLevel", pyramid=pb, level=0, full_size=False, offset=0.5)
    (swapped,) = run(comfy_host, "PyraPyramidEdit", pyramid=pa, weights="1", level=0, offset=0.5, image=view)
    assert torch.allclose(swapped.band(0), pb.band(0), atol=1e-6)
    (hybrid,) = run(comfy_host, "PyraPyramidMix", a=pa, b=pb, weights="0, 0, 1")
    assert torch.equal(hybrid.band(0), pa.band(0)) and torch.allclose(hybrid.low, pb.low)
    with pytest.raises(ValueError, match="exactly one"):
        run(comfy_host, "PyraPyramidSplit", kind="haar", levels=1)
    with pytest.raises(ValueError, match="do not fit"):
        run(comfy_host, "PyraPyramidSplit", kind="haar", levels=9, image=a)


def test_coarse_previews_shrink_all_but_the_last_step(comfy_host):
    previews = comfy_host.module("host.previews")
    seen = []
    cb = previews.coarse_callback(lambda step, x0, x, total: seen.append(tuple(x0.shape)), preview_size=256)
    x0 = torch.randn(1, 4, 128, 96)
    for step in range(3):
        cb(step, x0, x0, 3)
    assert seen == [(1, 4, 32, 24), (1, 4, 32, 24), (1, 4, 128, 96)]
    assert previews.preview_factor(64, 64, 512) == 1 and previews.preview_factor(512, 300, 512) == 8


def test_coarse_preview_guider_leaves_the_result_unchanged(comfy_host):
    import comfy.samplers

    previews = comfy_host.module("host.previews")
    patcher = comfy_host.module("host.demo_models").build_tiny_model("sd15")
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd15", 1)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, cond)
    guider.set_cfg(2.0)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", 3).cpu()
    noise = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    sizes = []
    kwargs = dict(callback=lambda s, x0, x, t: sizes.append(x0.shape[-1]), disable_pbar=True, seed=0)
    plain = guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas, **kwargs)
    coarse = previews.CoarsePreviewGuider(guider, 64).sample(noise, torch.zeros_like(noise),
                                                             comfy.samplers.sampler_object("euler"), sigmas, **kwargs)
    assert torch.equal(plain, coarse)
    assert sizes == [24, 24, 24, 6, 6, 24]


def test_multi_level_decode_on_the_demo_vae(comfy_host):
    import comfy.sd
    import comfy.utils
    import folder_paths

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(folder_paths.get_full_path("vae", "pyra-demo-taesd.safetensors")))
    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    (images,) = run(comfy_host, "PyraMultiLevelDecode", samples={"samples": latent}, vae=vae, levels=2)
    assert images.shape == (3, 128, 128, 3)
    assert torch.allclose(images[-1], vae.decode(latent[:1])[0], atol=1e-5), "the last level is the full decode"
    quarter = vae.decode(torch.nn.functional.avg_pool2d(latent[:1], 4))[0]
    assert torch.allclose(images[0, ::4, ::4], quarter, atol=1e-5), "the first level is the 1/4 latent's decode"
    with pytest.raises(ValueError, match="channels"):
        run(comfy_host, "PyraMultiLevelDecode", samples={"samples": torch.randn(1, 16, 8, 8)}, vae=vae, levels=1)
