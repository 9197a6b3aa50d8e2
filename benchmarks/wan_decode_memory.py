"""What the Wan 2.1 VAE decode's peak consists of, counted on the meta device (no GPU, no compute).

    cd benchmarks && python wan_decode_memory.py --json results/wan-decode-memory-meta.json

The host's WanVAE at its real size (dim 96), bf16, 21 latent frames (81 video frames) at 832x480, on the meta
device: `memcount.LiveBytes` counts every live storage and breaks the peak down into the resident weights and
latent, the output, the causal caches (the host's feat_cache list, the bands' caches), the kept latent-resolution
features and the transients by the aten op that made them. Host: `first_stage_model.decode` (it returns the
output in the compute dtype on the device). Ours: `wan_decode` with the same output convention (bf16 on the
device) and, for comparison, with an fp32 output.

Not counted: cuDNN workspaces and allocator rounding, which `torch.cuda.max_memory_allocated` on the H200
includes (decode.py measures that), so this is a lower bound there.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from _host import import_host, pack_module
from decode import WAN_REAL
from memcount import LiveBytes

GIB = 1 << 30


def flash_like(q, k, v):
    """Attention counted as a fused kernel holds it on the GPU: the output only (the meta device would run SDPA's
    math path and count the whole score matrix, 8 GiB per 2048² image in bf16)."""
    return q.new_empty(q.shape)


def meta_wan(layout: dict, dtype, flash: bool = False):
    """The host's WanVAE on the meta device, its middle attention PyTorch SDPA as in the GPU benchmark (whatever
    attention the importing process configured), or with `flash` counted as a fused kernel (`flash_like`)."""
    import comfy.ldm.wan.vae
    import torch
    from comfy.ldm.modules.diffusionmodules.model import pytorch_attention

    with torch.device("meta"):
        model = comfy.ldm.wan.vae.WanVAE(**layout)
    for m in model.modules():
        if isinstance(m, comfy.ldm.wan.vae.AttentionBlock):
            m.optimized_attention = flash_like if flash else pytorch_attention
    return model.to(dtype).eval()


@contextmanager
def tagging(counter: LiveBytes, wan):
    """Tags our band caches and kept features while the block runs (class attributes restored after)."""
    saved = {cls: cls.__call__ for cls in (wan.CausalConv, wan.TimeUpsample)}
    features = wan.latent_features

    def tagged_call(real):
        def call(self, *args):
            y = real(self, *args)
            if hasattr(self.cache, "untyped_storage"):
                counter.tag(self.cache, "causal caches")
            return y
        return call

    def tagged_features(*args):
        feats = features(*args)
        counter.tag(feats, "latent-resolution features")
        return feats

    try:
        for cls, real in saved.items():
            cls.__call__ = tagged_call(real)
        wan.latent_features = tagged_features
        yield
    finally:
        for cls, real in saved.items():
            cls.__call__ = real
        wan.latent_features = features


def count_host(model, z) -> LiveBytes:
    import torch

    counter = LiveBytes([*model.parameters(), z], z.device)

    def tag_caches(module, args, kwargs, out):
        for c in kwargs.get("feat_cache") or []:
            if isinstance(c, torch.Tensor):
                counter.tag(c, "causal caches")

    hook = model.decoder.register_forward_hook(tag_caches, with_kwargs=True)
    try:
        with torch.no_grad(), counter:
            out = model.decode(z)
            counter.tag(out, "output")
    finally:
        hook.remove()
    return counter


def count_ours(model, z, rows: int, out_dtype, chunk: int = 1) -> tuple[LiveBytes, LiveBytes]:
    """(the device's count, the host memory's: the rows parked between bands, core/vae/carry.py), with `chunk`
    latent frames per chunk after the first (`wan.first_then`)."""
    import torch

    wan = pack_module("core.vae.wan")
    counter = LiveBytes([*model.parameters(), z], z.device)
    host = LiveBytes([], torch.device("cpu"))
    with torch.no_grad(), counter, host, tagging(counter, wan):
        out = wan.wan_decode(model, z, rows, z.device, out_dtype, chunk=chunk)
        counter.tag(out, "output")
    return counter, host


def report_of(counter: LiveBytes) -> dict:
    return {"peak_bytes": counter.peak, "peak_gib": counter.peak / GIB,
            "breakdown_gib": {k: v / GIB for k, v in counter.breakdown().items()},
            "largest_untagged": [[op, list(shape), n / GIB] for op, shape, n in counter.largest_untagged()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=21, help="latent frames (21 = 81 video frames)")
    ap.add_argument("--size", type=lambda s: [int(x) for x in s.split("x")], default=[60, 104],
                    help="latent rows x columns (60x104 = 480x832; --frames 1 --size 256x256: a 2048² Qwen-Image)")
    ap.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    ap.add_argument("--chunks", type=lambda s: [int(x) for x in s.split(",")], default=[1],
                    help="latent frames per chunk to count (more than 1: bf16 output only)")
    ap.add_argument("--flash", action="store_true", help="count the middle attention as a fused kernel (output only)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import_host(cpu=True)
    import torch

    model = meta_wan(WAN_REAL, torch.bfloat16, args.flash)
    z = torch.empty((1, 16, args.frames, *args.size), device="meta", dtype=torch.bfloat16)
    res = {"shape": list(z.shape), "dtype": "bfloat16", "device": "meta",
           "attention": "flash" if args.flash else "sdpa",
           "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
           "host_full": report_of(count_host(model, z))}
    for rows in args.rows:
        cells = [(1, torch.bfloat16), (1, torch.float32)] + [(c, torch.bfloat16) for c in args.chunks if c > 1]
        for chunk, dt in cells:
            name = f"ours_rows{rows}_out_{str(dt).removeprefix('torch.')}" + (f"_chunk{chunk}" if chunk > 1 else "")
            device, host = count_ours(model, z, rows, dt, chunk)
            res[name] = report_of(device) | {"host_memory_peak_gib": host.peak / GIB}
            res[name]["ratio_to_host"] = res[name]["peak_bytes"] / res["host_full"]["peak_bytes"]
    res["command"] = "python " + " ".join(sys.argv)
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(markdown(res))


def markdown(res: dict) -> str:
    """One row per decode: counted peak, its ratio to the host's, and the breakdown at the peak (GiB)."""
    lines = [f"# Wan 2.1 VAE decode, live tensor bytes at the peak (meta device, {res['dtype']}, latent "
             f"{tuple(res['shape'])})", "", f"Command: `{res['command']}`", "",
             "Counted by `memcount.LiveBytes`: no cuDNN workspaces or allocator rounding (the H200's "
             "`max_memory_allocated` adds them). `resident`: the whole VAE's weights and the latent. The host grows "
             "its output by torch.cat per latent frame, so its `made by cat` holds the output so far. Host RAM: ours "
             "parks the rows it carries between bands in host memory (counted apart, not in the peak).", "",
             "| decode | peak GiB | ratio to host | host RAM GiB | breakdown at the peak (GiB) |",
             "|---|---|---|---|---|"]
    for name, r in res.items():
        if isinstance(r, dict) and "peak_gib" in r:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown_gib"].items())
            ram = f"{r['host_memory_peak_gib']:.3f}" if "host_memory_peak_gib" in r else "-"
            lines.append(f"| {name} | {r['peak_gib']:.3f} | {r.get('ratio_to_host', 1):.3f} | {ram} | {parts} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
