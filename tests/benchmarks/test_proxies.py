"""benchmarks/proxies.py --smoke on the CPU: trains the tiny Flux-class proxy, writes a checkpoint the host's stock
loader detects as Flux, and evaluates the pyramid and the step cache on the loaded file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_large_checkpoint_comes_back_in_parts(tmp_path):
    import hashlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from proxies import split_checkpoint
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    data = os.urandom(2 * 2**20 + 5)
    out, keep = tmp_path / "out", tmp_path / "keep"
    out.mkdir()
    (out / "flux-proxy.safetensors").write_bytes(data)
    rec = split_checkpoint(out, 1.0, keep)
    assert rec["parts"] == [f"flux-proxy.safetensors.part{i}" for i in range(3)]
    assert not (out / "flux-proxy.safetensors").exists() and (keep / "flux-proxy.safetensors").read_bytes() == data
    joined = b"".join((out / p).read_bytes() for p in rec["parts"])
    assert joined == data and rec["sha256"] == hashlib.sha256(joined).hexdigest()
    small = tmp_path / "small"
    small.mkdir()
    (small / "flux-proxy.safetensors").write_bytes(data[:100])
    assert split_checkpoint(small, 1.0, keep)["parts"] == ["flux-proxy.safetensors"]


def test_smoke_run_trains_loads_and_evaluates(tmp_path, newest_host):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "proxies.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("flux-proxy.safetensors", "flux-proxy-codec.safetensors", "proxy-loss.json", "proxies-h200.json",
                 "proxies-h200.md"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "proxies-h200.json").read_text())
    assert report["load"]["detected_config"] == "Flux"  # the stock UNETLoader path
    assert report["load"]["max_abs_diff_to_file"] == 0.0
    losses = json.loads((tmp_path / "proxy-loss.json").read_text())["log"]
    assert len(losses) == report["training"]["steps"] == 12
    assert all(math.isfinite(e["loss"]) for e in losses)
    head = report["headline"]
    for key in ("pyramid_worst_band_vs_direct_b_flux_proxy", "cache_speedup_flux_proxy_at_easycache_deviation"):
        assert math.isfinite(head[key]), key
    bands = report["pyramid"]["128"]["bands"]
    assert {"direct_vs_data", "a_default", "b_default", "b_flux_shift", "b_renoise3",
            "b_scale_calibrated", "b_channel_renorm"} <= set(bands)
    assert head["pyramid_worst_band_vs_direct_b_flux_proxy"] == max(abs(r - 1) for r in bands["b_default"][0])
    # the variants' own loop with every option off is the node's pyramid_sample, through the Flux latent format
    assert max(report["pyramid"]["128"]["loop_equals_node_max_abs_diff"].values()) < 1e-5
    # sparse attention: keep-all is the dense model; fewer blocks kept give a real sparsity and a finite PSNR
    attn = report["attention"]["runs"]
    assert attn["keep1"]["psnr_db"] > 100 and attn["keep1"]["sparsity"] == 0
    assert 0 < attn["keep0.5"]["sparsity"] < attn["keep0.1"]["sparsity"]
    assert math.isfinite(attn["keep0.1"]["psnr_db"]) and attn["keep0.1"]["psnr_db"] < attn["keep1"]["psnr_db"]
    # the analytic key of the issue comes from the committed inconsistent-family run, named with its source
    assert head["pyramid_analytic_inconsistent_source"] == "benchmarks/results/pyramid-inconsistent-cpu.json"
    assert 0 < head["pyramid_worst_band_vs_direct_b_analytic_inconsistent"] < 1
    sw = report["pyramid"]["128"]["sw_vs_data"]   # unpaired distance to held-out data, direct and every variant
    assert {"direct", "b_default", "b_scale_calibrated"} <= set(sw) and all(v > 0 for v in sw.values())
    hr = report["highres"]   # DiffuseHigh and the hires fix from the same base; bicubic is the base itself
    assert hr["size"] == 2 * hr["base_size"] and set(hr["runs"]) == {"bicubic", "hires_fix", "diffusehigh", "direct"}
    assert hr["runs"]["bicubic"]["ssim_vs_bicubic"] > 0.999
    assert all(r["sw_vs_data"] > 0 and r["ssim_vs_bicubic"] < 0.999 for k, r in hr["runs"].items() if k != "bicubic")
    assert math.isfinite(head["highres_sw_vs_data_diffusehigh"])
    sched = report["schedules"]["runs"]   # every scheduler at 4 steps against the 8-step simple reference
    assert {r["scheduler"] for r in sched.values()} == {"simple", "normal", "karras", "beta", "sgm_uniform",
                                                       "pyra_searched"}
    assert all(math.isfinite(r["psnr_db_vs_ref"]) for r in sched.values())
    assert len({round(r["psnr_db_vs_ref"], 2) for r in sched.values()}) > 1   # the schedules differ
    assert head["schedule_psnr_db_pyra_searched_4"] == sched["pyra_searched_4"]["psnr_db_vs_ref"]


def test_the_vae_file_holds_the_proxys_latent_and_loads_through_the_host(tmp_path, comfy_host, newest_host):
    """--codec vae (benchmarks/proxy_vae.py), without training: the saved VAE file has the per-channel
    standardisation and Flux's latent format folded in, so VAEEncode through it, then the Flux model's
    process_latent_in, is the standardised latent the DiT trains on, and VAEDecode of a sampler's latent is the
    codec's decode; the small layout is refused by the stock VAELoader's detection and loaded with its config."""
    import comfy.latent_formats
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO / "benchmarks"))   # proxy_vae imports its sibling benchmarks as it runs
    try:
        _check_vae_file(tmp_path, comfy.latent_formats.Flux(), torch, save_file)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _check_vae_file(tmp_path, fmt, torch, save_file):
    import proxy_vae

    config = proxy_vae.layout("small", proxy_vae.SMOKE)
    model = proxy_vae.build(config, 0).eval()
    g = torch.Generator().manual_seed(0)
    shift, scale = torch.randn(16, generator=g) * 0.3, torch.rand(16, generator=g) + 0.2
    codec = proxy_vae.VAECodec(model, shift, scale)
    path = tmp_path / proxy_vae.VAE_FILE
    save_file(proxy_vae.folded_state_dict(model, shift, scale, fmt, torch.float32), str(path))
    vae, record = proxy_vae.load(path, config)
    assert record["stock_vaeloader"].startswith("fails") and record["max_abs_diff_to_file"] == 0.0
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, size=64, mode="bilinear")
    z = codec.encode(x)
    latent = vae.encode_latent(x)
    assert float((fmt.process_in(latent) - z).norm() / z.norm()) < 1e-4
    img, ref = vae.decode_latent(latent), codec.decode(z).clamp(-1, 1)
    assert float((img - ref).norm() / ref.norm()) < 1e-4


def test_smoke_run_in_a_vae_latent(tmp_path, newest_host):
    """--codec vae end to end on the CPU, pyramid section only (about 8 s): the VAE trains first, its
    reconstruction and pooling commutation are recorded, the DiT trains in its latent, the VAE file is loaded by the
    host and every pyramid image is decoded through it."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "proxies.py"), "--smoke", "--codec", "vae", "--max-steps", "2",
           "--sections", "pyramid", "--vae-return", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "proxies-h200.json").read_text())
    vae, load = report["training"]["vae"], report["load"]["vae"]
    assert report["config"]["codec"] == "vae" and report["training"]["codec"]["kind"].startswith("AutoencoderKL")
    assert vae["steps"] == 3 and report["training"]["steps"] == 2
    assert all(math.isfinite(v) for v in vae["reconstruction_psnr_db"].values())
    for latent in ("raw_mean", "standardised", "patch_codec_same_crops"):
        assert set(vae["pooling"][latent]) == {"2", "4"}
    assert load["stock_vaeloader"].startswith("fails") and load["max_abs_diff_to_file"] == 0.0
    assert (tmp_path / "flux-proxy-vae.safetensors").is_file() and math.isfinite(load["file_check"]["psnr_db"])
    head = report["headline"]
    assert head["proxy_codec"] == vae["kind"] and math.isfinite(head["vae_pooling_relative_error_2x2"])
    assert math.isfinite(head["pyramid_worst_band_vs_direct_b_flux_proxy"])
    assert max(report["pyramid"]["128"]["loop_equals_node_max_abs_diff"].values()) < 1e-5
    assert report["cache"]["skipped"].startswith("not in --sections")
