"""Block-sparse attention inside a real-size Wan block: one forward, dense vs PyraSparseAttention (GPU).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sparse_attention_wan.py --json OUT/sparse-attention-wan-h200.json
    $(python3 tools/host.py python) benchmarks/sparse_attention_wan.py --tiny   # CPU check of the script itself

A Wan 2.1 model with one transformer block at the 14B sizes (dim 5120, 40 heads of 128, FFN 13824; random bf16
weights, feature_slicing.build), a 480p 81-frame latent (21 x 60 x 104: 32,760 tokens) and 512 text tokens. One
forward through the host's apply_model with its transformer_options, timed as the median of --repeats
(feature_slicing.measure):
  host       the host's own attention (no override)
  cudnn      PyraSparseAttention outside its sparse window: every call on the fastest dense backend (cuDNN)
  s80, s90   block-sparse self-attention at keep ratio 0.2 / 0.1 (mask prediction included)
The whole block is timed, so the linears, norms and the cross-attention count too. Random weights give q and k
without the local structure of a trained video model: the predicted masks keep arbitrary blocks and the error
against the dense output says nothing about quality (benchmarks/sparse_attention.py has structured q/k).
Imports nothing from comfy_api.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _host import device_info, import_host, pack_module, write_report
from feature_slicing import TINY, WAN14B_BLOCK, build, measure, wan_inputs

# name: (keep_mass, keep_ratio, sparse window open); "cudnn" keeps the window shut, so every call takes the
# node's fastest dense backend
SETTINGS = {"cudnn": (1.0, 0.0, False), "s80": (0.9, 0.2, True), "s90": (0.9, 0.1, True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--latent", default="21,60,104", help="latent frames,height,width")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=args.tiny)

    hooks, models = pack_module("host.sparse_attention"), pack_module("host.models")
    cuda = not args.tiny
    device, dtype, x, t, context, tokens = wan_inputs(args.tiny, args.latent)
    block = 16 if args.tiny else 128
    base = build(TINY if args.tiny else WAN14B_BLOCK, device, dtype)
    host = measure(base, x, t, context, args.repeats, cuda)  # warm-up first: compiles the kernels of this shape
    results = {"host": {"seconds": host["seconds"]}}
    for name, (mass, ratio, window) in SETTINGS.items():
        patched = base.clone()
        sigmas = models.SigmaWindow.between(float("inf") if window else -1.0, -1.0)
        stats = hooks.install(patched, "wan21", hooks.SparseSettings(mass, ratio, block, sigmas, 0, True))
        run = measure(patched, x, t, context, args.repeats, cuda)
        results[name] = {"seconds": run["seconds"], "speedup_vs_host": host["seconds"] / run["seconds"],
                         "sparsity": stats.sparsity(), "sparse_calls": stats.sparse_calls,
                         "dense_calls": stats.dense_calls,
                         "rel_error_vs_host": float((run["out"].float() - host["out"].float()).norm()
                                                    / host["out"].float().norm())}
    for name in ("s80", "s90"):
        results[name]["speedup_vs_cudnn"] = results["cudnn"]["seconds"] / results[name]["seconds"]
    out = {**(device_info() if cuda else {"device": "cpu"}), "tokens": tokens,
           "command": "python3 benchmarks/sparse_attention_wan.py " + " ".join(sys.argv[1:]), "runs": results}
    lines = [f"# PyraSparseAttention in a Wan 2.1 14B-size block, {tokens} tokens", "",
             f"Command: `{out['command']}`", "",
             "| run | block forward ms | x host | x cuDNN dense | block sparsity | rel. error vs host |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        vs_cudnn = f"{r['speedup_vs_cudnn']:.2f}x" if "speedup_vs_cudnn" in r else ""
        sparsity = f"{r['sparsity']:.3f}" if "sparsity" in r else ""
        error = f"{r['rel_error_vs_host']:.4f}" if "rel_error_vs_host" in r else ""
        lines.append(f"| {name} | {r['seconds'] * 1e3:.1f} | {r.get('speedup_vs_host', 1.0):.2f}x | {vs_cudnn} | "
                     f"{sparsity} | {error} |")
    write_report(args.json, out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
