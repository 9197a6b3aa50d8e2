"""PyraStepCache through the real server on the demo model files: runs, and at threshold 0 equals no cache."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import demo_model, step_cache

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3", "wan21"])
def test_step_cache_on_demo_models(server, family):
    plain = server.output_arrays(server.wait(server.queue(demo_model(family, steps=6)), timeout=300))
    exact = server.output_arrays(server.wait(server.queue(step_cache(family, threshold=0.0)), timeout=300))
    # the optional inputs too: extrapolation (two computed steps per three), one shallow UNet block
    options = {"extrapolate": True, "max_reused_in_a_row": 2, "unet_shallow_blocks": 1 if family == "sd15" else -1}
    fast = server.output_arrays(server.wait(server.queue(step_cache(family, threshold=5.0, **options)), timeout=300))
    assert len(fast) == len(plain) and all(np.isfinite(i).all() for i in fast)
    assert all(np.array_equal(a, b) for a, b in zip(exact, plain, strict=True))
