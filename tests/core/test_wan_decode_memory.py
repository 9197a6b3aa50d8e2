"""benchmarks/memcount.py counts live tensor bytes; on the meta device the banded Wan 2.1 decode's peak at the real
size (dim 96, 81 frames at 832x480, bf16, output in the compute dtype as the host returns it) stays under 1/4 of
the host's decode of the same host version.

Counted (weights included): on 0.3.76-dev and 0.8.1 the host decodes all frames at once and 4-row bands are well
under 1/4. 0.33.0 decodes in frame chunks (2.94 GB peak), where 4-row bands reach 0.29 of it and 1-row bands
0.236: the 1/4 holds with 1-row bands on every host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from host import comfyui_dir
from packload import load_pack_package

load_pack_package()
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
memcount = pytest.importorskip("memcount")


def test_live_bytes_counts_peak_views_and_frees():
    resident = torch.zeros(10)
    with memcount.LiveBytes([resident]) as counter:
        a = torch.empty(1000)            # 4000 bytes
        view = a[:10]                     # a view: no new storage
        del a
        b = view * 2                      # 40 bytes while the 4000 still live through the view
        del view
        c = torch.empty(500) + b.sum()    # 2000 + 2000 (the add's output) after the 4000 were freed
        counter.tag(c, "c")
    assert counter.resident == 40
    assert counter.peak == 40 + 4000 + 40 + 4  # the sum's 4-byte scalar beside a, b (a's view still alive)
    assert counter.total == 40 + 40 + 2000      # resident, b, c
    assert counter.breakdown()["resident"] == 40


def test_wan_meta_peak_under_a_quarter_of_the_host():
    sys.path.insert(0, str(comfyui_dir()))
    from comfy.cli_args import args

    args.cpu = True
    wdm = pytest.importorskip("wan_decode_memory")
    model = wdm.meta_wan(wdm.WAN_REAL, torch.bfloat16)
    z = torch.empty((1, 16, 21, 60, 104), device="meta", dtype=torch.bfloat16)   # 81 frames
    host = wdm.count_host(model, z)
    ours, parked = wdm.count_ours(model, z, 4, torch.bfloat16)
    out_bytes = 3 * 81 * 480 * 832 * 2
    assert ours.breakdown()["output"] == out_bytes
    assert host.peak > 3 * (ours.peak - ours.resident)   # the host holds full-resolution caches: GiB
    assert ours.peak <= 0.3 * host.peak
    assert "latent-resolution features" in ours.breakdown()
    # the carried rows wait in host memory between bands: two rows per 3x3 conv and frame, well under a GiB
    assert 0.3 * (1 << 30) < parked.peak < 1 << 30
    thin, _ = wdm.count_ours(model, z, 1, torch.bfloat16)
    assert thin.peak < ours.peak and thin.peak <= 0.25 * host.peak
