"""Structure-guided high resolution and ControlNet through the real server on the demo models."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import diffusehigh, pyramid_sampler, with_controlnet

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3", "wan21"])
def test_diffusehigh_on_demo_models(server, family):
    entry = server.wait(server.queue(diffusehigh(family)), timeout=300)
    imgs = server.output_arrays(entry)
    assert len(imgs) == (5 if family == "wan21" else 1)
    assert imgs[0].shape == (128, 128, 3) and all(np.isfinite(i).all() for i in imgs)


def test_diffusehigh_pixel_guidance_and_pixel_upscale(server):
    prompt = diffusehigh("sd15", scales="1.5, 2", guidance_mode="pixel", upscale_method="pixels")
    (img,) = server.output_arrays(server.wait(server.queue(prompt), timeout=300))
    assert img.shape == (128, 128, 3) and np.isfinite(img).all()


def test_pixel_guidance_without_a_vae_is_a_clear_error(server):
    prompt = diffusehigh("sd15", guidance_mode="pixel")
    del prompt["9"]["inputs"]["vae"]
    entry = server.wait(server.queue(prompt), timeout=120, allow_error=True)
    errors = [m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "needs a VAE" in errors[0]


@pytest.mark.parametrize(("name", "build", "sampler_node"), [
    ("pyramid", lambda p: pyramid_sampler("sd15", ladder="2:0.5", steps=4, size=64, prefix=p), "5"),
    ("highres", lambda p: diffusehigh("sd15", prefix=p), "9"),
])
def test_controlnet_reaches_every_stage(server, name, build, sampler_node):
    """The same graph with and without the demo ControlNet: the ControlNet changes the result."""
    plain = build(f"pyra_test_cn_off_{name}")
    controlled = with_controlnet(build(f"pyra_test_cn_on_{name}"), sampler_node)
    if name == "highres":  # the base KSampler stays unconditioned by the ControlNet; only the stages get it
        controlled["5"]["inputs"].update(positive=["2", 0], negative=["3", 0])
    (off,) = server.output_arrays(server.wait(server.queue(plain), timeout=300))
    (on,) = server.output_arrays(server.wait(server.queue(controlled), timeout=300))
    assert off.shape == on.shape
    assert np.abs(on - off).max() > 2 / 255, "the ControlNet did not change the output"


def test_diffusehigh_with_mask_and_area_conditioning(server):
    """A noise mask on the base latent and an absolute-area prompt: both are rescaled to the stage's size."""
    prompt = diffusehigh("sd3", prefix="pyra_test_highres_masked_area")
    prompt["4"]["inputs"].update(width=128, height=128)
    prompt.update({
        "40": {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": ["3", 0], "width": 64, "height": 64, "x": 64, "y": 0, "strength": 1.0}},
        "41": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                              "conditioning_2": ["40", 0]}},
        "42": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 128}},
        "43": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["42", 0]}},
    })
    prompt["9"]["inputs"].update(positive=["41", 0], latent=["43", 0])
    (img,) = server.output_arrays(server.wait(server.queue(prompt), timeout=300))
    assert img.shape == (256, 256, 3) and np.isfinite(img).all()
