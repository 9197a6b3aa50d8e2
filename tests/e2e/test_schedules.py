"""PyraSearchedSigmas through the real server: SamplerCustom on the tiny SD1.5 demo model, and a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from prompts import searched_sigmas

pytestmark = pytest.mark.server


def test_searched_sigmas_drive_sampler_custom(server):
    entry = server.wait(server.queue(searched_sigmas("sd15")), timeout=300)
    (path,) = server.output_images(entry)
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    assert img.shape == (64, 64, 3) and np.isfinite(img).all() and img.std() > 0


def test_wrong_family_is_a_clear_error(server):
    prompt = searched_sigmas("sd3")
    prompt["9"]["inputs"]["family"] = "sd15"
    entry = server.wait(server.queue(prompt), timeout=120, allow_error=True)
    errors = [m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "set family to auto or to one of sd3, flux, wan21" in errors[0]
