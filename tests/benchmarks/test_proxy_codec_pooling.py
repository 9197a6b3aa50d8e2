"""benchmarks/proxy_codec_pooling.py: pooling a patch codec's latent against the latent of the pooled image."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from packload import load_pack_package

REPO = Path(__file__).resolve().parents[2]
load_pack_package()
proxy = importlib.import_module("pyra_pack.core.proxy")


def _measure():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module("proxy_codec_pooling").measure
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def smooth_images(n=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1, size=size,
                                        mode="bilinear", align_corners=False)
    return x + 0.1 * torch.randn(x.shape, generator=g)


def test_an_8x8_patch_codec_does_not_commute_with_pooling_but_a_pixel_codec_does():
    measure, x = _measure(), smooth_images()
    patch = measure(proxy.PatchPCACodec.fit(x, factor=8, channels=16), x)
    assert patch["2"]["relative_error"] > 0.2 and patch["2"]["std_ratio"] < 0.9
    assert abs(patch["2"]["channel_std_ratio"][0] - 1) < 0.05   # the patch mean: pooling keeps it
    assert patch["4"]["std_ratio"] < patch["2"]["std_ratio"]
    pixel = measure(proxy.PatchPCACodec.fit(x, factor=1, channels=3), x)   # a per-pixel linear map commutes
    assert pixel["2"]["relative_error"] < 1e-4 and pixel["4"]["relative_error"] < 1e-4


def test_vae_pooling_smoke(tmp_path, newest_host):
    """benchmarks/proxy_vae_pooling.py end to end for one training second: the host's AutoencoderKL trains, and both
    latents are measured the same way."""
    import json
    import os
    import subprocess

    out = tmp_path / "vae.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "proxy_vae_pooling.py"), "--seconds", "1",
                          "--train-size", "32", "--batch", "2", "--size", "64", "--samples", "2", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["vae"]["training"]["steps"] >= 1
    for name in ("vae", "codec"):
        assert set(res[name]["pooling"]) == {"2", "4"}
        assert all(0 < r["relative_error"] for r in res[name]["pooling"].values())
    assert "| vae | 2x2 |" in out.with_suffix(".md").read_text()
