"""Training throughput of the DFM finetuning path on a Flux-size random-weight model (issue 8).

    python3 benchmarks/dfm_flux_train.py --json benchmarks/results/dfm-flux-train-h200.json   # on the H200
    $(python3 tools/host.py python) benchmarks/dfm_flux_train.py --tiny                                  # CPU smoke run

The host's Flux class at Flux.1-dev size (progressive_speed.build("flux"), bf16 random weights) converted to
2-level DFM, trained with DFMTrainer as PyraDFMTrain does: per-level layers fully, a rank-16 LoRA on the
double/single blocks, bf16 autocast, gradient checkpointing, guidance 3.5, 512 text tokens. Images of
1024x1024 are 128x128 latents. Reports images/s over the timed steps (after warm-up) and peak GPU memory.
--tiny: the demo tiny Flux at a 32x32 latent on the CPU (checks the path, not a figure).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _host import import_host, pack_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tiny", action="store_true", help="tiny Flux on the CPU: a smoke run")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--no-checkpointing", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    import_host(cpu=device.type == "cpu")
    arch_mod, network, train = (pack_module(f"core.dfm.{m}") for m in ("arch", "network", "train"))
    if args.tiny:
        demo = pack_module("host.demo_models")
        patcher = demo.build_tiny_model("flux")
        args.size, args.steps, args.warmup, args.rank = 256, 2, 1, 4
        tokens, ctx_dim = 8, 4096
    else:
        from progressive_speed import build

        patcher = build("flux", device)[0]
        tokens, ctx_dim = 512, 4096
    dit = patcher.model.diffusion_model.to(device)
    arch = arch_mod.adapter_for(dit)
    layers = network.DFMLayers(arch, 2).float().to(device)
    cfg = train.TrainConfig(levels=2, lr=1e-4, core="lora", rank=args.rank, bf16=device.type == "cuda",
                            checkpointing=not args.no_checkpointing)
    trainer = train.DFMTrainer(arch, layers, cfg, patcher.model.model_sampling.timestep,  # as PyraDFMTrain does
                               autograd_context=pack_module("host.rope").differentiable_rope)
    g = torch.Generator().manual_seed(0)
    latent = args.size // 8
    x = torch.randn(args.batch, 16, latent, latent, generator=g).to(device)
    ctx = torch.randn(args.batch, tokens, ctx_dim, generator=g).to(device, dit.dtype)
    y = torch.randn(args.batch, 768, generator=g).to(device, dit.dtype)
    guidance = torch.full((args.batch,), 3.5, device=device)
    for _ in range(args.warmup):
        trainer.step(x, ctx, y, guidance)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = torch.stack([trainer.step(x, ctx, y, guidance)[0] for _ in range(args.steps)])  # no sync per step
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    losses = losses.tolist()
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "config": {k: str(v) for k, v in vars(args).items()},
           "trainable_params": sum(p.numel() for p in trainer.params),
           "images_per_s": args.batch * args.steps / seconds, "s_per_step": seconds / args.steps,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
           "losses": losses}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    assert all(v == v for v in losses), "a NaN loss"


if __name__ == "__main__":
    main()
