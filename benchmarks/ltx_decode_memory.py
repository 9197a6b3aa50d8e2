"""What the host's LTX-2 video VAE decode holds at its peak, counted on the meta device (no GPU, no weights).

    cd benchmarks && python ltx_decode_memory.py --json results/ltx-decode-memory-meta.json

Host 0.33.0 already decodes it in pieces: after each up block it splits the activation into chunks of frames of at most
128 MiB (`get_max_chunk_size` on a GPU of 24 GiB or more) and writes each finished piece into one output buffer on
the intermediate device (the CPU in the default mode). This counts what that leaves: the host's `VideoVAE(version=2)`
(the layout the host builds for an LTX-2 file without config metadata: 5 res layers per decoder stage, timestep
conditioning) in bf16 on the meta device, `memcount.LiveBytes` over its decode of a 121-frame latent, the output
buffer excluded (it is in host memory). The resident weights are the whole VAE's, encoder included, as the host
loads them for a decode; with them resident, a decoder's peak cannot go below them, which bounds what any sliced
decode can reach against this host's.

Beside it, Pyra's exact banded decode (core/vae/ltx.py) of the same latent, counted the same way at each band size
(`--rows`) and chunk of latent frames (`--chunks`), its output (in the compute dtype, on the meta device here)
excluded likewise, with its carries parked in host memory between bands as the node runs it, and the largest tensors
live at its peak (which shows where in the stream the peak falls).

Not counted: cuDNN workspaces and allocator rounding (the GPU's max_memory_allocated adds them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _host import import_host
from memcount import LiveBytes

GIB = 1 << 30
SHAPES = {"121f_704x1280": (1, 128, 16, 22, 40), "121f_512x768": (1, 128, 16, 16, 24)}


def count(model, shape) -> dict:
    import torch

    z = torch.empty(shape, device="meta", dtype=torch.bfloat16)
    out = torch.empty(model.decode_output_shape(shape), dtype=torch.bfloat16, device="meta")
    weights = [*model.parameters(), *model.buffers()]
    counter = LiveBytes([*weights, z, out], torch.device("meta"))
    with torch.no_grad(), counter:
        model.decode(z, output_buffer=out)
    w = sum(t.numel() * t.element_size() for t in model.parameters())
    dec = sum(t.numel() * t.element_size() for t in model.decoder.parameters())
    ob = out.numel() * out.element_size()
    peak = counter.peak - ob   # the output is in host memory on the GPU
    return {"latent": list(shape), "output": list(out.shape), "output_gib": ob / GIB, "peak_gib": peak / GIB,
            "weights_gib": w / GIB, "decoder_weights_gib": dec / GIB,
            "floor_ratio_whole_vae": w / peak, "floor_ratio_decoder_only": dec / peak,
            "breakdown_gib": {k: v / GIB for k, v in counter.breakdown().items() if k != "resident"}}


def count_ours(model, shape, rows: int, chunk: int) -> dict:
    """Live bytes of Pyra's ltx_decode at `rows` latent rows per band and `chunk` latent frames per chunk."""
    import torch
    from _host import pack_module

    ltx_decode = pack_module("core.vae.ltx").ltx_decode
    z = torch.empty(shape, device="meta", dtype=torch.bfloat16)
    weights = [*model.parameters(), *model.buffers()]
    counter = LiveBytes([*weights, z], torch.device("meta"))
    with counter:
        out = ltx_decode(model, z, rows, out_dtype=torch.bfloat16, chunk=chunk)
    ob = out.numel() * out.element_size()
    largest = [{"op": op, "shape": list(shape), "gib": n / GIB} for op, shape, n in counter.largest_untagged(6)
               if n != ob][:4]   # the output excluded, as from the peak
    return {"rows": rows, "chunk": chunk, "peak_gib": (counter.peak - ob) / GIB,
            "breakdown_gib": {k: v / GIB for k, v in counter.breakdown().items() if k != "resident"},
            "largest_at_peak": largest}


def markdown(res: dict) -> str:
    lines = ["# Host 0.33.0's LTX-2 VAE decode, live tensor bytes at the peak (meta device, bf16)", "",
             f"Command: `{res['command']}`", "",
             "Peak without the output (the host writes it to host memory). Floor: the resident weights over the "
             "peak, the least any decode with them resident reaches against this host's.", "",
             "| latent | output | peak GiB | weights GiB (decoder) | floor ratio: whole VAE / decoder only | "
             "largest transients at the peak (GiB) |", "|---|---|---|---|---|---|"]
    for r in res["cases"].values():
        top = sorted(r["breakdown_gib"].items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"| {tuple(r['latent'])} | {tuple(r['output'])} | {r['peak_gib']:.2f} | "
                     f"{r['weights_gib']:.2f} ({r['decoder_weights_gib']:.2f}) | {r['floor_ratio_whole_vae']:.2f} / "
                     f"{r['floor_ratio_decoder_only']:.2f} | {', '.join(f'{k} {v:.2f}' for k, v in top)} |")
    for name, r in res["cases"].items():
        if not r.get("ours"):
            continue
        lines += ["", f"Pyra's exact decode of {name} (peak without the output; ratio to the host's peak above):", "",
                  "| rows per band | latent frames per chunk | peak GiB | ratio | largest at the peak (GiB) |",
                  "|---|---|---|---|---|"]
        for o in r["ours"]:
            top = sorted(o["breakdown_gib"].items(), key=lambda kv: -kv[1])[:3]
            lines.append(f"| {o['rows']} | {o['chunk']} | {o['peak_gib']:.2f} | {o['peak_gib'] / r['peak_gib']:.3f} | "
                         f"{', '.join(f'{k} {v:.2f}' for k, v in top)} |")
        first = r["ours"][0]
        lines += ["", f"The largest tensors at the peak of {first['rows']}-row bands, {first['chunk']}-frame chunks "
                  "(output excluded): " + "; ".join(f"{t['op']} {tuple(t['shape'])} {t['gib']:.3f} GiB"
                                                    for t in first["largest_at_peak"])
                  + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--chunks", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    args = ap.parse_args()
    import_host(cpu=True)
    import comfy.ldm.lightricks.vae.causal_video_autoencoder as ltx
    import torch

    ltx.get_max_chunk_size = lambda device: ltx.MAX_CHUNK_SIZE   # a GPU of 24 GiB or more (meta has no size)
    with torch.device("meta"):
        model = ltx.VideoVAE(version=2).to(torch.bfloat16)
    res = {"command": "python " + " ".join(sys.argv), "timestep_conditioning": bool(model.timestep_conditioning),
           "cases": {name: count(model, shape) for name, shape in SHAPES.items()}}
    for name, shape in SHAPES.items():
        res["cases"][name]["ours"] = [count_ours(model, shape, r, c) for r in args.rows for c in args.chunks]
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
