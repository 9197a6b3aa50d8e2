"""Every shipped workflow loads in the host's real frontend: no missing node types, no errors.

The server here also lists the real model files of the 2026 families' workflows (tools/family_workflows.py) as
empty placeholders: a user with the weights opens them without missing-model errors. Without the placeholders
the frontend marks those loaders as errored, which the last test shows."""

from __future__ import annotations

from pathlib import Path

import family_workflows
import pytest
from frontend import frontend_page, load_workflow, read_workflow

pytestmark = [pytest.mark.browser, pytest.mark.server]

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
SCREENSHOTS = REPO / "out" / "browser"
TARGET_HOST = "0.33.0"  # the 2026 families' workflows are written for it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from harness import ComfyServer

    yaml = family_workflows.placeholder_models(tmp_path_factory.mktemp("placeholders"))
    srv = ComfyServer.start(preview="latent2rgb", extra_args=("--extra-model-paths-config", yaml))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server):
    with frontend_page(server.url) as page:
        yield page


def test_there_are_workflows():
    assert WORKFLOWS, "workflows/ ships no workflow"


@pytest.fixture(scope="module")
def host_version(server):
    return server.get("/system_stats")["system"]["comfyui_version"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_in_frontend(page, host_version, path):
    workflow = read_workflow(path)
    report = load_workflow(page, workflow, path.name, screenshot=SCREENSHOTS / f"{path.stem}.png")
    if report.missing_types and path.stem in family_workflows.FAMILY_SPECS and host_version != TARGET_HOST:
        pytest.skip(f"ComfyUI {host_version} lacks this family: no {', '.join(report.missing_types)}")
    assert not report.missing_types, f"missing node types: {report.missing_types}"
    assert not report.errored_nodes, f"nodes with errors: {report.errored_nodes}"
    assert not report.alerts, f"the frontend raised alerts: {report.alerts}"
    assert not report.console_errors, f"console errors: {report.console_errors}"
    assert report.node_count == len(workflow["nodes"])


def test_invalid_workflow_is_detected(page):
    """The checks above can fail: a schema-invalid workflow raises an alert."""
    broken = read_workflow(WORKFLOWS[0])
    broken["nodes"][0]["outputs"][0]["slot_index"] = None
    report = load_workflow(page, broken, "broken.json")
    assert report.alerts and not report.ok


def test_missing_node_type_is_detected(page):
    """The check above can fail: a workflow naming a node type nobody registered is reported."""
    bogus = {"last_node_id": 1, "last_link_id": 0, "version": 0.4, "links": [], "groups": [], "config": {},
             "extra": {}, "nodes": [{"id": 1, "type": "PyraNoSuchNode", "pos": [0, 0], "size": [200, 80],
                                     "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
                                     "properties": {}, "widgets_values": []}]}
    report = load_workflow(page, bogus, "bogus.json")
    assert report.missing_types == ["PyraNoSuchNode"]


def test_real_file_names_need_the_files(page, host_version):
    """The placeholders matter: a loader naming a file the host does not list is marked as errored."""
    if host_version != TARGET_HOST:
        pytest.skip(f"the frontend of ComfyUI {host_version} does not mark missing model files")
    workflow = read_workflow(REPO / "workflows" / "pyra-chroma.json")
    for node in workflow["nodes"]:
        if node["type"] == "UNETLoader":
            node["widgets_values"][0] = "pyra-no-such-model.safetensors"
    report = load_workflow(page, workflow, "pyra-chroma-missing.json")
    assert any(n.endswith(":UNETLoader") for n in report.errored_nodes), report
