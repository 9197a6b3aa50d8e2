"""How far pooling the proxy's latent is from the latent of the pooled image (what pyramid sampling assumes).

    $(python3 tools/host.py python) benchmarks/proxy_codec_pooling.py --codec DIR/flux-proxy-codec.safetensors \
        --json benchmarks/results/proxy-codec-pooling.json

Pyramid sampling runs early steps on the f x f average-pooled latent and lifts the result back. That is the latent
of a smaller image only if pool(E(x)) = E(pool(x)) for the codec E. For the proxy's linear 8x8-patch codec
(core/proxy/codec.py) it is not: each latent channel is one patch component, and averaging the components of
neighbouring patches is not the component of the averaged patch, except for the mean. Measured on photo crops
(the proxy's training distribution): the relative error |pool(E(x)) - E(pool(x))| / |E(pool(x))| and, per
channel, std(pool(E(x))) / std(E(pool(x))), which is what a per-level scale would have to undo.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _host import import_host, pack_module


def measure(codec, x: torch.Tensor, factors=(2, 4)) -> dict:
    z = codec.encode(x)
    out = {}
    for f in factors:
        pooled, small = F.avg_pool2d(z, f), codec.encode(F.avg_pool2d(x, f))
        out[str(f)] = {"relative_error": float((pooled - small).norm() / small.norm()),
                       "std_ratio": float(pooled.std() / small.std()),
                       "channel_std_ratio": (pooled.std(dim=(0, 2, 3)) / small.std(dim=(0, 2, 3))).tolist()}
    return out


def markdown(res: dict) -> str:
    lines = ["# Pooling the proxy's latent against the latent of the pooled image", "",
             f"Command: `{res['command']}`", "", f"Data: {res['samples']} photo crops of {res['size']} px "
             f"({res['photos']}). Codec: {res['codec']}.", "",
             "| pooling | relative error | overall std ratio | channel std ratios |", "|---|---|---|---|"]
    for f, r in res["factors"].items():
        ch = ", ".join(f"{v:.2f}" for v in r["channel_std_ratio"])
        lines.append(f"| {f}x{f} | {r['relative_error']:.3f} | {r['std_ratio']:.3f} | {ch} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", type=Path, required=True, help="a flux-proxy-codec.safetensors that proxies.py wrote")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    import_host(cpu=True)
    import proxy_train
    from safetensors.torch import load_file

    proxy = pack_module("core.proxy")
    extra = load_file(str(args.codec))
    codec = proxy.PatchPCACodec.from_state_dict({k[6:]: v for k, v in extra.items() if k.startswith("codec.")})
    photos, _, source = proxy_train.photographs(False)
    bank = proxy.ImageBank(photos, "cpu")
    x = bank.crops(args.samples, args.size, torch.Generator().manual_seed(11))
    res = {"command": "python3 benchmarks/proxy_codec_pooling.py " + " ".join(sys.argv[1:]), "size": args.size,
           "samples": args.samples, "photos": source, "codec": f"PatchPCACodec f{codec.factor} c{codec.channels}",
           "factors": measure(codec, x)}
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
