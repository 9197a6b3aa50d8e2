"""Write the node help pages the frontend shows in its node-help panel: web/docs/<NodeId>.md.

    $(python3 tools/host.py python) tools/node_docs.py           # write them
    $(python3 tools/host.py python) tools/node_docs.py --check   # exit 1 if a page is missing or stale

The frontend (1.2x+) fetches /extensions/<pack folder>/docs/<NodeId>.md, and the host serves the pack's
WEB_DIRECTORY (`web/`) there. Each page is built from what cannot drift apart: the README's node table (what the
node does), the node's own schema (every input with its type, default, range, options and tooltip; the outputs)
and, for the nodes with a measured claim, the figures and the result files under benchmarks/results/ that hold
them (FIGURES below, the same numbers as the README's tables).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "web" / "docs"
sys.path.insert(0, str(REPO / "benchmarks"))

FIGURES = {  # node id -> measured figures, each with its result file (H200 unless it says otherwise)
    "PyraPyramidSampler": [
        "Flux-size DiT with random weights at 2048x2048, ladder `4:0.35, 2:0.25`: 2.10x faster than direct "
        "sampling on ComfyUI 0.33.0 (`benchmarks/results/progressive-h200-comfy0330.json`).",
    ],
    "PyraPyramidGuider": [
        "The same sampling as PyraPyramidSampler: 2.10x on a random-weight Flux-size DiT at 2048x2048 "
        "(`benchmarks/results/progressive-h200-comfy0330.json`).",
    ],
    "PyraExactVAEDecode": [
        "Real-size SDXL VAE with random weights at 2048x2048, 16-row bands: 0.21x the peak memory of the full "
        "decode at 1.13x its time, and the same pixels within bf16 rounding "
        "(`benchmarks/results/decode-h200-comfy0330.md`).",
    ],
    "PyraSparsify": [
        "Flux-size DiT with random weights at 1024x1024 on ComfyUI 0.33.0 (dynamic VRAM): one sampling step 1.13x"
        " faster than dense, device memory 0.84 of the dense model's "
        "(`benchmarks/results/sparse24-h200-comfy0330.md`).",
    ],
    "PyraStepCache": [
        "Real-size SDXL UNet with random weights: 2.06x at the host EasyCache's deviation, where EasyCache gives "
        "1.59x (`benchmarks/results/step-cache-sdxl-h200-comfy0330.json`).",
    ],
    "PyraSparseAttention": [
        "Attention alone against cuDNN, 24 heads, synthetic structured q/k, ComfyUI 0.33.0's device: 32,760 "
        "tokens 3.37x at 80% block sparsity and 5.56x at 90% "
        "(`benchmarks/results/sparse-attention-h200-comfy0330-partial.log`); 75,600 tokens 3.58x and 7.04x "
        "(`benchmarks/results/sparse-attention-h200-comfy0330-75k.md`).",
    ],
    "PyraTrainSparseAdapter": [
        "Its memory estimate against the measured peak at the schema's maxima on the demo SD1.5 (CPU): 1.01x for "
        "sparse, 0.61x for householder (`benchmarks/results/train-memory-cpu.md`).",
    ],
    "PyraDFMTrain": [
        "Flux-size model with random weights at 1024x1024, 2 levels, rank-16 core LoRA, gradient checkpointing: "
        "0.81 s a step at 26.3 GiB peak on ComfyUI 0.33.0 (`benchmarks/results/dfm-flux-"
        "train-h200-comfy0330.json`).",
    ],
}


def readme_rows() -> dict[str, str]:
    """Node id -> the README node table's 'What it does' cell."""
    section = (REPO / "README.md").read_text().split("## Nodes", 1)[1].split("\n## ", 1)[0]
    return {m[0]: m[1].strip() for m in re.findall(r"^\|\s*`(Pyra\w+)`\s*\|[^|]*\|(.*)\|\s*$", section, flags=re.M)}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


FILE_COMBOS = {  # inputs whose options are the user's files: named, not listed (the list differs per machine)
    "lora_name": "the LoRA files in the `loras` folders",
    "lora_1": "the LoRA files in the `loras` folders",
    **{f"lora_{i}": "`None` or the LoRA files in the `loras` folders" for i in range(2, 5)},
    "sara_file": "the SaRA checkpoints (.pt, .pth, .bin, .ckpt) in the `loras` folders",
    "dfm_name": "the DFM checkpoints in `models/dfm` and `output/dfm`",
}


def _host_lists() -> dict[tuple, str]:
    """Option lists that come from the host, so a page names them instead of listing them."""
    import comfy.samplers

    return {tuple(comfy.samplers.KSampler.SAMPLERS): "the host's samplers",
            tuple(comfy.samplers.KSampler.SCHEDULERS): "the host's schedulers"}


def _range(inp, host_lists: dict) -> str:
    options = getattr(inp, "options", None)
    if inp.id in FILE_COMBOS:
        return FILE_COMBOS[inp.id]
    if options is not None and tuple(options) in host_lists:
        return host_lists[tuple(options)]
    if options:
        return ", ".join(f"`{o}`" for o in options)
    lo, hi = getattr(inp, "min", None), getattr(inp, "max", None)
    return f"{lo} to {hi}" if lo is not None or hi is not None else ""


def page(node_cls, what: str, host_lists: dict) -> str:
    schema = node_cls.define_schema()
    title = f"# {schema.display_name or schema.node_id}"
    lines = [title, "", f"`{schema.node_id}`, category `{schema.category}`"
             + (", experimental" if getattr(schema, "is_experimental", False) else "") + ".", "", what, ""]
    if schema.description:
        lines += ["## In the node's words", "", schema.description, ""]
    lines += ["## Inputs", "", "| input | type | default | range or options | what it does |", "|---|---|---|---|---|"]
    for inp in schema.inputs:
        default = getattr(inp, "default", None)
        name = inp.id + (" (optional)" if getattr(inp, "optional", False) else "")
        lines.append(f"| `{name}` | {inp.get_io_type()} | {'' if default is None else f'`{_cell(default)}`'} | "
                     f"{_cell(_range(inp, host_lists))} | {_cell(inp.tooltip or '')} |")
    if schema.outputs:
        lines += ["", "## Outputs", "", "| output | type | what it is |", "|---|---|---|"]
        for out in schema.outputs:
            name = getattr(out, "display_name", None) or getattr(out, "id", None) or out.get_io_type().lower()
            lines.append(f"| {name} | {out.get_io_type()} | "
                         f"{_cell(out.tooltip or '')} |")
    if schema.node_id in FIGURES:
        lines += ["", "## Measured", ""] + [f"- {f}" for f in FIGURES[schema.node_id]]
    return "\n".join(lines) + "\n"


def _nodes_package():
    """nodes/ with its __init__ run (the capability table), under the pack alias the benchmarks use."""
    import importlib.util

    from _host import pack_module

    pack_module("core")  # the pack alias, without the root __init__ (it only holds the entrypoint)
    sys.modules.pop("pyra_pack.nodes", None)
    spec = importlib.util.spec_from_file_location("pyra_pack.nodes", REPO / "nodes" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "nodes")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pyra_pack.nodes"] = module
    spec.loader.exec_module(module)
    return module


def pages() -> dict[str, str]:
    from _host import import_host

    import_host(cpu=True)
    node_classes, disabled = _nodes_package().load_capabilities()
    if disabled:
        raise SystemExit(f"capabilities disabled on this host, their pages cannot be written: {disabled}")
    rows = readme_rows()
    missing = [c.define_schema().node_id for c in node_classes if c.define_schema().node_id not in rows]
    if missing:
        raise SystemExit(f"README's node table has no row for {missing}")
    lists = _host_lists()
    return {f"{c.define_schema().node_id}.md": page(c, rows[c.define_schema().node_id], lists) for c in node_classes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the pages instead of writing")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the pages' folder (default web/docs)")
    args = ap.parse_args()
    wanted, docs = pages(), args.docs
    if args.check:
        present = {p.name: p.read_text() for p in docs.glob("*.md")}
        stale = sorted(n for n in wanted if present.get(n) != wanted[n]) + sorted(set(present) - set(wanted))
        if stale:
            print("stale or missing help pages (run tools/node_docs.py):", ", ".join(stale))
            return 1
        return 0
    docs.mkdir(parents=True, exist_ok=True)
    for old in docs.glob("*.md"):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        (docs / name).write_text(text)
    print(f"wrote {len(wanted)} pages to {docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
