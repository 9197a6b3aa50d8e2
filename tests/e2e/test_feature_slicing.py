"""PyraFeatureSlicing through the real server on the demo models: the same images as without it."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import demo_model

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3", "wan21"])
def test_sliced_model_gives_the_same_images(server, family):
    plain = demo_model(family, prefix=f"pyra_test_slicing_off_{family}")
    sliced = demo_model(family, prefix=f"pyra_test_slicing_on_{family}")
    for prompt in (plain, sliced):  # 256 px: more tokens than one 64-token slice in every family
        prompt["4"]["inputs"].update(width=256, height=256)
    sliced["9"] = {"class_type": "PyraFeatureSlicing", "inputs": {"model": ["1", 0], "slice_tokens": 64}}
    sliced["5"]["inputs"]["model"] = ["9", 0]
    off = server.output_arrays(server.wait(server.queue(plain), timeout=300))
    on = server.output_arrays(server.wait(server.queue(sliced), timeout=300))
    assert len(on) == len(off) >= 1
    assert max(float(np.abs(a - b).max()) for a, b in zip(on, off, strict=True)) <= 1.5 / 255  # one 8-bit level
