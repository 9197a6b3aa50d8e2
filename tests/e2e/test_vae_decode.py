"""PyraExactVAEDecode through the real server: the same pictures as the stock VAEDecode on the demo models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from prompts import exact_vae_decode, exact_vae_encode

pytestmark = pytest.mark.server


@pytest.mark.parametrize("family", ["sd15", "sd3", "wan21"])
def test_exact_decode_matches_stock_decode(server, family):
    entry = server.wait(server.queue(exact_vae_decode(family, prefix=f"pyra_test_evd_{family}")), timeout=300)
    paths = server.output_images(entry)
    stock = sorted(p for p in paths if "_stock_" in p.name)
    exact = sorted(p for p in paths if "_pyra_" in p.name)
    assert len(stock) == len(exact) == (5 if family == "wan21" else 1)
    for a, b in zip(stock, exact, strict=True):
        with Image.open(a) as ia, Image.open(b) as ib:
            pa, pb = np.asarray(ia, dtype=np.int16), np.asarray(ib, dtype=np.int16)
        assert pa.shape == pb.shape == (64, 64, 3)
        assert np.abs(pa - pb).max() <= 1   # 8-bit PNGs: at most one rounding step apart


def test_exact_encode_runs_in_the_server_and_matches_stock_encode(server):
    """The demo VAEs are TAESD (no KL VAE ships with the demo): the node takes its logged fallback to the host's
    encode, so both round trips give the same picture; the exact KL path is compared with the host in-process."""
    entry = server.wait(server.queue(exact_vae_encode("sd15")), timeout=300)
    paths = server.output_images(entry)
    stock = sorted(p for p in paths if "_stock_" in p.name)
    exact = sorted(p for p in paths if "_pyra_" in p.name)
    assert len(stock) == len(exact) == 2
    for a, b in zip(stock, exact, strict=True):
        with Image.open(a) as ia, Image.open(b) as ib:
            pa, pb = np.asarray(ia, dtype=np.int16), np.asarray(ib, dtype=np.int16)
        assert pa.shape == pb.shape == (48, 64, 3)
        assert np.abs(pa - pb).max() <= 1
