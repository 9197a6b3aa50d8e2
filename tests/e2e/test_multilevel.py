"""Pyramid nodes and multi-level decoding through the real server on the demo models."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import pyramid_levels

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_split_merge_is_lossless_and_multi_level_decode_batches(server, family):
    entry = server.wait(server.queue(pyramid_levels(family)), timeout=300)
    arrays = dict(zip((p.name for p in server.output_images(entry)), server.output_arrays(entry), strict=True))
    stock = [a for n, a in arrays.items() if "_stock" in n]
    merged = [a for n, a in arrays.items() if "_merged" in n]
    multi = [a for n, a in arrays.items() if "_multi" in n]
    assert len(stock) == len(merged) == 1 and len(multi) == 3
    assert np.abs(stock[0] - merged[0]).max() <= 1 / 255
    assert all(m.shape == stock[0].shape for m in multi)
