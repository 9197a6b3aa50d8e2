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
