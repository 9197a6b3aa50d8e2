"""2:4 sparse linear on the GPU: ours (direct cuSPARSELt) vs cuBLAS dense and torch's stock 2:4 paths.

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/sparse24.py --parts kernels,e2e --json OUT/sparse24-h200.json

kernels: per shape (Flux 4608 tokens, Wan-14B 32760 tokens; bf16, no bias), the per-call time of
  dense        F.linear(x, W), cuBLAS
  stock        F.linear(x, to_sparse_semi_structured(S)), torch's stock 2:4 path
  cslt_eager   torch._cslt_sparse_mm with the algorithm from torch._cslt_sparse_mm_search
  cslt_graph   the same replayed from a CUDA graph on static buffers (the vendor kernel without set-up cost;
               not usable as-is in a model: it needs a copy in and out per call)
  ours         kernels/sparse24_linear (cuSPARSELt via ctypes, plan and algorithm made once)
  ours_col     ours with the operands declared column-major (cuBLAS "TN"; same bytes)
  ours_r64     ours with a rank-64 correction (y += (x A) B by cuBLAS after the sparse kernel)
Each time is the median over repeats of 10 back-to-back calls timed with CUDA events, so CPU-bound set-up
shows as it would inside a model. e2e: one Flux-size (random weights) sampling step at 1024x1024, dense vs
every eligible linear sparsified through the PyraSparsify patch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _host import REPO, device_info, memory_mode, pack_module, write_report

SHAPES = {"flux": [(4608, 3072, 9216), (4608, 3072, 12288), (4608, 12288, 3072), (4608, 3072, 3072)],
          "wan": [(32760, 5120, 13824), (32760, 13824, 5120)]}
VARIANTS = ("dense", "stock", "cslt_eager", "cslt_graph", "ours", "ours_col", "ours_r64")


def per_call_ms(fn, inner: int = 10, repeats: int = 15) -> float:
    return pack_module("kernels.timing").cuda_median_ms(fn, repeats=repeats, inner=inner, warmup=3)


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def torch_variants(x, s):
    """Callables for torch's own 2:4 paths (each may be missing on a torch build: then absent)."""
    import torch
    import torch.nn.functional as F

    out = {}
    try:
        ws = torch.sparse.to_sparse_semi_structured(s)
        out["stock"] = lambda: F.linear(x, ws)
    except (RuntimeError, NotImplementedError) as err:
        print("stock 2:4 path unavailable:", err)
    try:
        wc = torch._cslt_compress(s)
        alg = torch._cslt_sparse_mm_search(wc, x.t())
        out["cslt_eager"] = lambda: torch._cslt_sparse_mm(wc, x.t(), transpose_result=True, alg_id=alg)
        out["cslt_eager"]()
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out["cslt_eager"]()
            with torch.cuda.graph(graph, stream=stream):
                out["_graph_y"] = torch._cslt_sparse_mm(wc, x.t(), transpose_result=True, alg_id=alg)
        torch.cuda.current_stream().wait_stream(stream)
        out["cslt_graph"] = graph.replay
        out["_alg"] = alg
    except (RuntimeError, AttributeError) as err:
        print("torch cuSPARSELt ops unavailable:", err)
    return out


def bench_shape(tokens: int, k: int, n: int, k24, sp) -> dict:
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(tokens + k + n)
    w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.float32) / k**0.5
    s32, _ = sp.prune_nm(w)
    a, b = sp.lowrank_compensation(w, s32, 64)
    w, s = w.bfloat16(), s32.bfloat16()
    a, b = a.bfloat16(), b.bfloat16()
    x = torch.randn(tokens, k, device="cuda", generator=g).bfloat16()
    ours, ours_lr = k24.Sparse24Linear(s), k24.Sparse24Linear(s, lowrank=(a, b))
    ours_col = k24.Sparse24Linear(s, order="col")
    fns = {"dense": lambda: F.linear(x, w), "ours": lambda: ours(x), "ours_col": lambda: ours_col(x),
           "ours_r64": lambda: ours_lr(x), **torch_variants(x, s)}
    res = {"shape": [tokens, k, n], "backend": ours.backend, "reason": ours.reason, "cslt_alg": fns.get("_alg")}
    truth = k24.sparse24_linear(x.float(), s.float())
    truth_lr = k24.sparse24_linear(x.float(), s.float(), None, (a.float(), b.float()))
    res["rel_err_ours"] = rel(ours(x), truth)
    res["rel_err_ours_col"] = rel(ours_col(x), truth)
    res["rel_err_ours_r64"] = rel(ours_lr(x), truth_lr)
    res["rel_err_bf16_reference"] = rel(k24.sparse24_linear(x, s), truth)
    if "cslt_graph" in fns:
        fns["cslt_graph"]()
        y = fns["_graph_y"]
        res["rel_err_cslt"] = rel(y if y.shape == truth.shape else y.t(), truth)
    for name in VARIANTS:
        if name in fns:
            res[f"{name}_ms"] = per_call_ms(fns[name])
    dense = res["dense_ms"]
    for name in VARIANTS[1:]:
        if f"{name}_ms" in res:
            res[f"speedup_{name}"] = dense / res[f"{name}_ms"]
    print(f"{tokens}x{k}->{n}: " + ", ".join(f"{v} {res[f'{v}_ms']:.3f} ms" for v in VARIANTS if f"{v}_ms" in res)
          + f" | ours err {res['rel_err_ours']:.2e} (bf16 ref {res['rel_err_bf16_reference']:.2e})", flush=True)
    return res


def run_kernels() -> dict:
    k24, sp = pack_module("kernels.sparse24_linear"), pack_module("core.sparse")
    return {family: [bench_shape(*shape, k24, sp) for shape in shapes] for family, shapes in SHAPES.items()}


def headline(out: dict) -> dict:
    head = {}
    kern = out.get("kernels", {})
    for family, rows in kern.items():
        def worst(key, rows=rows):
            vals = [r[key] for r in rows if key in r]
            return min(vals) if vals else None

        head[f"speedup_vs_dense_min_{family}"] = worst("speedup_ours")
        head[f"speedup_r64_vs_dense_min_{family}"] = worst("speedup_ours_r64")
        head[f"vendor_graph_speedup_vs_dense_min_{family}"] = worst("speedup_cslt_graph")
        stock = [r["stock_ms"] / r["ours_ms"] for r in rows if "stock_ms" in r]
        head[f"speedup_vs_torch_stock_min_{family}"] = min(stock) if stock else None
    if "e2e" in out:
        head["e2e_step_speedup_flux1024"] = head["sparse24_e2e_step_speedup_flux1024"] = out["e2e"].get("speedup")
        head["sparse24_e2e_marginal_step_speedup_flux1024"] = out["e2e"].get("marginal_step_speedup")
        head["sparse24_e2e_all_on_kernel_speedup_flux1024"] = out["e2e"].get("all_on_kernel_speedup")
        head["sparse24_e2e_all_on_kernel_marginal_speedup_flux1024"] = out["e2e"].get("all_on_kernel_marginal_speedup")
        head["sparse24_weight_memory_ratio_vs_dense"] = out["e2e"].get("weight_memory_ratio")
        head["sparse24_layers_on_cusparselt"] = out["e2e"].get("layers_on_cusparselt")
        head["host"] = out["device"].get("comfyui"), out["device"].get("memory_mode")
    if "e2e_wanda" in out:
        head["e2e_step_speedup_flux1024_wanda"] = out["e2e_wanda"].get("speedup")
    return head


def markdown(out: dict) -> str:
    dev = out["device"]
    lines = [f"# 2:4 sparse linear, {dev['gpu']}", "",
             f"torch {dev['torch']}, triton {dev['triton']}, driver {dev['driver']}, {dev['date']}; "
             + "; ".join(f"{part}: `{cmd}`" for part, cmd in out.get("commands", {"all": out["command"]}).items()),
             "",
             "Per-call ms (median of 15 x 10 back-to-back calls), bf16; ratio = dense / variant.", "",
             "| tokens x in -> out | dense | stock 2:4 | cslt eager | cslt graph | ours | ours, col-major "
             "| ours + rank 64 |",
             "|---|---|---|---|---|---|---|---|"]
    for rows in out.get("kernels", {}).values():
        for r in rows:
            cells = [f"{r['dense_ms']:.3f}"] + [
                f"{r[f'{v}_ms']:.3f} ({r[f'speedup_{v}']:.2f}x)" if f"{v}_ms" in r else "n/a" for v in VARIANTS[1:]]
            t, k, n = r["shape"]
            lines.append(f"| {t} x {k} -> {n} | " + " | ".join(cells) + " |")
    lines += ["", "Headline: " + ", ".join(f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                                         for k, v in out["headline"].items())]
    for part in ("e2e", "e2e_wanda"):
        if part in out:
            lines += ["", f"End to end ({part}): " + json.dumps(out[part])]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="kernels,e2e")
    parser.add_argument("--previous", type=Path, help="merge parts from an earlier result file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = json.loads(args.previous.read_text()) if args.previous else {}
    if "command" in out and "commands" not in out:  # an earlier file from before per-part commands
        out["commands"] = {part: out["command"] for part in ("kernels", "e2e") if part in out}
    out.update(device=device_info(), command=" ".join(sys.argv))
    for part in args.parts.split(","):
        out.setdefault("commands", {})[part] = out["command"]
        if part == "kernels":
            out["kernels"] = run_kernels()
        elif part in ("e2e", "e2e_wanda"):
            from sparse24_e2e import run_e2e

            out[part] = run_e2e(score="wanda" if part == "e2e_wanda" else "magnitude")
            out["device"]["memory_mode"] = memory_mode()  # the host's mode is known once run_e2e imported it
        out["headline"] = headline(out)
        print(json.dumps(out["headline"]), flush=True)
        write_report(args.json, out, markdown(out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.exit(main())
