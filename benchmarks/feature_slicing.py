"""Feature slicing on a Wan-14B-size block: peak memory and time of one forward, sliced vs plain.

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/feature_slicing.py --json OUT.json                    # Wan 2.1 14B block, 75,600 tokens
    $(python3 tools/host.py python) benchmarks/feature_slicing.py --tiny               # CPU check of the script itself

A Wan 2.1 model with one transformer block at the 14B sizes (dim 5120, FFN 13824, 40 heads), random bf16
weights, built from the host's class; a 720p 81-frame latent (21 x 90 x 160, 75,600 tokens after the 1x2x2
patch). One forward (no CFG) through the host's apply_model with and without PyraFeatureSlicing (its Wan blocks
get Operator Grouping, core/slicing/wan_grouping.py, whose docstring has the paper estimate: 0.49 at 4096-token slices):
peak of torch.cuda.max_memory_allocated above the weights, median time of --repeats, and the max abs difference.
Imports nothing from comfy_api (the device has no `av`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _host import device_info, import_host, pack_module

WAN14B_BLOCK = {"image_model": "wan2.1", "model_type": "t2v", "dim": 5120, "out_dim": 16, "num_heads": 40,
                "ffn_dim": 13824, "num_layers": 1, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
                "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}
TINY = {**WAN14B_BLOCK, "dim": 128, "num_heads": 1, "ffn_dim": 512}


def build(config: dict, device, dtype):
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    mc = comfy.supported_models.WAN21_T2V(dict(config))
    mc.set_inference_dtype(dtype, None)
    model = mc.get_model({}, device=device)
    with torch.no_grad():  # in the dtypes the host chose (its patch embedding stays fp32)
        for name, p in model.named_parameters():
            p.zero_() if name.endswith("bias") else p.normal_(0, 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def forward(patcher, x, t, context):
    """One apply_model call with the patcher's transformer_options and wrappers, as the sampler passes them."""
    import torch

    options = {**patcher.model_options.get("transformer_options", {}), "wrappers": patcher.wrappers}
    patcher.patch_model()
    try:
        with torch.no_grad():
            return patcher.model.apply_model(x, t, c_crossattn=context, transformer_options=options)
    finally:
        patcher.unpatch_model()


def wan_inputs(tiny: bool, latent: str):
    """(device, dtype, x, t, context, tokens): a latent of `latent` frames,height,width (tiny: 2,16,16 on the CPU
    in fp32), 512 text tokens and sigma 0.5."""
    import torch

    device, dtype = (torch.device("cpu"), torch.float32) if tiny else (torch.device("cuda"), torch.bfloat16)
    frames, height, width = (2, 16, 16) if tiny else (int(v) for v in latent.split(","))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, frames, height, width, generator=g).to(device, dtype)
    context = torch.randn(1, 512, 4096, generator=g).to(device, dtype)
    return device, dtype, x, torch.tensor([0.5], device=device), context, frames * (height // 2) * (width // 2)


def measure(patcher, x, t, context, repeats: int, cuda: bool) -> dict:
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = forward(patcher, x, t, context)
    times, peak = [], 0
    for _ in range(repeats):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        sync()
        t0 = time.perf_counter()
        forward(patcher, x, t, context)
        sync()
        times.append(time.perf_counter() - t0)
        if cuda:
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
    return {"seconds": statistics.median(times), "peak_bytes": peak, "out": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--latent", default="21,90,160", help="latent frames,height,width")
    parser.add_argument("--slice-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=args.tiny)

    slicing = pack_module("host.feature_slicing")
    cuda = not args.tiny
    device, dtype, x, t, context, tokens = wan_inputs(args.tiny, args.latent)
    slice_tokens = 16 if args.tiny else args.slice_tokens
    patcher = build(TINY if args.tiny else WAN14B_BLOCK, device, dtype)
    plain = measure(patcher, x, t, context, args.repeats, cuda)
    sliced_patcher, report = slicing.slice_features(patcher, slice_tokens)
    sliced = measure(sliced_patcher, x, t, context, args.repeats, cuda)
    result = {
        "tokens": tokens, "slice_tokens": slice_tokens, "blocks_grouped": len(report.grouped),
        "ffn_only_sliced": len(report.ffn_sliced),
        "plain_seconds": round(plain["seconds"], 4), "sliced_seconds": round(sliced["seconds"], 4),
        "time_ratio": round(sliced["seconds"] / plain["seconds"], 3),
        "plain_peak_gib": round(plain["peak_bytes"] / 2**30, 3),
        "sliced_peak_gib": round(sliced["peak_bytes"] / 2**30, 3),
        "slice_peak_ratio_wan": round(sliced["peak_bytes"] / plain["peak_bytes"], 3) if plain["peak_bytes"] else None,
        "max_abs_diff": float((sliced["out"].float() - plain["out"].float()).abs().max()),
    }
    meta = {**(device_info() if cuda else {"device": "cpu"}),
            "command": "python3 benchmarks/feature_slicing.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
