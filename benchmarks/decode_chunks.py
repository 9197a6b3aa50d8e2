"""Where the carried video decode's time goes: band rows x latent frames per chunk x parking, against the host.

    source benchmarks/device_env.sh                        # on the lent GPU (carry .device)
    python3 benchmarks/decode_chunks.py --families wan22,hv15,wan --json OUT.json

The carried decode (core/vae/carry.py) runs, per band of latent rows, every chunk of latent frames in order; each
op keeps the rows it reads again, and with parking those kept rows wait in pinned host memory between bands. Two
costs were not measured apart before (benchmarks/results/decode-carry-families-h100.md: Wan 2.2 81 frames 4.0x the
host's time with 1-row bands): the launches (bands x chunks x ops, each on a small tensor) and the parking copies.
This sweep separates them: each cell is one decode of 81 frames (21 latent frames) in bf16 at the real size with
seeded random weights (speed and memory do not depend on weight values), through the node's path
(`host.vae.exact_decode`) with the chunk size and parking set, against the host's full decode (`vae.decode`) in the
same process. Parking off is `carry.run_carried(park=False)`, patched in for the cell (the node always parks).

Each cell: one timed run after a one-latent-frame warm-up of both paths; peak = torch.cuda.max_memory_allocated
(weights included), error = max abs difference to the host's images in [0, 1].
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from _host import device_info, import_host, pack_module, write_report

START = time.perf_counter()
SHAPES = {"wan22": (1, 48, 21, 44, 80), "hv15": (1, 32, 21, 45, 80), "wan": (1, 16, 21, 60, 104)}
# (band rows, latent frames per chunk, park)
CELLS = [(1, 1, True), (1, 1, False), (1, 4, True), (1, 10, True), (1, 20, True), (1, 20, False),
         (2, 4, True), (4, 1, True), (4, 4, True), (4, 4, False), (4, 10, True), (8, 4, True)]


def parse_cells(text: str) -> list[tuple[int, int, bool]]:
    cells = [tuple(int(v) for v in cell.split(":")) for cell in text.split(",")]
    if any(len(c) != 3 for c in cells):
        raise argparse.ArgumentTypeError(f"cells are rows:chunk:park, got {text!r}")
    return [(r, c, bool(p)) for r, c, p in cells]


def build(fam, dev, dtype):
    import decode  # benchmarks/decode.py: the same real-size random-weight VAEs as the decode benchmark

    if fam == "wan":
        return decode.build_wan_vae(decode.WAN_REAL, dev, dtype)
    return decode.build_family_vae(fam, dev, dtype)


def run_cell(vae, z, rows, chunk, park):
    """One decode through the node's path with `chunk` latent frames per chunk and parking on or off."""
    carry = pack_module("core.vae.carry")
    vae_mod = pack_module("host.vae")
    real_run, real_for = carry.run_carried, vae_mod.decoder_for

    def decoder_for(model):
        name, fn = real_for(model)
        return name, functools.partial(fn, chunk=chunk)

    carry.run_carried = functools.partial(real_run, park=park)
    vae_mod.decoder_for = decoder_for
    try:
        return vae_mod.exact_decode(vae, z, rows)
    finally:
        carry.run_carried, vae_mod.decoder_for = real_run, real_for


def measure(fn):
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated()


def family(fam, args, emit):
    import comfy.model_management as mm
    import torch

    dev = torch.device("cuda", torch.cuda.current_device())
    vae = build(fam, dev, torch.bfloat16)
    z = torch.randn(SHAPES[fam], generator=torch.Generator().manual_seed(1))
    for fn in (lambda: vae.decode(z[:, :, :2]), lambda: run_cell(vae, z[:, :, :2], 1, 1, True)):
        measure(fn)   # the kernels' first use at these widths
    host, t_host, p_host = measure(lambda: vae.decode(z))
    host = host.float().cpu()
    res = {"shape": list(z.shape), "full_s": t_host, "full_peak": p_host, "cells": []}
    for rows, chunk, park in args.cells:
        if time.perf_counter() - START > args.budget:
            res["cells"].append({"rows": rows, "chunk": chunk, "park": park, "skipped": "past --budget"})
            continue
        out, t, p = measure(lambda r=rows, c=chunk, k=park: run_cell(vae, z, r, c, k))
        err = (out.float().cpu() - host).abs().max().item()
        del out
        res["cells"].append({"rows": rows, "chunk": chunk, "park": park, "s": t, "peak": p, "err_img": err,
                             "time_ratio": t / t_host, "peak_ratio": p / p_host})
        print(fam, res["cells"][-1], flush=True)
    emit(fam, res)
    vae = host = None   # the closures above hold the VAE too
    mm.unload_all_models()
    mm.soft_empty_cache(True)


def markdown(report) -> str:
    env = report["env"]
    lines = [f"# Carried video decode: band rows x frames per chunk x parking ({env['gpu']}, torch {env['torch']}, "
             f"ComfyUI {env['comfyui']}, {env['memory_mode']}, {env['date']})", "",
             f"Command: `{report['command']}`", "",
             "81 frames (21 latent) in bf16, real-size random weights; host = `vae.decode` (its full decode) in the "
             "same process. Ratios are ours / host's.", "",
             "| family | band rows | frames per chunk | park | time s | time ratio | peak GiB | peak ratio | max abs"
             " err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fam, res in report["cases"].items():
        lines.append(f"| {fam} | host | - | - | {res['full_s']:.3f} | 1 | {res['full_peak'] / 2**30:.2f} | 1 | 0 |")
        for c in res["cells"]:
            if "skipped" in c:
                lines.append(f"| {fam} | {c['rows']} | {c['chunk']} | {c['park']} | skipped | | | | |")
                continue
            lines.append(f"| {fam} | {c['rows']} | {c['chunk']} | {c['park']} | {c['s']:.3f} | {c['time_ratio']:.2f}"
                         f" | {c['peak'] / 2**30:.2f} | {c['peak_ratio']:.3f} | {c['err_img']:.3g} |")
    return "\n".join(lines) + "\n"


def main():
    import sys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", type=lambda s: s.split(","), default=list(SHAPES))
    ap.add_argument("--cells", type=parse_cells, default=CELLS,
                    help="rows:chunk:park,... (park 1 or 0), e.g. 1:1:1,1:1:0,4:4:1; default: the whole sweep")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds after which cells are skipped")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import_host()
    import torch

    torch.backends.cudnn.benchmark = False
    report = {"command": "python3 benchmarks/decode_chunks.py " + " ".join(sys.argv[1:]), "env": device_info(),
              "cases": {}}

    def emit(name, res):   # written after every family, so a cut-off run keeps what it measured
        report["cases"][name] = res
        write_report(args.json, report, markdown(report))

    for fam in args.families:
        family(fam, args, emit)


if __name__ == "__main__":
    main()
