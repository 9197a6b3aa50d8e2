"""DFM through the real server: the demo SD3 model converted and sampled stage by stage; stock samplers refuse it."""

from __future__ import annotations

import numpy as np
import pytest
from prompts import dfm_convert_sample, dfm_train_sample

pytestmark = pytest.mark.server


@pytest.mark.parametrize("levels", [1, 2])
def test_convert_and_sample_the_demo_sd3(server, levels):
    prompt = dfm_convert_sample(levels=levels, stage_steps="4" if levels == 1 else "3, 2",
                                prefix=f"pyra_test_dfm_{levels}")
    (img,) = server.output_arrays(server.wait(server.queue(prompt), timeout=300))
    assert img.shape == (128, 128, 3) and np.isfinite(img).all()


def test_a_stock_sampler_on_a_dfm_model_is_a_clear_error(server):
    prompt = dfm_convert_sample(prefix="pyra_test_dfm_stock")
    prompt["5"] = {"class_type": "KSampler", "inputs": {
        "model": ["9", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 3,
        "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    entry = server.wait(server.queue(prompt), timeout=120, allow_error=True)
    errors = [m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "PyraDFMSampler" in errors[0]


def test_train_then_sample_then_resume(server):
    """Trains in the server's inference mode on latents the server made; the file loads; resume goes on."""
    entry = server.wait(server.queue(dfm_train_sample(steps=4, name="pyra_e2e_dfm")), timeout=600)
    (report,) = entry["outputs"]["12"]["text"]
    assert "steps 0 -> 4" in report, report
    (img,) = server.output_arrays(entry)
    assert img.shape == (128, 128, 3) and np.isfinite(img).all()
    assert (server.base / "output" / "dfm" / "pyra_e2e_dfm.safetensors").is_file()
    assert (server.base / "output" / "dfm" / "pyra_e2e_dfm.optimizer.pt").is_file()
    entry = server.wait(server.queue(dfm_train_sample(steps=2, resume=True, name="pyra_e2e_dfm",
                                                      prefix="pyra_e2e_dfm_resumed")), timeout=600)
    (report,) = entry["outputs"]["12"]["text"]
    assert "steps 4 -> 6" in report, report
    loaded = dfm_convert_sample(prefix="pyra_e2e_dfm_loaded")
    loaded["9"] = {"class_type": "PyraDFMLoader", "inputs": {"model": ["1", 0], "dfm_name": "pyra_e2e_dfm.safetensors"}}
    (img,) = server.output_arrays(server.wait(server.queue(loaded), timeout=300))
    assert img.shape == (128, 128, 3) and np.isfinite(img).all()
