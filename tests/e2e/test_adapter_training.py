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


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_householder_at_the_schema_maximum_stays_small(server):
    """256 reflections (the schema's maximum), one step, 32x32: the rank-1 loop grew the server by about 0.19 GB per
    reflection and the kernel killed it at 24 GB. With the compact WY form the server's peak grows by well under
    2 GB (the demo UNet's weights are 63 MB), and the prompt succeeds."""
    prompt = train_adapter("householder", steps=1, prefix="loras/pyra_e2e_hra_max")
    prompt["3"]["inputs"].update(width=32, height=32, batch_size=1)
    prompt["5"]["inputs"].update(reflections=256, batch_size=1)
    before = peak_rss_bytes(server.proc.pid)
    entry = server.wait(server.queue(prompt), timeout=600)
    grown = peak_rss_bytes(server.proc.pid) - before
    print(f"server peak memory grew by {grown / 2**20:.0f} MB")
    assert "saved" in entry["outputs"]["5"]["text"][0]
    assert grown < 2 * 2**30, f"the server's peak memory grew by {grown / 2**30:.2f} GB"
