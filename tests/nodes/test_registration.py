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
    listed = {cls.define_schema().node_id for cls in comfy_host.module("nodes").NODES}
    assert listed == set(pyra_nodes)


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
