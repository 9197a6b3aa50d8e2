"""Pyramid sampling through the real server on the demo models: every family, masks, areas, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import pyramid_guider_masked_area, pyramid_sampler

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3", "wan21"])
def test_pyramid_sampler_on_demo_models(server, family):
    entry = server.wait(server.queue(pyramid_sampler(family)), timeout=300)
    imgs = server.output_arrays(entry)
    assert len(imgs) == (5 if family == "wan21" else 1)
    assert imgs[0].shape == (128, 128, 3) and all(np.isfinite(i).all() for i in imgs)


def test_pyramid_guider_with_mask_and_area(server):
    entry = server.wait(server.queue(pyramid_guider_masked_area()), timeout=300)
    (img,) = server.output_arrays(entry)
    assert img.shape == (128, 128, 3) and np.isfinite(img).all()


def test_bad_ladder_is_rejected_before_running(server):
    from harness import PromptRejected

    with pytest.raises(PromptRejected, match="multiple of the next"):
        server.queue(pyramid_sampler("sd3", ladder="3:0.2, 2:0.2"))


def test_level_smaller_than_a_patch_is_a_clear_error(server):
    prompt = pyramid_sampler("sd3", ladder="8:0.3", size=64)
    entry = server.wait(server.queue(prompt), timeout=120, allow_error=True)
    errors = [m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "smaller than one model patch" in errors[0]
