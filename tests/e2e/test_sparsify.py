"""PyraSparsify through the real server on the demo SD1.5 model: alone, after a stock LoRA, and its report."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image
from prompts import sparsified
from safetensors.torch import save_file
from sparse_helpers import kohya_lora

pytestmark = pytest.mark.server
LORA = "pyra-test-sparse-lora.safetensors"


def image(server, prompt) -> np.ndarray:
    entry = server.wait(server.queue(prompt), timeout=300)
    (path,) = server.output_images(entry)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255


def report(server, prompt) -> str:
    entry = server.wait(server.queue(prompt), timeout=300)
    return "".join(entry["outputs"]["11"]["text"])


@pytest.fixture(scope="module")
def lora(server):
    from host import comfyui_dir

    path = comfyui_dir() / "models" / "diffusion_models" / "pyra-demo-sd15.safetensors"
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2}
    folder = server.base / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(kohya_lora(shapes, scale=0.3, suffix="attn1.to_out.0.weight"), str(folder / LORA))
    return LORA


def test_sparsify_runs_and_reports(server):
    dense = image(server, sparsified(sparse=False, prefix="pyra_test_dense"))
    sparse = image(server, sparsified())
    assert sparse.shape == dense.shape == (64, 64, 3) and np.isfinite(sparse).all()
    assert np.abs(sparse - dense).mean() > 1e-4, "sparsifying must change the image"
    text = report(server, sparsified(prefix="pyra_test_sparse_report"))
    assert "sparsified" in text and "reference path" in text and "attn1.to_q" in text


def test_sparsify_after_a_stock_lora(server, lora):
    plain = image(server, sparsified(prefix="pyra_test_sparse_plain"))
    with_lora = image(server, sparsified(lora=lora, prefix="pyra_test_sparse_lora"))
    assert np.isfinite(with_lora).all() and np.abs(with_lora - plain).mean() > 1e-4, "the LoRA must apply"


def test_wanda_calibrates_on_the_prompt(server):
    dense = image(server, sparsified(sparse=False, steps=3, prefix="pyra_test_dense3"))
    wanda = image(server, sparsified(score="wanda", steps=3, prefix="pyra_test_wanda"))
    assert np.isfinite(wanda).all() and np.abs(wanda - dense).mean() > 1e-4, "steps after calibration are sparse"

