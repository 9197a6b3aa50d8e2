"""The workflows of the 2026 families (tools/family_workflows.py, workflows/pyra-<family>*.json) in the real server.

- The tiny ones run on the demo files (host/family_demo_files.py) and save finite, non-constant images; a host
  without the family (no demo file written, or a node type missing) skips them, saying what it lacks.
- The real-file ones cannot run here (no weights). Their prompts are checked against the host's node schemas, and
  queued in a server that lists the real file names as empty placeholders: the host's own validation accepts them
  and execution stops at a loader, reading an empty file. On hosts older than 0.33.0 that lack a node or an option
  they need, they skip with the problems as the reason.
- The committed workflow files are what the specs describe: the same node types, and the same file names.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import family_workflows as fw
import pytest
from harness import PromptRejected

pytestmark = [pytest.mark.server]

REPO = Path(__file__).resolve().parents[2]
TARGET_HOST = "0.33.0"  # the host the workflows are written for: nothing skips there


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.fixture(scope="module")
def host_version(server):
    return server.get("/system_stats")["system"]["comfyui_version"]


def _missing_on_host(prompt: dict, object_info: dict) -> list[str]:
    """Node types and demo files of a tiny workflow that this host does not have."""
    missing = sorted({n["class_type"] for n in prompt.values() if n["class_type"] not in object_info})
    for node in prompt.values():
        info = object_info.get(node["class_type"])
        for key, value in node["inputs"].items():
            if info is None or key not in fw.MODEL_FOLDERS:
                continue
            spec = info["input"]["required"].get(key) or info["input"].get("optional", {}).get(key)
            options = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])
            if value not in options:
                missing.append(value)
    return missing


@pytest.mark.parametrize("name", fw.TINY)
def test_tiny_workflow_runs(server, object_info, host_version, name):
    prompt = fw.FAMILY_SPECS[name][0]()
    missing = _missing_on_host(prompt, object_info)
    if missing and host_version != TARGET_HOST:
        pytest.skip(f"ComfyUI {host_version} lacks this family: no {', '.join(missing)} (the demo tool writes the "
                    f"files only where the host has the family's classes)")
    assert not missing, f"ComfyUI {host_version}: {missing} (run tools/demo_models.py)"
    entry = server.wait(server.queue(prompt), timeout=600)
    images = server.output_arrays(entry)
    assert images, f"{name} saved no image"
    import numpy as np

    for image in images:
        assert np.isfinite(image).all() and image.std() > 0.01, f"{name}: a blank or broken image"


@pytest.mark.parametrize("name", fw.REAL)
def test_real_workflow_fits_host_schemas(object_info, host_version, name):
    problems = fw.check_prompt(fw.FAMILY_SPECS[name][0](), object_info)
    if problems and host_version != TARGET_HOST:
        pytest.skip(f"ComfyUI {host_version} lacks this family: {'; '.join(problems[:3])}")
    assert problems == []


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["1"]["inputs"].update(unet_nam=p["1"]["inputs"].pop("unet_name")), "unet_nam: no such input"),
    (lambda p: p["4"]["inputs"].update(type="no_such_family"), "'no_such_family' is not one of the host's options"),
    (lambda p: p["9"]["inputs"].update(steps=0), "0 is outside"),
    (lambda p: p["9"]["inputs"].pop("seed"), "required input seed not given"),
    (lambda p: p["9"]["inputs"].update(model=["4", 0]), "gets CLIP from node 4"),
    (lambda p: p.update({"99": {"class_type": "PyraNoSuchNode", "inputs": {}}}), "the host has no node PyraNoSuchNode"),
])
def test_schema_check_can_fail(object_info, host_version, change, expected):
    """check_prompt is not vacuous: each kind of mistake in a real-file prompt is reported."""
    if fw.check_prompt(fw.chroma_real(), object_info):
        pytest.skip(f"ComfyUI {host_version} lacks Chroma")
    prompt = fw.chroma_real()
    change(prompt)
    assert any(expected in p for p in fw.check_prompt(prompt, object_info))


@pytest.fixture(scope="module")
def placeholder_server(tmp_path_factory):
    from harness import ComfyServer

    yaml = fw.placeholder_models(tmp_path_factory.mktemp("placeholders"))
    srv = ComfyServer.start(extra_args=("--extra-model-paths-config", yaml))
    yield srv
    srv.stop()


LOADERS = {"UNETLoader", "CLIPLoader", "DualCLIPLoader", "VAELoader", "CheckpointLoaderSimple",
           "LTXAVTextEncoderLoader"}


@pytest.mark.parametrize("name", fw.REAL)
def test_real_workflow_passes_host_validation(placeholder_server, host_version, name):
    """The host's own prompt validation accepts the real-file workflow when the files are listed; the run then
    stops at a loader (the placeholders are empty), never at a node after it."""
    prompt = fw.FAMILY_SPECS[name][0]()
    try:
        entry = placeholder_server.wait(placeholder_server.queue(prompt), timeout=120, allow_error=True)
    except PromptRejected as err:
        if host_version != TARGET_HOST:
            pytest.skip(f"ComfyUI {host_version} lacks this family: {str(err)[:300]}")
        raise
    status = entry["status"]
    errors = [m[1] for m in status["messages"] if m[0] == "execution_error"]
    assert status["status_str"] == "error" and errors, "an empty placeholder file loaded"
    assert errors[0]["node_type"] in LOADERS, errors[0]


def _committed(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", list(fw.FAMILY_SPECS))
def test_committed_workflow_is_the_spec(name):
    """workflows/<name>.json holds the nodes of its spec and its model file names (re-author it if not)."""
    prompt = fw.FAMILY_SPECS[name][0]()
    workflow = _committed(name)
    assert Counter(n["type"] for n in workflow["nodes"]) == Counter(n["class_type"] for n in prompt.values())
    widget_strings = {v for n in workflow["nodes"] for v in n.get("widgets_values") or [] if isinstance(v, str)}
    files = {v for n in prompt.values() for k, v in n["inputs"].items() if k in fw.MODEL_FOLDERS}
    assert files <= widget_strings, f"file names not in {name}.json: {sorted(files - widget_strings)}"


def test_committed_check_can_fail(monkeypatch):
    """The check above can fail: a spec with another file name, or one node more, than the committed file."""
    def renamed():
        prompt = fw.flux2_real()
        prompt["1"]["inputs"]["unet_name"] = "flux2_dev_other.safetensors"
        return prompt

    def grown():
        return {**fw.flux2_real(), "99": {"class_type": "PreviewAny", "inputs": {"source": ["16", 0]}}}

    for make in (renamed, grown):
        monkeypatch.setitem(fw.FAMILY_SPECS, "pyra-flux2-dev", (make, None))
        with pytest.raises(AssertionError):
            test_committed_workflow_is_the_spec("pyra-flux2-dev")
