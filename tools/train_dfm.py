"""Finetune a flow model into a DFM model from the command line; writes the checkpoint PyraDFMTrain writes.

    $(python3 tools/host.py python) tools/train_dfm.py --base models/diffusion_models/sd3.safetensors \
        --data my_latents/ --levels 2 --steps 2000 --batch 4 --lr 1e-4 --out output/dfm/my-dfm.safetensors
    $(python3 tools/host.py python) tools/train_dfm.py ... --data my_images/ --vae models/vae/sd3_vae.safetensors
    $(python3 tools/host.py python) tools/train_dfm.py ... --resume         # continues the run saved at --out

--data: .safetensors (key latent_tensor, as SaveLatent writes, else the first tensor), .latent or .pt latents
(C, H, W) or (N, C, H, W), or video latents (N, C, T, H, W) for Wan 2.1, all the same size; or images
(png/jpg/webp, all the same size) encoded with --vae.
--cond: a .safetensors with `context` (1, T, D) and optionally `pooled` (1, P); without it every latent trains
with an all-zero (empty-prompt) conditioning. The file (PyraDFMLoader reads it from models/dfm or output/dfm)
and <name>.optimizer.pt are written at --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from _host import import_host, pack_module  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
LATENT_SUFFIXES = {".safetensors", ".latent", ".pt"}


def _latent_file(path: Path) -> torch.Tensor:
    if path.suffix == ".pt":
        x = torch.load(path, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        x = tensors.get("latent_tensor", next(iter(tensors.values())))
    return x[None] if x.ndim == 3 else x


def load_data(folder: Path, vae_path: str | None) -> torch.Tensor:
    """(N, C, H, W) latents from a folder of latent files or of images (encoded with the VAE)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | LATENT_SUFFIXES)
    if not files:
        raise SystemExit(f"--data {folder}: no latents ({', '.join(sorted(LATENT_SUFFIXES))}) or images "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    latents = [_latent_file(p) for p in files if p.suffix.lower() in LATENT_SUFFIXES]
    if images:
        if vae_path is None:
            raise SystemExit(f"--data {folder} holds images: pass --vae to encode them")
        latents += _encode(images, vae_path)
    if len({tuple(x.shape[1:]) for x in latents}) > 1:
        raise SystemExit("--data: the latents (images) differ in size; crop or resize them to one size")
    return torch.cat([x.float() for x in latents])


def _encode(images: list[Path], vae_path: str) -> list[torch.Tensor]:
    import comfy.sd
    import comfy.utils
    import numpy as np
    from PIL import Image

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_path))
    out = []
    for path in images:
        with Image.open(path) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)[None]
        out.append(vae.encode(rgb).cpu())
    return out


def conditioning(path: str | None, dit) -> list:
    """A CONDITIONING list: the --cond file, or zeros of the model's context / pooled widths."""
    if path is not None:
        from safetensors.torch import load_file

        t = load_file(path)
        if "context" not in t:
            raise SystemExit(f"--cond {path}: needs a 'context' tensor (1, T, D) (and optionally 'pooled')")
        return [[t["context"], {"pooled_output": t.get("pooled")}]]
    extras = {}
    if getattr(dit, "y_embedder", None) is not None:  # SD3
        extras["pooled_output"] = torch.zeros(1, dit.y_embedder.mlp[0].in_features)
    if getattr(dit, "vector_in", None) is not None:  # Flux
        extras["pooled_output"] = torch.zeros(1, dit.vector_in.in_layer.in_features)
    text_in = next(m for m in (getattr(dit, "context_embedder", None), getattr(dit, "txt_in", None),
                               getattr(dit, "text_embedding", None)) if m is not None)
    width = (text_in[0] if isinstance(text_in, torch.nn.Sequential) else text_in).in_features
    return [[torch.zeros(1, 1, width), extras]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="diffusion model file (comfy.sd.load_diffusion_model)")
    ap.add_argument("--data", required=True, type=Path, help="folder of latents or images")
    ap.add_argument("--vae", help="VAE file to encode images in --data")
    ap.add_argument("--cond", help="conditioning .safetensors (context, pooled); default all-zero")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--core", choices=("lora", "frozen"), default="lora")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the core's blocks")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint path (.safetensors)")
    ap.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    ap.add_argument("--log-every", type=int, default=10, help="print a loss line every N steps")
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise SystemExit("--out must end in .safetensors")

    import_host(cpu=args.cpu)
    import comfy.sd

    dfm_model = pack_module("host.dfm")
    training = pack_module("host.dfm_training")
    config_cls = pack_module("core.dfm.train").TrainConfig
    latents = load_data(args.data, args.vae)
    base = comfy.sd.load_diffusion_model(args.base)
    model = dfm_model.convert(base, args.levels)
    positive = conditioning(args.cond, base.model.diffusion_model)
    config = config_cls(levels=args.levels, lr=args.lr, core=args.core, rank=args.rank,
                        checkpointing=args.checkpointing, bf16=args.bf16, seed=args.seed)
    print(f"train_dfm: {latents.shape[0]} latents {tuple(latents.shape[1:])}, {args.levels} levels, "
          f"{args.steps} steps", flush=True)

    def on_step(done: int, total: int, loss) -> None:
        if done % args.log_every == 0 or done == total:
            print(f"step {done}/{total} loss {float(loss):.5f}", flush=True)

    result = training.train_dfm(model, latents, positive, config, args.steps, args.batch, args.out, args.resume,
                                on_step)
    print(f"train_dfm: steps {result.start_step} -> {result.step} in {result.seconds:.1f} s; fixed-noise loss "
          f"{result.probe_before:.5f} -> {result.probe_after:.5f}; wrote {args.out} and "
          f"{training.optimizer_path(args.out).name}", flush=True)


if __name__ == "__main__":
    main()
