"""Is the SDXL UNet launch-bound at pyramid level sizes, and does CUDA-graph replay remove it? (GPU probe)

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sdxl_graph_probe.py --json OUT.json

One forward of the real-size random-weight SDXL UNet (bf16, CFG batch of 2) at the latent sizes a 2048x2048
pyramid uses (256, 128, 64), eager vs replayed from a CUDA graph captured on static inputs. The pyramid's SDXL
speedup fell short of its FLOP prediction because low-resolution steps cost far more than their FLOPs; if graph
replay brings those steps near the FLOP ratio, capturing the low-resolution stages is the fix to build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _host import device_info, import_host, pack_module, write_report
from progressive_speed import build


def median_ms(fn, repeats: int = 20) -> float:
    """Median of single-call CUDA-event timings after warm-up (kernels/timing.py)."""
    return pack_module("kernels.timing").cuda_median_ms(fn, repeats=repeats, inner=1, warmup=3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", default="256,128,64", help="latent sides")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host()
    import torch

    device = torch.device("cuda")
    patcher, cond, _, _, channels = build("sdxl", device)
    unet = patcher.model.diffusion_model
    context = cond[0][0].to(device, torch.bfloat16).repeat(2, 1, 1)
    y = torch.randn(2, 2816, device=device, dtype=torch.bfloat16)
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        x = torch.randn(2, channels, side, side, device=device, dtype=torch.bfloat16)
        t = torch.full((2,), 500.0, device=device)

        def eager(x=x, t=t):
            with torch.no_grad():
                return unet(x, t, context=context, y=y)

        eager_ms = median_ms(eager)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):
                unet(x, t, context=context, y=y)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = unet(x, t, context=context, y=y)
        graph_ms = median_ms(graph.replay)
        same = bool(torch.allclose(static_out, eager(), atol=1e-2, rtol=1e-2))
        rows.append({"latent_side": side, "eager_ms": round(eager_ms, 2), "graph_ms": round(graph_ms, 2),
                     "speedup": round(eager_ms / graph_ms, 2), "graph_matches_eager": same})
        print(rows[-1], flush=True)
        del graph
    full = rows[0]
    for r in rows:
        r["eager_vs_full"] = round(r["eager_ms"] / full["eager_ms"], 3)
        r["graph_vs_full_graph"] = round(r["graph_ms"] / full["graph_ms"], 3)
    report = {"meta": {**device_info(), "command": "python3 benchmarks/sdxl_graph_probe.py " + " ".join(sys.argv[1:])},
              "rows": rows}
    lines = ["# SDXL UNet forward (CFG batch 2, bf16): eager vs CUDA-graph replay", "",
             f"`{report['meta']['command']}` on {report['meta']['gpu']}", "",
             "| latent | eager ms | graph ms | graph speedup | eager / full | graph / full graph | same output |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['latent_side']}² | {r['eager_ms']} | {r['graph_ms']} | {r['speedup']}x | {r['eager_vs_full']} | "
              f"{r['graph_vs_full_graph']} | {r['graph_matches_eager']} |" for r in rows]
    table = "\n".join(lines) + "\n"
    write_report(args.json, report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
