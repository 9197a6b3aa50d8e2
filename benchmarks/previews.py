"""Cost of one sampling preview: the host's TAESD previewer on the full latent vs on Pyra's coarse level (CPU).

    $(python3 tools/host.py python) benchmarks/previews.py --json benchmarks/results/previews-cpu.json

The host decodes the whole x0 latent for every preview and then shrinks the picture to --preview-size (512).
Pyra's coarse previews shrink the latent first (2x2 means) to at most 512/8 latent pixels. Both go through
the host's own TAESDPreviewerImpl (demo TAESD, random weights: the cost does not depend on them). Median of
`--repeats` calls per size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _host import comfyui_dir, import_host, pack_module, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1024,2048", help="image sides in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import_host(cpu=True)
    import comfy.taesd.taesd
    import comfy.utils
    import latent_preview

    previews = pack_module("host.previews")
    taesd = comfy.taesd.taesd.TAESD(latent_channels=4)
    path = comfyui_dir() / "models" / "vae" / "pyra-demo-taesd.safetensors"
    taesd.load_state_dict(comfy.utils.load_torch_file(str(path)), strict=False)
    previewer = latent_preview.TAESDPreviewerImpl(taesd)
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        x0 = torch.randn(1, 4, side // 8, side // 8)
        factor = previews.preview_factor(side // 8, side // 8, 512)
        coarse = previews.shrink(x0, factor)
        times = {}
        for name, latent in (("host", x0), ("pyra", coarse)):
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                with torch.no_grad():
                    previewer.decode_latent_to_preview_image("JPEG", latent)
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs)
        rows.append({"image_side": side, "latent_side": side // 8, "coarse_latent_side": coarse.shape[-1],
                     "host_seconds": round(times["host"], 4), "pyra_seconds": round(times["pyra"], 4),
                     "speedup": round(times["host"] / times["pyra"], 1)})
        print(rows[-1], flush=True)
    meta = {"device": "cpu", "threads": torch.get_num_threads(), "repeats": args.repeats,
            "command": "python benchmarks/previews.py " + " ".join(sys.argv[1:])}
    lines = ["# One TAESD sampling preview, host (full latent) vs Pyra coarse previews (CPU)", "",
             f"`{meta['command']}` ({meta['threads']} threads)", "",
             "| image | latent | coarse latent | host | Pyra | faster |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['image_side']}² | {r['latent_side']}² | {r['coarse_latent_side']}² | {r['host_seconds']:.3f} s "
              f"| {r['pyra_seconds']:.3f} s | {r['speedup']}x |" for r in rows]
    table = "\n".join(lines) + "\n"
    write_report(args.json, {"meta": meta, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
