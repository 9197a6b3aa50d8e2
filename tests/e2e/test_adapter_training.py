"""Sparse and Householder adapters through the real server: train, save, load with the stock loader, sample."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prompts import demo_model, demo_with_lora, train_adapter

pytestmark = pytest.mark.server


@pytest.mark.parametrize("adapter_type", ["sparse", "householder"])
def test_train_then_sample_with_the_stock_loader(server, adapter_type):
    entry = server.wait(server.queue(train_adapter(adapter_type, prefix=f"loras/pyra_e2e_{adapter_type}")),
                        timeout=900)
    (report,) = entry["outputs"]["5"]["text"]
    match = re.search(r"saved (?:loras/)?(\S+\.safetensors)", report)
    assert match, report
    assert (server.base / "output" / "loras" / match.group(1)).is_file()
    prompt = demo_with_lora(match.group(1), prefix=f"pyra_e2e_{adapter_type}_loaded")
    (with_adapter,) = server.output_arrays(server.wait(server.queue(prompt), timeout=300))
    (plain,) = server.output_arrays(server.wait(server.queue(demo_model("sd15", prefix="pyra_e2e_adapter_plain")),
                                                timeout=300))
    assert with_adapter.shape == plain.shape and np.isfinite(with_adapter).all()
    assert np.abs(with_adapter - plain).max() > 0, "the trained adapter did not change the output"
