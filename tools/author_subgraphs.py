"""Author the subgraph blueprints in subgraphs/ from API-style specs and the host's own node schemas.

    $(python3 tools/host.py python) tools/author_subgraphs.py            # write subgraphs/*.json
    $(python3 tools/host.py python) tools/author_subgraphs.py --check    # exit 1 if a file is stale

Every host of the matrix serves `custom_nodes/<pack>/subgraphs/*.json` at `GET /global_subgraphs` (ids) and
`GET /global_subgraphs/{id}` (the file's text as `data`), from app/subgraph_manager.py; the frontend lists each
file as the node "SubgraphBlueprint.<file stem>" under "Subgraph Blueprints". A blueprint file is a UI workflow
whose root graph holds exactly one node, an instance of the one subgraph in `definitions.subgraphs` (the
frontend refuses anything else). Its inputs link from the subgraph's input node (id -10) to the inner nodes'
sockets and widgets (a widget input linked this way is promoted onto the blueprint node); its outputs link to
the output node (id -20). The node library shows `extra.BlueprintDescription` (frontends 1.32-1.49) or the
subgraph's `description` (1.49), and 1.49 files it under "Subgraph Blueprints/<the subgraph's category>".

Each spec below is the inner graph as an API prompt (as tools/author_workflows.py writes them), where `In(name)`
marks an input of the blueprint and `In(name, value)` a promoted widget with its default. The inner nodes are
laid out from the host's `/object_info` (socket inputs first, then widgets in input order, a
control_after_generate value after a seed, as the frontend serializes them), with deterministic ids, so the
files depend only on the specs and the node schemas; `--check` regenerates and compares. Unknown input names,
missing widget values and out-of-range values are errors, so a spec cannot drift from the schemas unnoticed.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import REPO

SUBGRAPHS = REPO / "subgraphs"
CATEGORY = "Pyra"  # the frontend (1.49) lists it as "Subgraph Blueprints/Pyra"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
INPUT_NODE, OUTPUT_NODE = -10, -20
_NS = uuid.UUID("6d7c9a52-3f0e-4a5e-9a43-5079726131f7")  # uuid5 namespace of Pyra's blueprint ids


@dataclass(frozen=True)
class In:
    """An input of the blueprint; with a value, a promoted widget whose default that is."""

    name: str
    value: object = None


@dataclass(frozen=True)
class Blueprint:
    name: str  # the file stem, which the frontend shows as the node's name
    description: str
    inputs: tuple[str, ...]  # the blueprint's inputs in order; each is an In(...) of the prompt
    outputs: tuple[tuple[str, str, int], ...]  # (name, inner node, output slot)
    prompt: dict = field(default_factory=dict)


def pyramid_text_to_image() -> Blueprint:
    """Text to image with pyramid sampling: PyraPyramidGuider around CFGGuider in SamplerCustomAdvanced."""
    return Blueprint(
        name="Pyra Pyramid Text to Image",
        description=("Text to image with pyramid sampling: the early, high-noise steps run at 1/2 resolution "
                     "(ladder), then the state is lifted exactly to full size. Connect a model, its prompts and "
                     "its VAE; any family (SD1.5, SDXL, SD3, Flux)."),
        inputs=("model", "positive", "negative", "vae", "width", "height", "seed", "steps", "cfg", "ladder"),
        outputs=(("IMAGE", "8", 0), ("LATENT", "7", 0)),
        prompt={
            "1": {"class_type": "EmptyLatentImage", "inputs": {
                "width": In("width", 1024), "height": In("height", 1024), "batch_size": 1}},
            "2": {"class_type": "CFGGuider", "inputs": {
                "model": In("model"), "positive": In("positive"), "negative": In("negative"), "cfg": In("cfg", 5.0)}},
            "3": {"class_type": "PyraPyramidGuider", "inputs": {
                "guider": ["2", 0], "ladder": In("ladder", "2:0.4"), "upsample": "bicubic", "cuda_graphs": True}},
            "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": In("seed", 0)}},
            "5": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "6": {"class_type": "BasicScheduler", "inputs": {
                "model": In("model"), "scheduler": "simple", "steps": In("steps", 20), "denoise": 1.0}},
            "7": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["4", 0], "guider": ["3", 0], "sampler": ["5", 0], "sigmas": ["6", 0],
                "latent_image": ["1", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": In("vae")}},
        },
    )


def two_stage_highres() -> Blueprint:
    """A base image with KSampler, then a structure-guided PyraDiffuseHigh stage (2x), decoded."""
    return Blueprint(
        name="Pyra Two-Stage High Resolution",
        description=("Two-stage high resolution (DiffuseHigh): a base image at width x height, then each stage of "
                     "scales upscales, re-noises and denoises it while the first steps keep the base's low "
                     "wavelet band, so the composition stays and the model adds detail. Connect a model, its "
                     "prompts and its VAE."),
        inputs=("model", "positive", "negative", "vae", "width", "height", "seed", "steps", "cfg", "scales",
                "highres_steps", "highres_denoise", "highres_cfg"),
        outputs=(("IMAGE", "4", 0), ("LATENT", "3", 0), ("base_image", "5", 0)),
        prompt={
            "1": {"class_type": "EmptyLatentImage", "inputs": {
                "width": In("width", 1024), "height": In("height", 1024), "batch_size": 1}},
            "2": {"class_type": "KSampler", "inputs": {
                "model": In("model"), "positive": In("positive"), "negative": In("negative"),
                "latent_image": ["1", 0], "seed": In("seed", 0), "steps": In("steps", 25), "cfg": In("cfg", 7.0),
                "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0}},
            "3": {"class_type": "PyraDiffuseHigh", "inputs": {
                "model": In("model"), "positive": In("positive"), "negative": In("negative"), "latent": ["2", 0],
                "vae": In("vae"), "seed": 1, "scales": In("scales", "2"), "steps": In("highres_steps", 15),
                "denoise": In("highres_denoise", 0.3), "cfg": In("highres_cfg", "7.0"), "sampler_name": "euler",
                "scheduler": "normal", "guidance_steps": 5, "guidance_mode": "latent", "wavelet": "db4",
                "guidance_strength": 1.0, "sharpen": 1.0, "renoise": 1.0, "upscale_method": "latent"}},
            "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": In("vae")}},
            "5": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": In("vae")}},
        },
    )


SPECS = (pyramid_text_to_image, two_stage_highres)


class SpecError(ValueError):
    """A spec that does not fit the host's node schemas."""


def _schema_inputs(info: dict) -> list[tuple[str, str, dict, bool]]:
    """(name, type, options, optional) of a node's inputs in the host's input order."""
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(spec[0], list):
                opts = {**opts, "options": spec[0]}
            out.append((name, kind, opts, section == "optional"))
    return out


def _check_value(where: str, kind: str, opts: dict, value) -> None:
    if kind == "COMBO":
        if value not in opts.get("options", []):
            raise SpecError(f"{where}: {value!r} is not one of the host's options")
    elif kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
            raise SpecError(f"{where}: {value!r} is not an {kind}")
        if not opts.get("min", value) <= value <= opts.get("max", value):
            raise SpecError(f"{where}: {value!r} is outside [{opts.get('min')}, {opts.get('max')}]")
    elif kind == "STRING" and not isinstance(value, str):
        raise SpecError(f"{where}: {value!r} is not a STRING")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        raise SpecError(f"{where}: {value!r} is not a BOOLEAN")


def _depths(prompt: dict) -> dict[str, int]:
    """Column of each inner node: the longest chain of inner links that feeds it."""
    memo: dict[str, int] = {}

    def depth(nid: str) -> int:
        if nid not in memo:
            ups = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list)]
            memo[nid] = 1 + max((depth(u) for u in ups), default=-1)
        return memo[nid]

    for nid in prompt:
        depth(nid)
    return memo


def build(bp: Blueprint, object_info: dict) -> dict:
    """The blueprint file's JSON for one spec, laid out from the host's node schemas."""
    sg_id = str(uuid.uuid5(_NS, bp.name))
    ids = {nid: int(nid) for nid in bp.prompt}
    links: list[dict] = []
    in_links: dict[str, list[int]] = {name: [] for name in bp.inputs}
    in_types: dict[str, tuple[str, bool]] = {}
    out_links: dict[tuple[str, int], list[int]] = {}
    nodes = []

    def link(origin: int, oslot: int, target: int, tslot: int, kind: str) -> int:
        links.append({"id": len(links) + 1, "origin_id": origin, "origin_slot": oslot, "target_id": target,
                      "target_slot": tslot, "type": kind})
        return len(links)

    depths = _depths(bp.prompt)
    order = sorted(bp.prompt, key=lambda n: (depths[n], ids[n]))
    column_y: dict[int, float] = {}
    for position, nid in enumerate(order):
        spec = bp.prompt[nid]
        info = object_info.get(spec["class_type"])
        if info is None:
            raise SpecError(f"{bp.name}: node {nid}: the host has no node {spec['class_type']}")
        schema = _schema_inputs(info)
        unknown = set(spec["inputs"]) - {s[0] for s in schema}
        if unknown:
            raise SpecError(f"{bp.name}: node {nid} ({spec['class_type']}): no inputs {sorted(unknown)} on the host")
        sockets, widgets, values = [], [], []
        for name, kind, opts, optional in schema:
            value = spec["inputs"].get(name)
            where = f"{bp.name}: node {nid} ({spec['class_type']}).{name}"
            entry = {"localized_name": name, "name": name, "type": kind}
            is_widget = kind in WIDGET_TYPES and not opts.get("forceInput")
            if kind.startswith("COMFY_"):
                raise SpecError(f"{where}: input type {kind} is not handled by this tool")
            if is_widget:
                entry["widget"] = {"name": name}
                default = value.value if isinstance(value, In) else value
                if default is None:
                    if not optional or "default" not in opts:
                        raise SpecError(f"{where}: the spec gives no value for this widget")
                    default = opts["default"]
                _check_value(where, kind, opts, default)
                values.append(default)
                if opts.get("control_after_generate"):
                    values.append("fixed")
                widgets.append(entry)
            else:
                if optional:
                    entry["shape"] = 7
                sockets.append(entry)
                if value is None and not optional:
                    raise SpecError(f"{where}: required input is not connected")
            if isinstance(value, In):
                if value.name not in in_links:
                    raise SpecError(f"{where}: In({value.name!r}) is not among the blueprint's inputs")
                seen = in_types.setdefault(value.name, (kind, is_widget))
                if seen != (kind, is_widget):
                    raise SpecError(f"{where}: In({value.name!r}) feeds both {seen[0]} and {kind}")
                entry["_in"] = value.name
            elif isinstance(value, list):
                entry["_from"] = value
        inputs = sockets + widgets
        for slot, entry in enumerate(inputs):
            if "_in" in entry:
                name = entry.pop("_in")
                entry["link"] = link(INPUT_NODE, bp.inputs.index(name), ids[nid], slot, entry["type"])
                in_links[name].append(entry["link"])
            elif "_from" in entry:
                src, oslot = entry.pop("_from")
                kind = object_info[bp.prompt[src]["class_type"]]["output"][oslot]
                if kind != entry["type"]:
                    raise SpecError(f"{bp.name}: node {src} output {oslot} is {kind}, node {nid}.{entry['name']} "
                                    f"takes {entry['type']}")
                entry["link"] = link(ids[src], oslot, ids[nid], slot, kind)
                out_links.setdefault((src, oslot), []).append(entry["link"])
        col = depths[nid]
        rows = max(len(sockets), len(info["output"])) + len(values)
        size = [320 if len(values) > 6 else 270, 46 + 24 * rows]
        pos = [60 + 360 * col, column_y.get(col, 60)]
        column_y[col] = pos[1] + size[1] + 60
        node = {"id": ids[nid], "type": spec["class_type"], "pos": pos, "size": size, "flags": {},
                "order": position, "mode": 0, "inputs": inputs, "outputs": [],
                "properties": {"Node name for S&R": spec["class_type"]}}
        if values:
            node["widgets_values"] = values
        nodes.append((nid, node, info))
    missing = [name for name, lk in in_links.items() if not lk]
    if missing:
        raise SpecError(f"{bp.name}: inputs {missing} feed no inner node")
    out_ports = []
    for index, (name, src, oslot) in enumerate(bp.outputs):
        kind = object_info[bp.prompt[src]["class_type"]]["output"][oslot]
        lk = link(ids[src], oslot, OUTPUT_NODE, index, kind)
        out_links.setdefault((src, oslot), []).append(lk)
        out_ports.append((name, kind, lk))
    for nid, node, info in nodes:
        for oslot, (kind, oname) in enumerate(zip(info["output"], info["output_name"], strict=True)):
            out = {"localized_name": oname, "name": oname, "type": kind}
            if (nid, oslot) in out_links:
                out["links"] = out_links[(nid, oslot)]
            node["outputs"].append(out)

    right = 60 + 360 * (max(depths.values()) + 1)
    port = 20
    sg_inputs = [{"id": str(uuid.uuid5(_NS, f"{bp.name}/input/{name}")), "name": name, "type": in_types[name][0],
                  "linkIds": in_links[name], "localized_name": name, "pos": [-120, 80 + port * i]}
                 for i, name in enumerate(bp.inputs)]
    sg_outputs = [{"id": str(uuid.uuid5(_NS, f"{bp.name}/output/{name}")), "name": name, "type": kind,
                   "linkIds": [lk], "localized_name": name, "pos": [right + 20, 80 + port * i]}
                  for i, (name, kind, lk) in enumerate(out_ports)]
    last_id = max(ids.values())
    subgraph = {
        "id": sg_id, "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": last_id, "lastLinkId": len(links), "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": bp.name,
        "inputNode": {"id": INPUT_NODE, "bounding": [-240, 60, 120, 40 + port * len(bp.inputs)]},
        "outputNode": {"id": OUTPUT_NODE, "bounding": [right, 60, 120, 40 + port * len(bp.outputs)]},
        "inputs": sg_inputs, "outputs": sg_outputs, "widgets": [],
        "nodes": [node for _, node, _ in nodes], "groups": [], "links": links, "extra": {},
        "category": CATEGORY, "description": bp.description,
    }
    root_inputs = []
    for name in bp.inputs:
        kind, is_widget = in_types[name]
        entry = {"localized_name": name, "name": name, "type": kind}
        if is_widget:
            entry["widget"] = {"name": name}
        root_inputs.append(entry)
    root = {"id": last_id + 1, "type": sg_id, "pos": [0, 0], "size": [320, 46 + 24 * len(bp.inputs)], "flags": {},
            "order": 0, "mode": 0, "inputs": root_inputs,
            "outputs": [{"localized_name": name, "name": name, "type": kind} for name, kind, _ in out_ports],
            "properties": {}, "widgets_values": [], "title": bp.name}
    return {"revision": 0, "last_node_id": last_id + 1, "last_link_id": 0, "nodes": [root], "links": [],
            "version": 0.4, "definitions": {"subgraphs": [subgraph]},
            "extra": {"BlueprintDescription": bp.description}}


def render(object_info: dict) -> dict[Path, str]:
    """Every blueprint file's path and text."""
    out = {}
    for make in SPECS:
        bp = make()
        out[SUBGRAPHS / f"{bp.name}.json"] = json.dumps(build(bp, object_info), indent=1) + "\n"
    return out


def check(object_info: dict) -> list[str]:
    """What is stale in subgraphs/: files that differ from the specs, are missing, or belong to no spec."""
    files = render(object_info)
    problems = [f"{p.name}: differs from the spec" if p.is_file() else f"{p.name}: missing"
                for p, text in files.items() if not p.is_file() or p.read_text() != text]
    problems += [f"{p.name}: no spec writes it" for p in sorted(SUBGRAPHS.glob("*")) if p not in files]
    return problems


def host_object_info() -> dict:
    from harness import ComfyServer

    server = ComfyServer.start()
    try:
        return server.get("/object_info")
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare subgraphs/ with the specs; exit 1 if stale")
    args = parser.parse_args(argv)
    object_info = host_object_info()
    if args.check:
        problems = check(object_info)
        for line in problems:
            print(f"stale: {line} (run tools/author_subgraphs.py)")
        return 1 if problems else 0
    SUBGRAPHS.mkdir(exist_ok=True)
    for path, text in render(object_info).items():
        path.write_text(text)
        print(f"{path.relative_to(REPO)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
