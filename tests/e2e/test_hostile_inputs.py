"""Hostile and careless inputs through the real server's /prompt, one table (issue 16).

Each row: a prompt, the node (by class) and input it spoils, and what the user must get.
- `REJECTED` rows: the host's 400 before anything runs, with exactly one error for the spoiled node, of the
  host's own kind where the schema says it (`value_bigger_than_max`, `value_not_in_list`, ...) or our
  `custom_validation_failed` with our message. Before issue 16 the `**kwargs` of 11 validators switched the host's
  checks off (100000 steps ran, adapter_type "evil" trained) and repeated each message once per input.
- `REFUSED` rows: checks that read several inputs (or NaN in a number, which passes the host's bounds) run first
  thing in the node: the prompt fails with our message, and nothing is written.
Extend the table whenever a node is added.
"""

from __future__ import annotations

import json
import math

import pytest
from prompts import (
    dfm_convert_sample,
    dfm_train_sample,
    diffusehigh,
    lora_extract,
    pyramid_guider_masked_area,
    pyramid_sampler,
    sparsified,
    step_cache,
    train_adapter,
)

PROBE_LORA = "pyra_hostile_probe.safetensors"
CODE_LORA = "pyra_hostile_code.pt"  # a torch pickle that would run code on an unsafe load
TAKEN_DFM = "pyra_hostile_taken"  # output/dfm/<this>.safetensors exists
SARA_FILE = "pyra_hostile_sara.pt"  # a SaRA checkpoint with a threshold and one value
EMPTY_SARA = "pyra_hostile_empty_sara.pt"  # a threshold and no values


class Payload:
    def __reduce__(self):
        return (print, ("the pickle's code ran",))


def merge_lora(**overrides) -> dict:
    inputs = {"lora_1": PROBE_LORA, "weight_1": 1.0, "merge": "sum", "density": 1.0, "seed": 0, "mode": "energy",
              "value": 0.999, "dtype": "fp16", "filename_prefix": "loras/pyra_hostile_merge"}
    for i in range(2, 5):
        inputs.update({f"lora_{i}": "None", f"weight_{i}": 1.0})
    return {"1": {"class_type": "PyraMergeLoRA", "inputs": {**inputs, **overrides}}}


def resize_lora() -> dict:
    return {"1": {"class_type": "PyraResizeLoRA", "inputs": {
        "lora_name": PROBE_LORA, "mode": "rank", "value": 2.0, "dtype": "fp16",
        "filename_prefix": "loras/pyra_hostile_resize"}}}


def convert_sara() -> dict:
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "pyra-demo-sd15.safetensors",
                                                         "weight_dtype": "default"}},
            "2": {"class_type": "PyraConvertSaRA", "inputs": {"model": ["1", 0], "sara_file": SARA_FILE,
                                                              "dtype": "fp32", "filename_prefix": "loras/pyra_sara"}}}


def dfm_save(filename: str = "pyra_hostile_dfm") -> dict:
    """Loader -> PyraDFMConvert -> PyraDFMSave, nothing else that writes."""
    prompt = dfm_convert_sample()
    return {"1": prompt["1"], "9": prompt["9"],
            "10": {"class_type": "PyraDFMSave", "inputs": {"model": ["9", 0], "filename": filename}}}


def sparse_attention() -> dict:
    prompt = pyramid_sampler("sd3", ladder="2:0.4", steps=4, size=64)
    prompt["20"] = {"class_type": "PyraSparseAttention", "inputs": {
        "model": ["1", 0], "keep_mass": 0.9, "keep_ratio": 0.0, "block_size": "64", "start_percent": 0.2,
        "end_percent": 1.0, "text_tokens": -1, "fastest_dense_backend": True}}
    prompt["5"]["inputs"]["model"] = ["20", 0]
    return prompt


NAN = math.nan
# (id, prompt builder, node class, input, bad value, expected error type, text in the error)
REJECTED = [
    ("steps-over-max", lambda: pyramid_sampler("sd15"), "PyraPyramidSampler", "steps", 100000,
     "value_bigger_than_max", "10000"),
    ("ladder-nan", lambda: pyramid_sampler("sd15"), "PyraPyramidSampler", "ladder", "2:nan",
     "custom_validation_failed", "finite"),
    ("guider-ladder", pyramid_guider_masked_area, "PyraPyramidGuider", "ladder", "3:0.2, 2:0.2",
     "custom_validation_failed", "multiple of the next"),
    ("guider-upsample", pyramid_guider_masked_area, "PyraPyramidGuider", "upsample", "evil",
     "value_not_in_list", "evil"),
    ("scales-nan", lambda: diffusehigh("sd15"), "PyraDiffuseHigh", "scales", "nan",
     "custom_validation_failed", "finite"),
    ("highres-steps-zero", lambda: diffusehigh("sd15"), "PyraDiffuseHigh", "steps", 0,
     "value_smaller_than_min", "min"),
    ("dfm-cfg-over-max", dfm_convert_sample, "PyraDFMSampler", "cfg", 1e9, "value_bigger_than_max", "max"),
    ("dfm-solver", dfm_convert_sample, "PyraDFMSampler", "solver", "evil", "value_not_in_list", "evil"),
    ("cache-start-over-max", lambda: step_cache("sd15"), "PyraStepCache", "start_percent", 1.5,
     "value_bigger_than_max", "max"),
    ("attention-keep-mass", sparse_attention, "PyraSparseAttention", "keep_mass", 2.0,
     "value_bigger_than_max", "max"),
    ("sparsify-layers", lambda: sparsified("sd15"), "PyraSparsify", "layers", "evil", "value_not_in_list", "evil"),
    ("sparsify-rank", lambda: sparsified("sd15"), "PyraSparsify", "lowrank_rank", 10**9,
     "value_bigger_than_max", "max"),
    ("extract-dtype", lora_extract, "PyraExtractLoRA", "dtype", "fp64", "value_not_in_list", "fp64"),
    ("extract-value-nan", lora_extract, "PyraExtractLoRA", "value", NAN, "custom_validation_failed", "finite"),
    ("extract-value-zero", lora_extract, "PyraExtractLoRA", "value", 0.0, "custom_validation_failed", "minimum"),
    ("resize-value-inf", resize_lora, "PyraResizeLoRA", "value", math.inf, "custom_validation_failed", "finite"),
    ("merge-weight-huge", merge_lora, "PyraMergeLoRA", "weight_1", 1e30, "value_bigger_than_max", "max"),
    ("merge-mode", merge_lora, "PyraMergeLoRA", "merge", "evil", "value_not_in_list", "evil"),
    ("train-type", train_adapter, "PyraTrainSparseAdapter", "adapter_type", "evil", "value_not_in_list", "evil"),
    ("train-steps-zero", train_adapter, "PyraTrainSparseAdapter", "steps", 0, "value_smaller_than_min", "min"),
    ("train-batch-zero", train_adapter, "PyraTrainSparseAdapter", "batch_size", 0, "value_smaller_than_min", "min"),
    ("train-reflections-odd", train_adapter, "PyraTrainSparseAdapter", "reflections", 3,
     "custom_validation_failed", "even"),
    ("train-reflections-max", train_adapter, "PyraTrainSparseAdapter", "reflections", 10**6,
     "custom_validation_failed", "maximum"),
]

# (id, prompt builder, node class, overrides, text in the execution error)
REFUSED = [
    ("pyramid-cfg-nan", lambda: pyramid_sampler("sd15"), "PyraPyramidSampler", {"cfg": NAN}, "cfg is nan"),
    ("highres-cfg-nan", lambda: diffusehigh("sd15"), "PyraDiffuseHigh", {"cfg": "nan"}, "not a finite number"),
    ("dfm-cfg-nan", dfm_convert_sample, "PyraDFMSampler", {"cfg": NAN}, "cfg is nan"),
    ("cache-window", lambda: step_cache("sd15"), "PyraStepCache", {"start_percent": 0.9, "end_percent": 0.5},
     "must be below end_percent"),
    ("attention-window", sparse_attention, "PyraSparseAttention", {"start_percent": 0.5, "end_percent": 0.5},
     "must be below end_percent"),
    ("sparsify-regex", lambda: sparsified("sd15"), "PyraSparsify", {"layers": "regex", "name_regex": "("},
     "invalid layer regex"),
    ("extract-rule", lora_extract, "PyraExtractLoRA", {"mode": "energy", "value": 2.0}, "energy must be in"),
    ("merge-weight-nan", merge_lora, "PyraMergeLoRA", {"weight_1": NAN}, "weight_1 is nan"),
    ("train-lr-nan", train_adapter, "PyraTrainSparseAdapter", {"learning_rate": NAN}, "learning_rate is nan"),
    ("lora-pickle-code", resize_lora, "PyraResizeLoRA", {"lora_name": CODE_LORA},
     f"{CODE_LORA} holds Python code or objects besides tensors, so it was not loaded"),
    ("sara-empty", convert_sara, "PyraConvertSaRA", {"sara_file": EMPTY_SARA},
     f"{EMPTY_SARA} holds a threshold but no trained values"),
    ("sara-code", convert_sara, "PyraConvertSaRA", {"sara_file": CODE_LORA}, "holds Python code"),
    ("dfm-save-taken", dfm_save, "PyraDFMSave", {"filename": TAKEN_DFM},
     f"dfm/{TAKEN_DFM}.safetensors exists already: choose another filename, or turn overwrite on"),
    ("dfm-save-folder", dfm_save, "PyraDFMSave", {"filename": "../evil"}, "is not a plain file name"),
    ("dfm-train-hidden", lambda: dfm_train_sample(steps=1), "PyraDFMTrain", {"save_name": ".hidden"},
     "is not a plain file name"),
    *[(f"{name}-prefix-escapes", build, cls, {"filename_prefix": "../../evil", **extra}, "outside the output folder")
      for name, build, cls, extra in (
          ("train", train_adapter, "PyraTrainSparseAdapter", {"steps": 40}),
          ("extract", lora_extract, "PyraExtractLoRA", {}),
          ("resize", resize_lora, "PyraResizeLoRA", {}),
          ("merge", merge_lora, "PyraMergeLoRA", {}),
          ("sara", convert_sara, "PyraConvertSaRA", {}))],
]


@pytest.fixture(scope="module")
def probe_lora(server):
    """A one-module Kohya LoRA in the server's output/loras, so the LoRA nodes' file lists validate."""
    import torch
    from safetensors.torch import save_file

    folder = server.base / "output" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "lora_unet_input_blocks_1_1_proj_in"
    save_file({f"{prefix}.lora_down.weight": torch.randn(4, 32), f"{prefix}.lora_up.weight": torch.randn(32, 4),
               f"{prefix}.alpha": torch.tensor(4.0)}, str(folder / PROBE_LORA))
    torch.save({f"{prefix}.lora_down.weight": Payload()}, folder / CODE_LORA)
    torch.save({"threshold": 2e-3, 0: torch.zeros(1)}, folder / SARA_FILE)
    torch.save({"threshold": 2e-3}, folder / EMPTY_SARA)
    (server.base / "output" / "dfm").mkdir(parents=True, exist_ok=True)
    (server.base / "output" / "dfm" / f"{TAKEN_DFM}.safetensors").write_bytes(b"taken")
    return PROBE_LORA


def host_checks_v3_combos() -> bool:
    """Whether the host's validation checks a V3 Combo's value against its options (0.3.76-dev checks only V1
    list inputs, so a V3 combo takes any value there; Pyra's nodes then refuse it themselves where it matters)."""
    from host import comfyui_dir

    return "Combo.io_type" in (comfyui_dir() / "execution.py").read_text()


def node_id(prompt: dict, class_type: str) -> str:
    (found,) = [k for k, v in prompt.items() if v["class_type"] == class_type]
    return found


@pytest.mark.parametrize(("prompt_of", "class_type", "name", "value", "kind", "text"),
                         [row[1:] for row in REJECTED], ids=[row[0] for row in REJECTED])
def test_the_host_rejects_with_one_message(server, probe_lora, prompt_of, class_type, name, value, kind, text):
    from harness import PromptRejected

    if kind == "value_not_in_list" and not host_checks_v3_combos():
        pytest.skip("this host does not check V3 combo values (0.3.76-dev); see "
                    "test_an_unknown_combo_value_is_refused_on_every_host")
    prompt = prompt_of()
    node = node_id(prompt, class_type)
    prompt[node]["inputs"][name] = value
    with pytest.raises(PromptRejected) as rejected:
        server.queue(prompt)
    assert rejected.value.code == 400, rejected.value.body
    errors = json.loads(rejected.value.body)["node_errors"][node]["errors"]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["type"] == kind, error
    assert text in error["message"] + " " + error["details"], error
    assert error["extra_info"]["input_name"] == name, error


@pytest.mark.parametrize(("prompt_of", "class_type", "overrides", "text"), [row[1:] for row in REFUSED],
                         ids=[row[0] for row in REFUSED])
def test_the_node_refuses_before_any_work(server, probe_lora, prompt_of, class_type, overrides, text):
    prompt = prompt_of()
    node = node_id(prompt, class_type)
    prompt[node]["inputs"].update(overrides)
    before = sorted(p.relative_to(server.base) for p in (server.base / "output").rglob("*") if p.is_file())
    entry = server.wait(server.queue(prompt), timeout=300, allow_error=True)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == node, entry["status"]
    assert text in errors[0]["exception_message"], errors[0]
    after = sorted(p.relative_to(server.base) for p in (server.base / "output").rglob("*") if p.is_file())
    assert after == before, "a refused prompt wrote files"


@pytest.mark.parametrize(("prompt_of", "class_type", "name", "value", "text"), [
    (train_adapter, "PyraTrainSparseAdapter", "adapter_type", "evil", "adapter_type 'evil'"),
    (lora_extract, "PyraExtractLoRA", "dtype", "fp64", "dtype 'fp64' is not one of fp16, bf16, fp32"),
], ids=["train-type", "extract-dtype"])
def test_an_unknown_combo_value_is_refused_on_every_host(server, prompt_of, class_type, name, value, text):
    """Also where the host lets any V3 combo value through (0.3.76-dev): the node refuses it itself, and nothing
    is trained or written."""
    prompt = prompt_of()
    prompt[node_id(prompt, class_type)]["inputs"][name] = value
    before = sorted((server.base / "output").rglob("*.safetensors"))
    if host_checks_v3_combos():
        from harness import PromptRejected

        with pytest.raises(PromptRejected, match="value_not_in_list"):
            server.queue(prompt)
    else:
        entry = server.wait(server.queue(prompt), timeout=300, allow_error=True)
        errors = [m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error"]
        assert errors and text in errors[0], entry["status"]
    assert sorted((server.base / "output").rglob("*.safetensors")) == before
