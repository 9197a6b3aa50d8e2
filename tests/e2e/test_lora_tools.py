"""LoRA extraction through the real server: PyraExtractLoRA writes output/loras/, the stock loader samples with it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from prompts import demo_model, demo_with_lora, lora_extract

pytestmark = pytest.mark.server


def image(server, entry) -> np.ndarray:
    (path,) = server.output_images(entry)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255


def test_extract_then_sample_with_the_stock_loader(server):
    entry = server.wait(server.queue(lora_extract()), timeout=600)
    (report,) = entry["outputs"]["3"]["text"]
    match = re.search(r"saved loras/(\S+\.safetensors) \(([\d.]+) MB", report)
    assert match, report
    assert float(match.group(2)) <= 2.0  # the size_mb budget holds for the whole file
    assert (server.base / "output" / "loras" / match.group(1)).is_file()
    with_lora = image(server, server.wait(server.queue(demo_with_lora(match.group(1), prefix="pyra_e2e_lora")),
                                          timeout=300))
    plain = image(server, server.wait(server.queue(demo_model("sd15", prefix="pyra_e2e_plain")), timeout=300))
    assert with_lora.shape == plain.shape and np.isfinite(with_lora).all()
    assert np.abs(with_lora - plain).max() > 0, "the extracted LoRA did not change the output"

