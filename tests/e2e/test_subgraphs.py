"""The subgraph blueprints in subgraphs/: what tools/author_subgraphs.py writes from the host's node schemas, and
what the host serves through its subgraph route (app/subgraph_manager.py: GET /global_subgraphs and
/global_subgraphs/{id}). The frontend side (listed, inserted, converted, run) is tests/browser/test_subgraphs.py."""

from __future__ import annotations

import json
import shutil
import urllib.error

import author_subgraphs
import pytest

pytestmark = pytest.mark.server

BLUEPRINTS = sorted(author_subgraphs.SUBGRAPHS.glob("*.json"))
NAMES = sorted(make().name for make in author_subgraphs.SPECS)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.fixture(scope="module")
def served(server):
    """The host's list of global subgraphs; skips on a host without the route."""
    try:
        return server.get("/global_subgraphs")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            pytest.skip("this host has no subgraph route (GET /global_subgraphs, app/subgraph_manager.py)")
        raise


def test_every_spec_has_its_file():
    assert [p.stem for p in BLUEPRINTS] == NAMES


def test_committed_blueprints_are_what_the_tool_writes(object_info):
    """`tools/author_subgraphs.py --check` against this host's schemas: rerun the tool if this fails."""
    assert author_subgraphs.check(object_info) == []


def test_check_reports_an_edited_blueprint(object_info, tmp_path, monkeypatch):
    """The check above can fail: a hand edit, a missing file and a stray file are each reported."""
    for path in BLUEPRINTS:
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(author_subgraphs, "SUBGRAPHS", tmp_path)
    edited = tmp_path / BLUEPRINTS[0].name
    edited.write_text(edited.read_text().replace('"VAEDecode"', '"VAEDecoder"', 1))
    (tmp_path / BLUEPRINTS[1].name).unlink()
    (tmp_path / "stray.json").write_text("{}")
    assert author_subgraphs.check(object_info) == [
        f"{BLUEPRINTS[0].name}: differs from the spec", f"{BLUEPRINTS[1].name}: missing",
        "stray.json: no spec writes it"]


@pytest.mark.parametrize("change, message", [
    (("3", "upsample", "bicubc"), "not one of the host's options"),
    (("3", "ladders", "2:0.4"), "no inputs"),
    (("6", "steps", 0), "outside"),
    (("1", "batch_size", None), "gives no value"),
])
def test_spec_that_misses_the_schema_is_refused(object_info, change, message):
    """Node ids, input names and widget values are checked against the host's own schemas."""
    bp = author_subgraphs.pyramid_text_to_image()
    node, name, value = change
    if value is None:
        del bp.prompt[node]["inputs"][name]
    else:
        bp.prompt[node]["inputs"][name] = value
    with pytest.raises(author_subgraphs.SpecError, match=message):
        author_subgraphs.build(bp, object_info)


def test_blueprint_shape(object_info):
    """What the frontend requires of a blueprint: one root node, an instance of the one subgraph, its inputs and
    outputs those of the subgraph, every inner link between existing slots of matching type."""
    for path in BLUEPRINTS:
        data = json.loads(path.read_text())
        (root,) = data["nodes"]
        (sg,) = data["definitions"]["subgraphs"]
        assert root["type"] == sg["id"] and sg["name"] == path.stem
        assert [(i["name"], i["type"]) for i in root["inputs"]] == [(i["name"], i["type"]) for i in sg["inputs"]]
        assert [(o["name"], o["type"]) for o in root["outputs"]] == [(o["name"], o["type"]) for o in sg["outputs"]]
        nodes = {n["id"]: n for n in sg["nodes"]}
        for link in sg["links"]:
            if link["origin_id"] == author_subgraphs.INPUT_NODE:
                assert link["id"] in sg["inputs"][link["origin_slot"]]["linkIds"]
            else:
                assert link["id"] in nodes[link["origin_id"]]["outputs"][link["origin_slot"]]["links"]
            if link["target_id"] == author_subgraphs.OUTPUT_NODE:
                assert sg["outputs"][link["target_slot"]]["linkIds"] == [link["id"]]
            else:
                target = nodes[link["target_id"]]["inputs"][link["target_slot"]]
                assert target["link"] == link["id"] and target["type"] == link["type"]
        for node in sg["nodes"]:
            assert node["type"] in object_info


def test_host_lists_both_blueprints(server, served):
    ours = {sid: e for sid, e in served.items() if e["source"] == "custom_node"}
    assert sorted(e["name"] for e in ours.values()) == NAMES
    assert {e["info"]["node_pack"] for e in ours.values()} == {"custom_nodes.pyra"}
    assert all("data" not in e and "path" not in e for e in ours.values()), "the list carries names only"
    for sid, entry in ours.items():
        full = server.get(f"/global_subgraphs/{sid}")
        committed = (author_subgraphs.SUBGRAPHS / f"{entry['name']}.json").read_text()
        assert full["data"] == committed


def test_unknown_blueprint_id_is_null(server, served):
    """The route answers an id it does not know with JSON null (the frontend then reports the blueprint)."""
    assert server.get("/global_subgraphs/" + "0" * 64) is None
