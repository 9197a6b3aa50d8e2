"""tools/train_dfm.py smoke test: two random latents, train, resume, and the file loads with PyraDFMLoader's code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_dfm.py"), "--cpu", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_trains_resumes_and_writes_a_loadable_checkpoint(comfy_host, tmp_path):
    import comfy.sd
    import folder_paths

    base_file = folder_paths.get_full_path("diffusion_models", "pyra-demo-sd3.safetensors")
    if base_file is None:
        pytest.fail("no demo SD3 model: run `make host`")
    data = tmp_path / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        save_file({"latent_tensor": torch.randn(1, 16, 16, 16, generator=g)}, str(data / f"l{i}.safetensors"))
    out = tmp_path / "out" / "cli.safetensors"
    common = ["--base", base_file, "--data", str(data), "--batch", "2", "--lr", "1e-3", "--out", str(out),
              "--log-every", "1"]
    run = _cli(*common, "--steps", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "step 3/3 loss" in run.stdout and "steps 0 -> 3" in run.stdout, run.stdout
    assert out.is_file() and out.with_name("cli.optimizer.pt").is_file()
    run = _cli(*common, "--steps", "2", "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "steps 3 -> 5" in run.stdout, run.stdout

    meta, _, lora = comfy_host.module("core.dfm.checkpoint").load_dfm(out)
    assert meta["step"] == 5 and meta["levels"] == 2 and lora
    base = comfy.sd.load_diffusion_model(base_file)
    dfm = comfy_host.module("host.dfm").load(base, out)
    cond = comfy_host.module("host.demo_models").demo_conditioning("sd3", 1)
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    with torch.inference_mode():
        x = comfy_host.node("PyraDFMSampler").execute(dfm, 3, "2, 2", "0.3", "euler", 2.0, "simple", cond, cond,
                                                      latent).result[0]["samples"]
    assert torch.isfinite(x).all()


def test_cli_trains_wan_on_video_latents(comfy_host, tmp_path):
    """Wan 2.1: 5-D latents (N, C, T, H, W) and the zero conditioning of the model's own text width."""
    import folder_paths

    base_file = folder_paths.get_full_path("diffusion_models", "pyra-demo-wan21.safetensors")
    if base_file is None:
        pytest.fail("no demo Wan model: run `make host`")
    data = tmp_path / "data"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        save_file({"latent_tensor": torch.randn(1, 16, 2, 16, 16, generator=g)}, str(data / f"v{i}.safetensors"))
    out = tmp_path / "wan.safetensors"
    run = _cli("--base", base_file, "--data", str(data), "--batch", "2", "--lr", "1e-3", "--out", str(out),
               "--steps", "2", "--log-every", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "latents (16, 2, 16, 16)" in run.stdout and out.is_file(), run.stdout
    meta = comfy_host.module("core.dfm.checkpoint").load_dfm(out)[0]
    assert meta["family"] == "wan21" and meta["step"] == 2


def test_cli_says_what_is_missing(tmp_path):
    run = _cli("--base", "x.safetensors", "--data", str(tmp_path), "--out", str(tmp_path / "o.safetensors"))
    assert run.returncode != 0 and "no latents" in run.stderr
