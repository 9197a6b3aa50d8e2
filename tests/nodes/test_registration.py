"""What the host registers from the pack: ids, categories, tooltips, and the README node table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CATEGORIES = ("Pyra/sampling", "Pyra/decoding", "Pyra/adapters", "Pyra/sparse", "Pyra/demo")


@pytest.fixture(scope="module")
def pyra_nodes(comfy_host) -> dict:
    import nodes

    ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("Pyra")}
    assert ours, "no Pyra node registered"
    return ours


def readme_node_ids(text: str) -> set[str]:
    section = text.split("## Nodes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`(Pyra\w+)`\s*\|", section, flags=re.M))


def test_registered_nodes_are_the_packs(comfy_host, pyra_nodes):
    nodes, disabled = comfy_host.module("nodes").load_capabilities()
    assert not disabled, disabled
    assert {cls.define_schema().node_id for cls in nodes} == set(pyra_nodes)


def test_a_capability_the_host_cannot_serve_drops_only_its_nodes(comfy_host):
    """One missing host symbol disables one capability, with one message naming the host version and the cause."""
    pkg = comfy_host.module("nodes")
    table = (("analytic model", "demo", ("PyraAnalyticModel",)),
             ("imaginary", "no_such_module_on_this_host", ("PyraImaginary",)),
             ("step cache", "sparse", ("PyraStepCache",)))
    nodes, disabled = pkg.load_capabilities(table)
    assert [cls.define_schema().node_id for cls in nodes] == ["PyraAnalyticModel", "PyraStepCache"]
    assert len(disabled) == 1
    msg = disabled[0]
    assert "imaginary nodes (PyraImaginary)" in msg and f"ComfyUI {pkg.comfyui_version()}" in msg
    assert "no_such_module_on_this_host" in msg


def test_the_adapter_types_are_registered_with_the_host(comfy_host):
    import comfy.weight_adapter as weight_adapter

    names = [cls.name for cls in weight_adapter.adapters]
    assert names.count("pyra_sparse") == 1 and names.count("pyra_hra") == 1


def test_readme_node_table_matches(pyra_nodes):
    assert readme_node_ids((REPO / "README.md").read_text()) == set(pyra_nodes)


def test_readme_check_can_fail():
    assert readme_node_ids("## Nodes\n| Node |\n|---|\n| `PyraX` | a |\n## Next\n| `PyraY` |") == {"PyraX"}


@pytest.mark.parametrize("field", ["category", "tooltips", "display_name", "description"])
def test_schema_conventions(pyra_nodes, field):
    for node_id, cls in pyra_nodes.items():
        schema = cls.define_schema()
        if field == "category":
            assert schema.category in CATEGORIES, f"{node_id}: category {schema.category}"
        elif field == "tooltips":
            for group in ("required", "optional"):
                for name, spec in cls.INPUT_TYPES().get(group, {}).items():
                    assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        elif field == "display_name":
            assert schema.display_name and "Pyra" in schema.display_name, node_id
        else:
            assert schema.description, f"{node_id} has no description"
