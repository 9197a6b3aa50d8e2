"""The blueprints of subgraphs/ in the host's real frontend: listed in its node library (from the host's
/global_subgraphs route), inserted the way the library inserts one, wired to the demo models, converted to an API
prompt by the frontend (which flattens the subgraph) and run on the server."""

from __future__ import annotations

import json
import urllib.error

import author_subgraphs
import pytest
from frontend import APP_READY_TIMEOUT_MS, frontend_page
from prompts import DEMO_FAMILIES

pytestmark = [pytest.mark.browser, pytest.mark.server]

# The frontend's subgraph store (pinia id "subgraph"): `subgraphBlueprints` is the node library's list of
# blueprint node definitions, `getBlueprint(name)` the file that inserting one deserializes (what the library's
# addNodeOnGraph does: canvas._deserializeItems of the root node and the subgraph definitions).
_STORE = """const el = [...document.querySelectorAll('*')].find(e => e.__vue_app__);
    const store = el.__vue_app__.config.globalProperties.$pinia._s.get('subgraph');"""

LISTED_JS = """async () => {
    /*store*/
    return store.subgraphBlueprints.map(d => ({name: d.name, display_name: d.display_name, category: d.category,
        description: d.description, inputs: Object.keys(d.input?.required ?? {}), outputs: d.output_name}));
}""".replace("/*store*/", _STORE)

INSERT_JS = """async ([outer, display, wire, outputs, values]) => {
    /*store*/
    const def = store.subgraphBlueprints.find(d => d.display_name === display);
    if (!def) throw new Error(`the frontend lists no blueprint ${display}`);
    // a workflow name of its own: frontend 1.32 keeps the blueprints as workflows named after them
    await window.app.loadApiJson(outer, 'pyra-blueprint-test');
    const graph = window.app.graph;
    const bp = store.getBlueprint(def.name);
    const added = window.app.canvas._deserializeItems({nodes: bp.nodes, subgraphs: bp.definitions?.subgraphs},
                                                      {position: [900, 100]});
    const node = added.nodes.values().next().value;
    for (const [name, src] of Object.entries(wire)) {
        graph.getNodeById(src).connect(0, node, node.findInputSlot(name));
    }
    for (const [name, dst] of Object.entries(outputs)) {
        node.connect(node.findOutputSlot(name), graph.getNodeById(dst), 0);
    }
    const defaults = Object.fromEntries((node.widgets || []).map(w => [w.name, w.value]));
    for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
    return {defaults, prompt: (await window.app.graphToPrompt()).output};
}""".replace("/*store*/", _STORE)


def _outer(family: str, saves: tuple[str, ...]) -> dict:
    """The demo model, its conditioning and VAE, and a SaveImage per blueprint output (fed by the loader for now:
    the blueprint's outputs are connected over it)."""
    unet, vae, _ = DEMO_FAMILIES[family]
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 1, "scale": 1.0}},
        "3": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 2, "scale": 0.0}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
    }
    for i, prefix in enumerate(saves):
        prompt[str(10 + i)] = {"class_type": "SaveImage", "inputs": {
            "images": ["4", 0], "filename_prefix": f"pyra_test_blueprint_{prefix}"}}
    return prompt


WIRE = {"model": 1, "positive": 2, "negative": 3, "vae": 4}
NAMES = {make.__name__: make().name for make in author_subgraphs.SPECS}


@pytest.fixture(scope="module")
def page(server):
    try:
        server.get("/global_subgraphs")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            pytest.skip("this host has no subgraph route (GET /global_subgraphs, app/subgraph_manager.py)")
        raise
    with frontend_page(server.url) as page:
        yield page


def _spec_defaults(make) -> dict:
    bp = make()
    return {v.name: v.value for node in bp.prompt.values() for v in node["inputs"].values()
            if isinstance(v, author_subgraphs.In) and v.value is not None}


def test_frontend_lists_both_blueprints(page):
    listed = {d["display_name"]: d for d in page.evaluate(LISTED_JS)}
    for make in author_subgraphs.SPECS:
        bp = make()
        assert bp.name in listed, f"the node library lacks {bp.name}: {sorted(listed)}"
        entry = listed[bp.name]
        assert entry["category"].startswith("Subgraph Blueprints")
        assert entry["description"] == bp.description
        assert entry["inputs"] == list(bp.inputs)
        assert entry["outputs"] == [name for name, _, _ in bp.outputs]


def _fresh(page) -> None:
    """A newly loaded frontend for each run: the frontend of 0.33.0 (1.49) carries promoted-widget values over to a
    node of the same id in the next graph loaded in the same page."""
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=APP_READY_TIMEOUT_MS)
    page.wait_for_timeout(1000)


def _run(server, page, make, family, values, saves):
    _fresh(page)
    outputs = {name: 10 + i for i, name in enumerate(saves)}
    result = page.evaluate(INSERT_JS, [_outer(family, tuple(saves)), NAMES[make.__name__], WIRE, outputs, values])
    assert result["defaults"] == _spec_defaults(make), "promoted widgets should show the defaults"
    prompt = result["prompt"]
    inner = {k: v for k, v in prompt.items() if ":" in k}
    assert sorted(v["class_type"] for v in inner.values()) == sorted(
        n["class_type"] for n in make().prompt.values()), json.dumps(prompt)[:2000]
    entry = server.wait(server.queue(prompt), timeout=600)
    return prompt, {name: server.output_arrays({"outputs": {str(n): entry["outputs"][str(n)]}})[0]
                    for name, n in outputs.items()}


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_pyramid_blueprint_runs(server, page, family):
    values = {"width": 128, "height": 96, "steps": 6, "seed": 5}
    prompt, images = _run(server, page, author_subgraphs.pyramid_text_to_image, family, values, ["IMAGE"])
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["EmptyLatentImage"]["width"] == 128 and by_type["RandomNoise"]["noise_seed"] == 5
    assert by_type["PyraPyramidGuider"]["ladder"] == "2:0.4"
    image = images["IMAGE"]
    assert image.shape == (96, 128, 3) and image.std() > 0.01


def test_highres_blueprint_runs(server, page):
    values = {"width": 64, "height": 64, "steps": 4, "highres_steps": 6, "scales": "2"}
    make = author_subgraphs.two_stage_highres
    prompt, images = _run(server, page, make, "sd15", values, ["IMAGE", "base_image"])
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["PyraDiffuseHigh"]["steps"] == 6 and by_type["KSampler"]["steps"] == 4
    assert images["base_image"].shape == (64, 64, 3)
    assert images["IMAGE"].shape == (128, 128, 3) and images["IMAGE"].std() > 0.01
