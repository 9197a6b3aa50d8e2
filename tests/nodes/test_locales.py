"""locales/<lang>/nodeDefs.json: every node translated, and no key that the node's schema does not have (a
renamed input would otherwise keep a stale label)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LOCALES = sorted((Path(__file__).resolve().parents[2] / "locales").glob("*/nodeDefs.json"))


@pytest.mark.parametrize("path", LOCALES, ids=[p.parent.name for p in LOCALES])
def test_every_node_and_only_real_inputs_are_translated(comfy_host, path):
    classes, _ = comfy_host.module("nodes").load_capabilities()
    schemas = {s.node_id: s for s in (c.define_schema() for c in classes)}
    defs = json.loads(path.read_text(encoding="utf-8"))
    assert set(defs) == set(schemas), set(defs) ^ set(schemas)
    for node, entry in defs.items():
        assert entry["display_name"] and entry["description"], node
        assert set(entry.get("inputs", {})) <= {i.id for i in schemas[node].inputs}, node
        assert all(0 <= int(k) < len(schemas[node].outputs) for k in entry.get("outputs", {})), node
