"""Where the exact KL decode's time goes: conv FLOPs and memory traffic per pass, counted without a GPU.

    python benchmarks/decode_cost.py --size 2048 --rows 8,32 --json benchmarks/results/decode-cost-2048.json

The real-size SDXL/Flux decoder (the host's AutoencoderKL, ch 128, ch_mult 1, 2, 4, 4, two res blocks) is built on
the meta device in bf16, so the counts are those of the real size and cost no compute. Every aten op of the host's
full decode and of ours is counted by a dispatch mode: conv FLOPs (torch.utils.flop_counter's formulas; the total
is checked against FlopCounterMode), bytes read + written by the non-view ops (a traffic estimate: a kernel reads
its inputs and writes its outputs once), and op counts. Our ops are split into passes: "whole" (conv_in and the
mid block, and with `fast` the low-resolution up steps that `kl.whole_steps` runs whole), "stats" (the statistics
passes that recompute a segment's prefix for a GroupNorm inside it), and "output" (the band-by-band output passes,
including their halo rows). FLOPs are also given in units of C = one 128 -> 128 3x3 convolution at full
resolution.

Peak memory: the most bytes the decode's own tensors hold at once (storages tracked through the dispatch mode),
plus the weights. Calibration: the same count on the code measured in results/decode-h200.md (commit 719559f)
gives 2.05 / 2.99 GiB at 2048x2048 (8 / 32-row bands; measured 2.10 / 3.04) and 7.07 / 8.94 GiB at 4096x4096
(measured 7.13 / 9.00): the allocator and cuDNN added about 0.06 GiB there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _host import import_host, pack_module, write_report

VIEW_OPS = {"view", "_unsafe_view", "slice", "select", "reshape", "transpose", "permute", "expand", "as_strided",
            "unsqueeze", "squeeze", "t", "alias", "detach", "split", "split_with_sizes", "unbind", "_reshape_alias",
            "lift_fresh", "empty", "empty_strided", "empty_like", "new_empty", "_to_copy_view"}


def counter_mode():
    """A dispatch mode that tallies conv FLOPs, traffic bytes and ops under the current `phase`."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.phase = "whole"
            self.tally: dict[str, dict[str, float]] = {}
            self.live: dict[int, tuple[StorageWeakRef, int]] = {}   # storages made under the mode
            self.peak = 0

        def track(self, out) -> None:
            """Live bytes of the storages the ops made (weights and inputs made outside are not counted)."""
            self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
            for x in tree_flatten(out)[0]:
                if isinstance(x, torch.Tensor):
                    ref = StorageWeakRef(x.untyped_storage())
                    self.live.setdefault(ref.cdata, (ref, x.untyped_storage().nbytes()))
            self.peak = max(self.peak, sum(n for _, n in self.live.values()))

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.track(out)
            t = self.tally.setdefault(self.phase, {"conv_flop": 0, "other_flop": 0, "conv_bytes": 0, "bytes": 0,
                                                   "ops": 0, "convs": 0})
            packet = func._overloadpacket
            name = packet.__name__.removesuffix("_")
            if packet in flop_registry:
                flops = flop_registry[packet](*args, **(kwargs or {}), out_val=out)
                key = "conv_flop" if "convolution" in name else "other_flop"
                t[key] += flops
                t["convs"] += "convolution" in name
            if name not in VIEW_OPS:
                tensors = [x for x in tree_flatten((args, kwargs, out))[0] if isinstance(x, torch.Tensor)]
                moved = sum(x.numel() * x.element_size() for x in tensors)
                t["bytes"] += moved
                t["conv_bytes"] += moved if "convolution" in name else 0
                t["ops"] += 1
            return out

    return Counter()


def build_meta_vae(z_channels: int):
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
          "attn_resolutions": [], "dropout": 0.0, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2}
    with torch.device("meta"):
        model = AutoencoderKL(ddconfig=dd, embed_dim=z_channels)
    return model.to(torch.bfloat16).eval()


def count(fn, attn, ours: bool = False) -> dict:  # {"passes": {phase: tally}, "live_peak": bytes}
    """Tallies per phase of fn(); for ours, `run_program` counts as "output" and `_measure` within it as "stats".

    The mid block's attention (module `attn`) counts as "attention": on the meta device it runs SDPA's math
    decomposition, whose score-matrix traffic a GPU's fused kernel does not have, so read its bytes with care.
    """
    from torch.utils.flop_counter import FlopCounterMode

    mode = counter_mode()
    stream, kl = pack_module("core.vae.stream"), pack_module("core.vae.kl")
    saved = stream._measure, kl.run_program, kl.mid_attention

    def in_phase(fn_, phase):
        def wrapped(*a, **k):
            before, mode.phase = mode.phase, phase
            try:
                return fn_(*a, **k)
            finally:
                mode.phase = before
        return wrapped

    if ours:
        stream._measure, kl.run_program = in_phase(saved[0], "stats"), in_phase(saved[1], "output")
    kl.mid_attention = in_phase(saved[2], "attention")
    attn.forward = in_phase(attn.forward, "attention")
    try:
        with FlopCounterMode(display=False) as check, mode:
            fn()
    finally:
        stream._measure, kl.run_program, kl.mid_attention = saved
        del attn.forward
    total = sum(t["conv_flop"] + t["other_flop"] for t in mode.tally.values())
    if total != check.get_total_flops():
        raise RuntimeError(f"the phase tally ({total}) disagrees with FlopCounterMode ({check.get_total_flops()})")
    return {"passes": mode.tally, "live_peak": mode.peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import_host(cpu=True)
    import torch

    kl = pack_module("core.vae.kl")
    model = build_meta_vae(4)
    lat = args.size // 8
    z = torch.empty((1, 4, lat, lat), device="meta", dtype=torch.bfloat16)
    unit = 2 * 128 * 128 * 9 * args.size ** 2
    rows_out = {"host full": count(lambda: model.decode(z), model.decoder.mid.attn_1)}
    for fast in (False, True):
        for rows in args.rows:
            rows_out[f"ours {'fast' if fast else 'reference'} {rows} rows"] = count(
                lambda r=rows, f=fast: kl.kl_decode(model, z, r, fast=f), model.decoder.mid.attn_1, ours=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    measured = Path(__file__).parent / "results" / "decode-h200.json"
    full_peak = None
    if measured.exists():   # the host's full decode as measured on the H200 (SDXL, bf16), for the ratio
        case = json.loads(measured.read_text())["cases"].get(f"sdxl_bf16_{args.size}")
        full_peak = case and case["full_peak"]
    report = {"size": args.size, "unit_C_flop": unit, "weights_bytes": weights, "measured_full_peak": full_peak,
              "cases": rows_out}
    write_report(args.json, report, table(report))


def table(report: dict) -> str:
    unit = report["unit_C_flop"]
    host_passes = report["cases"]["host full"]["passes"]
    host = sum(t["conv_flop"] for t in host_passes.values())
    host_bytes = sum(t["bytes"] - t["conv_bytes"] for p, t in host_passes.items() if p != "attention")
    lines = [f"# KL decode cost at {report['size']}x{report['size']} (SDXL/Flux layout, bf16, counted on meta)", "",
             f"C = one 128->128 3x3 conv at full resolution = {unit / 1e12:.3f} TFLOP. Bytes: reads + writes of the "
             "non-view ops (GiB); the attention's are those of SDPA's math decomposition on meta (a fused GPU kernel "
             "has no score-matrix traffic), so the totals leave them out.", "",
             "| decoder | pass | conv TFLOP | conv / C | conv / host | convs | conv GiB | other GiB | other / host "
             "| ops |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, case in report["cases"].items():
        for phase, t in [*case["passes"].items(), ("total", _sum(case["passes"]))]:
            lines.append(f"| {name} | {phase} | {t['conv_flop'] / 1e12:.2f} | {t['conv_flop'] / unit:.2f} | "
                         f"{t['conv_flop'] / host:.3f} | {t['convs']} | {t['conv_bytes'] / 2**30:.1f} | "
                         f"{(t['bytes'] - t['conv_bytes']) / 2**30:.1f} | "
                         f"{(t['bytes'] - t['conv_bytes']) / host_bytes:.2f} | {t['ops']} |")
    return "\n".join([*lines, "", *_peak_table(report)]) + "\n"


def _peak_table(report: dict) -> list[str]:
    """Live-tensor peaks: a lower bound of the GPU's (no allocator rounding, no cuDNN workspace)."""
    gib, full = 2**30, report["measured_full_peak"]
    lines = [f"Live-tensor peak: the most bytes the decode's own tensors hold at once, plus the model's weights "
             f"({report['weights_bytes'] / gib:.2f} GiB); a lower bound of `max_memory_allocated` (no allocator "
             "rounding or cuDNN workspace). The host's includes the score matrix of meta's math attention, which a "
             "GPU's fused kernel does not have. Ratio: over the host's full decode as measured on the H200"
             + (f" ({full / gib:.2f} GiB)." if full else " (not available)."), "",
             "| decoder | live peak + weights GiB | / measured full |", "|---|---|---|"]
    for name, case in report["cases"].items():
        peak = case["live_peak"] + report["weights_bytes"]
        ratio = f"{peak / full:.3f}" if full else "-"
        lines.append(f"| {name} | {peak / gib:.2f} | {ratio} |")
    return lines


def _sum(case: dict) -> dict:
    """All passes; the attention's bytes are left out (see `count`)."""
    keys = next(iter(case.values())).keys()
    return {k: sum(t[k] for p, t in case.items() if not (p == "attention" and "bytes" in k)) for k in keys}


if __name__ == "__main__":
    main()
