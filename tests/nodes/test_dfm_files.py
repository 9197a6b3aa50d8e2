"""DFM files that do not fit: each refusal names the file and the tensor, never a server path (issue 16).

Before: damaged metadata gave raw JSON or int errors, a wrong-shape file of the same family was called "made for
another base model" with the absolute path, a NaN checkpoint sampled black images, a core LoRA of the wrong shape
was skipped with a log line, and PyraDFMSave replaced an existing file without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="module")
def sd3(comfy_host):
    demo = comfy_host.module("host.demo_models")
    patcher = demo.build_tiny_model("sd3")
    demo.init_random_(patcher.model.diffusion_model, 0, std=0.05)
    return comfy_host, patcher


def saved(comfy_host, patcher, path, lora: bool = False):
    """A 2-level DFM file of `patcher` (with a rank-2 core LoRA on one layer), and its tensors and metadata."""
    from safetensors import safe_open

    dfm_model = comfy_host.module("host.dfm")
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    tensors = None
    if lora:
        key = "diffusion_model.joint_blocks.0.x_block.attn.qkv"
        out_f, in_f = patcher.model.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight.shape
        tensors = {f"{key}.lora_up.weight": torch.zeros(out_f, 2), f"{key}.lora_down.weight": torch.randn(2, in_f)}
    dfm_model.save(dfm, path, tensors)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def refusal(comfy_host, patcher, path) -> str:
    with pytest.raises(Exception) as err:
        comfy_host.module("host.dfm").load(patcher, path)
    text = str(err.value)
    assert str(path.parent) not in text, text  # the file's name only
    return text


def test_damaged_metadata_is_named(sd3, tmp_path):
    comfy_host, patcher = sd3
    path = tmp_path / "meta.safetensors"
    tensors, _ = saved(comfy_host, patcher, path)
    for damaged in ("{not json", json.dumps({"format": "pyra-dfm/1", "levels": "two"})):
        save_file(tensors, str(path), metadata={"pyra_dfm": damaged})
        assert "meta.safetensors: its 'pyra_dfm' metadata is damaged" in refusal(comfy_host, patcher, path)


def test_a_non_finite_tensor_is_refused_with_its_name(sd3, tmp_path):
    comfy_host, patcher = sd3
    path = tmp_path / "nan.safetensors"
    tensors, meta = saved(comfy_host, patcher, path)
    key = next(k for k in tensors if k.startswith("dfm.") and tensors[k].numel() > 1)
    tensors[key][0] = float("nan")
    save_file(tensors, str(path), metadata=meta)
    assert f"nan.safetensors: tensor {key} holds 1 non-finite values" in refusal(comfy_host, patcher, path)


def test_a_tensor_of_another_size_is_named_with_both_shapes(sd3, tmp_path):
    comfy_host, patcher = sd3
    path = tmp_path / "shape.safetensors"
    tensors, meta = saved(comfy_host, patcher, path)
    key = next(k for k in tensors if k.startswith("dfm.") and tensors[k].ndim == 2)
    want = tuple(tensors[key].shape)
    tensors[key] = torch.zeros(want[0] + 1, want[1])
    save_file(tensors, str(path), metadata=meta)
    text = refusal(comfy_host, patcher, path)
    assert f"tensor {key} has shape {(want[0] + 1, want[1])}, this mmdit model needs {want}" in text


def test_a_file_of_another_family_says_which(sd3, tmp_path):
    comfy_host, patcher = sd3
    demo = comfy_host.module("host.demo_models")
    path = tmp_path / "family.safetensors"
    saved(comfy_host, patcher, path)
    flux = demo.build_tiny_model("flux")
    assert "made for a mmdit model, this is a flux model" in refusal(comfy_host, flux, path)


def test_a_core_lora_of_the_wrong_shape_is_refused(sd3, tmp_path):
    comfy_host, patcher = sd3
    path = tmp_path / "lora.safetensors"
    tensors, meta = saved(comfy_host, patcher, path, lora=True)
    comfy_host.module("host.dfm").load(patcher, path)  # the fitting LoRA loads
    key = next(k for k in tensors if k.endswith(".lora_down.weight"))
    tensors[key] = torch.randn(2, tensors[key].shape[1] + 3)
    save_file(tensors, str(path), metadata=meta)
    assert "core LoRA diffusion_model.joint_blocks.0.x_block.attn.qkv is" in refusal(comfy_host, patcher, path)


def test_save_refuses_an_existing_file_unless_overwrite(sd3):
    import folder_paths

    comfy_host, patcher = sd3
    dfm = comfy_host.node("PyraDFMConvert").execute(patcher, 2).result[0]
    node = comfy_host.node("PyraDFMSave")
    node.execute(dfm, "t-save-guard")
    path = comfy_host.module("host.dfm").output_file("t-save-guard")
    assert path.is_file() and path.parent == Path(folder_paths.get_output_directory()) / "dfm"
    stamp = path.stat().st_mtime_ns
    with pytest.raises(Exception, match=r"dfm/t-save-guard\.safetensors exists already: choose another filename"):
        node.execute(dfm, "t-save-guard")
    assert path.stat().st_mtime_ns == stamp
    node.execute(dfm, "t-save-guard", True)
    assert path.stat().st_mtime_ns != stamp
    with pytest.raises(Exception, match="not a plain file name"):
        node.execute(dfm, "../t-save-escape")
