"""PyraSparseAttention through the real server on the demo SD3 and Wan models."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import demo_model

pytestmark = pytest.mark.server


def with_sparse_attention(family: str, prefix: str, keep_mass: float, keep_ratio: float) -> dict:
    prompt = demo_model(family, prefix=prefix)
    if family == "sd3":  # 1024 image tokens: 16 blocks of 64
        prompt["4"]["inputs"].update(width=512, height=512)
    prompt["9"] = {"class_type": "PyraSparseAttention", "inputs": {
        "model": ["1", 0], "keep_mass": keep_mass, "keep_ratio": keep_ratio, "block_size": "64",
        "start_percent": 0.0, "end_percent": 1.0, "text_tokens": -1, "fastest_dense_backend": True}}
    prompt["5"]["inputs"]["model"] = ["9", 0]
    return prompt


@pytest.mark.parametrize("family", ["sd3", "wan21"])
def test_sparse_attention_on_demo_models(server, family):
    plain = demo_model(family, prefix=f"pyra_test_attn_plain_{family}")
    if family == "sd3":
        plain["4"]["inputs"].update(width=512, height=512)
    keep_all = with_sparse_attention(family, f"pyra_test_attn_all_{family}", 1.0, 0.0)
    half = with_sparse_attention(family, f"pyra_test_attn_half_{family}", 0.9, 0.5)
    ref = server.output_arrays(server.wait(server.queue(plain), timeout=300))
    same = server.output_arrays(server.wait(server.queue(keep_all), timeout=300))
    sparse = server.output_arrays(server.wait(server.queue(half), timeout=300))
    assert max(float(np.abs(a - b).max()) for a, b in zip(same, ref, strict=True)) <= 1.5 / 255
    assert all(np.isfinite(s).all() and s.shape == r.shape for s, r in zip(sparse, ref, strict=True))
