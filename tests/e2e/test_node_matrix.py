"""Every Pyra node that takes a model, on every kind of demo model, through the real server: one table.

A cell is either RUNS (the prompt succeeds and its images are finite) or a refusal: the node's own message (or
that of the node before it, e.g. PyraDFMConvert before PyraDFMTrain), in the server's execution error, names what
to do. CI runs this module on every host of the matrix, so the table is
(node, model kind, host). The other e2e modules test each node in depth; this one makes a gap visible: a Pyra node
with a MODEL or GUIDER input that is neither in MATRIX nor in ELSEWHERE fails `test_every_model_node_has_a_row`.
"""

from __future__ import annotations

import numpy as np
import pytest
from prompts import (
    DEMO_FAMILIES,
    DEMO_LORA,
    demo_model,
    dfm_convert_sample,
    dfm_train_sample,
    diffusehigh,
    pyramid_guider_masked_area,
    pyramid_sampler,
    searched_sigmas,
    sparsified,
    step_cache,
    train_adapter,
)

pytestmark = pytest.mark.server

RUNS = "runs"


def _between_loader_and_sampler(node: str, **inputs):
    def build(family: str) -> dict:
        prompt = demo_model(family, prefix=f"pyra_test_matrix_{node}_{family}")
        prompt["20"] = {"class_type": node, "inputs": {"model": ["1", 0], **inputs}}
        prompt["5"]["inputs"]["model"] = ["20", 0]
        return prompt
    return build


def _lora_tool(node: str, **inputs):
    """The node on the demo SD1.5 LoRA, with the optional model check against the family's demo model."""
    def build(family: str) -> dict:
        return {
            "1": {"class_type": "UNETLoader",
                  "inputs": {"unet_name": DEMO_FAMILIES[family][0], "weight_dtype": "default"}},
            "2": {"class_type": node, "inputs": {
                **inputs, "mode": "rank", "value": 2.0, "dtype": "fp16", "model": ["1", 0],
                "filename_prefix": f"loras/pyra_test_matrix_{node}_{family}"}},
        }
    return build


def _coarse_previews(family: str) -> dict:
    prompt = pyramid_guider_masked_area(family)
    prompt["18"] = {"class_type": "PyraCoarsePreviewGuider", "inputs": {"guider": ["14", 0], "preview_size": 0}}
    prompt["5"]["inputs"]["guider"] = ["18", 0]
    return prompt


SPARSE_ATTENTION_DIT_ONLY = ("PyraSparseAttention", "LTX-2 and Z-Image (Lumina 2) models, not UNetModel")
DFM_DIT_ONLY = ("PyraDFMConvert", "is not one: load an SD3")
OTHER_KEYS = "LoRA modules match this"  # the SD1.5 LoRA checked against another family's model

# node -> (prompt builder taking a family, {family: RUNS or (the refusing node, a fragment of its message)})
MATRIX = {
    "PyraStepCache": (step_cache, {}),
    "PyraSparseAttention": (_between_loader_and_sampler(
        "PyraSparseAttention", keep_mass=0.9, keep_ratio=0.0, block_size="64", start_percent=0.0, end_percent=1.0,
        text_tokens=-1, fastest_dense_backend=True), {"sd15": SPARSE_ATTENTION_DIT_ONLY}),
    "PyraSparsify": (sparsified, {}),
    "PyraFeatureSlicing": (_between_loader_and_sampler("PyraFeatureSlicing", slice_tokens=64), {}),
    "PyraPyramidSampler": (lambda family: pyramid_sampler(family, steps=4), {}),
    "PyraPyramidGuider": (pyramid_guider_masked_area, {}),
    "PyraCoarsePreviewGuider": (_coarse_previews, {}),
    "PyraDiffuseHigh": (diffusehigh, {}),
    "PyraSearchedSigmas": (searched_sigmas, {}),
    "PyraDFMConvert": (lambda family: dfm_convert_sample(family=family, prefix=f"pyra_test_matrix_dfm_{family}"),
                       {"sd15": DFM_DIT_ONLY}),
    "PyraDFMTrain": (lambda family: dfm_train_sample(steps=2, family=family, name=f"pyra_test_matrix_{family}",
                                                     prefix=f"pyra_test_matrix_dfm_train_{family}"),
                     {"sd15": DFM_DIT_ONLY}),
    "PyraTrainSparseAdapter": (lambda family: train_adapter(family=family, prefix=f"loras/pyra_test_matrix_{family}"),
                               {}),
    "PyraResizeLoRA": (_lora_tool("PyraResizeLoRA", lora_name=DEMO_LORA),
                       {f: ("PyraResizeLoRA", OTHER_KEYS) for f in ("sd3", "wan21")}),
    "PyraMergeLoRA": (_lora_tool("PyraMergeLoRA", lora_1=DEMO_LORA, weight_1=1.0, **{
        k: v for i in (2, 3, 4) for k, v in ((f"lora_{i}", "None"), (f"weight_{i}", 1.0))}, merge="sum",
        density=1.0, seed=0), {f: ("PyraMergeLoRA", OTHER_KEYS) for f in ("sd3", "wan21")}),
}

# Model nodes tested elsewhere, and why not here.
ELSEWHERE = {
    "PyraDFMSampler": "a DFM model only: the PyraDFMConvert and PyraDFMTrain rows sample with it",
    "PyraDFMSave": "a DFM model only: tests/e2e/test_dfm.py",
    "PyraExtractLoRA": "two checkpoints of one family: tests/e2e/test_lora_tools.py (SD1.5)",
    "PyraDFMLoader": "a DFM file: tests/e2e/test_dfm.py (train, save, load and resume on SD3)",
    "PyraConvertSaRA": "a SaRA training checkpoint: in-process only, tests/host/test_sparse_hra_adapters.py (SD1.5)",
}
CELLS = [(node, family) for node in MATRIX for family in DEMO_FAMILIES]


@pytest.mark.parametrize("node, family", CELLS)
def test_node_on_model_kind(server, node, family):
    build, refusals = MATRIX[node]
    expected = refusals.get(family, RUNS)
    entry = server.wait(server.queue(build(family)), timeout=300, allow_error=expected != RUNS)
    if expected == RUNS:
        assert all(np.isfinite(a).all() for a in server.output_arrays(entry))
        return
    refusing, fragment = expected
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, f"{node} on {family}: expected {refusing} to refuse with {fragment!r}, the prompt succeeded"
    assert errors[0]["node_type"] == refusing and fragment in errors[0]["exception_message"], errors[0]


def test_every_model_node_has_a_row(server):
    info = server.get("/object_info")
    takes_model = set()
    for name, spec in info.items():
        if not name.startswith("Pyra"):
            continue
        inputs = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        if any(kind[0] in ("MODEL", "GUIDER") for kind in inputs.values() if isinstance(kind, (list, tuple))):
            takes_model.add(name)
    missing = takes_model - set(MATRIX) - set(ELSEWHERE)
    assert not missing, f"Pyra nodes with a MODEL or GUIDER input but no row in the node matrix: {sorted(missing)}"
