"""FLOPs of the exact video decodes against the host's decode, counted on the meta device (no GPU, no weights).

    cd benchmarks && python decode_flops.py --json results/decode-flops-meta.json

The real-size Wan 2.1, Wan 2.2 (TI2V-5B) and HunyuanVideo 1.5 VAEs as the host 0.33.0 builds them (comfy/sd.py),
bf16, 81 frames; torch's FlopCounterMode counts every convolution, matmul and attention of `first_stage_model.decode`
(host) and of Pyra's sliced decode at each band size. A decode that recomputes halos shows it here as a ratio above
1; the carried decode (core/vae/carry.py) computes each row of each op once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _host import import_host, pack_module

# family -> (latent shape (B, C, T, h, w), band rows to count)
CASES = {"wan21": ((1, 16, 21, 60, 104), [1, 4, 8]),    # 81 x 480 x 832
         "wan22": ((1, 48, 21, 44, 80), [1, 2, 4]),     # 81 x 704 x 1280
         "hv15": ((1, 32, 21, 45, 80), [1, 2, 4])}      # 81 x 720 x 1280


def meta_vae(family: str):
    """The family's first_stage_model at its real size on the meta device, bf16, eval."""
    import torch

    with torch.device("meta"):
        if family == "wan21":
            import comfy.ldm.wan.vae
            from decode import WAN_REAL

            model = comfy.ldm.wan.vae.WanVAE(**WAN_REAL)
        elif family == "wan22":   # comfy/sd.py's Wan 2.2 ddconfig
            import comfy.ldm.wan.vae2_2

            model = comfy.ldm.wan.vae2_2.WanVAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                                attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
        else:
            from comfy.ldm.models.autoencoder import AutoencodingEngine
            from decode import HV15_REAL

            model = AutoencodingEngine(
                regularizer_config={"target": "comfy.ldm.models.autoencoder.EmptyRegularizer"},
                encoder_config={"target": "comfy.ldm.hunyuan_video.vae_refiner.Encoder", "params": HV15_REAL},
                decoder_config={"target": "comfy.ldm.hunyuan_video.vae_refiner.Decoder", "params": HV15_REAL})
    return model.to(torch.bfloat16).eval()


def flops(fn) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count(family: str) -> dict:
    import torch

    vae = pack_module("core.vae")
    shape, rows = CASES[family]
    model = meta_vae(family)
    z = torch.empty(shape, device="meta", dtype=torch.bfloat16)
    host = flops(lambda: model.decode(z))
    ours = {r: flops(lambda r=r: vae.sliced_decode(model, z, r, z.device, torch.bfloat16)) for r in rows}
    return {"latent": list(shape), "host_tflop": host / 1e12,
            "ours": [{"rows": r, "tflop": f / 1e12, "ratio_to_host": f / host} for r, f in ours.items()]}


def markdown(res: dict) -> str:
    lines = ["# Exact video decode FLOPs against the host's decode (meta device, bf16, host 0.33.0 classes)", "",
             f"Command: `{res['command']}`", "",
             "| VAE | latent | host TFLOP | band rows | ours TFLOP | ours / host |", "|---|---|---|---|---|---|"]
    for fam, r in res["families"].items():
        for o in r["ours"]:
            lines.append(f"| {fam} | {'x'.join(map(str, r['latent'][1:]))} | {r['host_tflop']:.1f} | {o['rows']} | "
                         f"{o['tflop']:.1f} | {o['ratio_to_host']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", type=lambda s: s.split(","), default=list(CASES))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import_host(cpu=True)
    res = {"families": {f: count(f) for f in args.families}, "command": "python " + " ".join(sys.argv)}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
