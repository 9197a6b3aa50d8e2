"""Where a Flux step's time goes, layer shape by layer shape: dense cuBLAS vs our 2:4 op at the token counts the
layers really see (GPU).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sparse24_layers.py --json OUT/sparse24-layers-h200.json

One sampling step of the real-size random-weight Flux DiT at 1024x1024 (progressive_speed.build) records the
(tokens, in, out) of every Linear call. Each distinct shape is then timed alone (median of back-to-back calls,
bias included, as the model calls it): dense F.linear vs kernels/sparse24_linear on a 2:4 weight. The sums
over the step's calls give the time the linears take per step, dense and sparse, and the step speedup they
predict with everything else unchanged: step / (step - dense linears + sparse linears). The measured e2e
figure (benchmarks/sparse24.py --parts e2e) can be read against it.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from _host import device_info, import_host, pack_module, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    import_host()
    import comfy.model_management as mm
    import torch
    import torch.nn.functional as F
    from progressive_speed import build
    from sparse24_e2e import sampling_step_seconds

    k24, sp = pack_module("kernels.sparse24_linear"), pack_module("core.sparse")
    timing = pack_module("kernels.timing")

    def median_ms(fn) -> float:  # back-to-back calls, as in a model: CPU set-up hides behind the GPU work
        return timing.cuda_median_ms(fn, repeats=15, inner=10, warmup=3)

    patcher, cond, *_ = build("flux", torch.device("cuda"))
    mm.load_models_gpu([patcher])
    calls = collections.Counter()
    biased = {}

    def record(module, inputs):
        x = inputs[0]
        key = (x.numel() // x.shape[-1], module.in_features, module.out_features)
        calls[key] += 1
        biased[key] = module.bias is not None

    dm = patcher.get_model_object("diffusion_model")
    hooks = [m.register_forward_pre_hook(record) for m in dm.modules() if isinstance(m, torch.nn.Linear)]
    step_s = sampling_step_seconds(patcher, cond, args.side, steps=1)  # warm-up + 5 timed 1-step runs
    for h in hooks:
        h.remove()
    runs = 4  # the warm-up and the three timed runs all recorded
    rows = []
    for (tokens, k, n), count in sorted(calls.items()):
        g = torch.Generator(device="cuda").manual_seed(tokens + k + n)
        w = (torch.randn(n, k, device="cuda", generator=g) / k**0.5).bfloat16()
        bias = torch.randn(n, device="cuda", generator=g).bfloat16() if biased[(tokens, k, n)] else None
        s, _ = sp.prune_nm(w)
        x = torch.randn(tokens, k, device="cuda", generator=g).bfloat16()
        op = k24.Sparse24Linear(s, bias)
        dense_ms = median_ms(lambda x=x, w=w, bias=bias: F.linear(x, w, bias))
        sparse_ms = median_ms(lambda x=x, op=op: op(x))
        rows.append({"tokens": tokens, "in": k, "out": n, "calls_per_step": count // runs, "bias": bias is not None,
                     "backend": op.backend, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
                     "speedup": dense_ms / sparse_ms})
        print(json.dumps(rows[-1]), flush=True)
    dense_lin = sum(r["dense_ms"] * r["calls_per_step"] for r in rows) / 1e3
    sparse_lin = sum(r["sparse_ms"] * r["calls_per_step"] for r in rows) / 1e3
    best_lin = sum(min(r["dense_ms"], r["sparse_ms"]) * r["calls_per_step"] for r in rows) / 1e3
    out = {"device": device_info(), "command": " ".join(["python3", *sys.argv]), "side": args.side,
           "step_s": step_s, "linear_s_dense": dense_lin, "linear_s_sparse": sparse_lin,
           "linear_share_of_step": dense_lin / step_s,
           "predicted_step_speedup_all_sparse": step_s / (step_s - dense_lin + sparse_lin),
           "predicted_step_speedup_faster_of_two": step_s / (step_s - dense_lin + best_lin),
           "linear_speedup_all_sparse": dense_lin / sparse_lin, "rows": rows}
    lines = [f"# Flux step, linears by shape ({out['device']['gpu']})", "", f"Command: `{out['command']}`", "",
             f"Step {step_s * 1e3:.1f} ms at {args.side}x{args.side}; linears {dense_lin * 1e3:.1f} ms dense "
             f"({100 * out['linear_share_of_step']:.0f}% of the step), {sparse_lin * 1e3:.1f} ms with every one on "
             f"the 2:4 op ({out['linear_speedup_all_sparse']:.2f}x). Predicted step speedup: "
             f"{out['predicted_step_speedup_all_sparse']:.3f}x all sparse, "
             f"{out['predicted_step_speedup_faster_of_two']:.3f}x with each shape on the faster op.", "",
             "| tokens | in | out | calls/step | dense ms | 2:4 ms | speedup |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['tokens']} | {r['in']} | {r['out']} | {r['calls_per_step']} | {r['dense_ms']:.4f} | "
              f"{r['sparse_ms']:.4f} | {r['speedup']:.2f}x |" for r in rows]
    write_report(args.json, out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
