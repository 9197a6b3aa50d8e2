"""Train a Flux-class proxy model (the host's own Flux class, small) on photographs and dead-leaves images (issue 19).

    source benchmarks/device_env.sh; python3 benchmarks/proxy_train.py --out OUT --train-seconds 300   # H200
    $(python3 tools/host.py python) benchmarks/proxy_train.py --smoke --out /tmp/proxy                # CPU smoke

Model: comfy.ldm.flux.model.Flux through the host's `Flux` model config (guidance-embedding, flow, Flux latent
format), at hidden 256 (2 heads of 128: the host's file detection fixes head dim 128, axes (16, 56, 56), 16 latent
channels, patch 2), 3 double and 6 single blocks, 64-dim text and pooled inputs. The saved file is the diffusion
model's state dict in bf16, the layout the stock UNETLoader detects as Flux (benchmarks/proxies.py loads it through
comfy.sd.load_diffusion_model and records the detected class).
Latent space: core/proxy/codec.py's PatchPCACodec, 8x8 RGB patches to 16 standardised channels (the Flux VAE's
f8 / 16-channel geometry, fitted on the training data in seconds); no VAE is trained. `--codec vae` trains the
host's AutoencoderKL first (--vae-seconds, benchmarks/proxy_vae.py) and puts the DiT in its standardised
posterior-mean latent instead (every batch encoded on the fly); then flux-proxy-vae.safetensors is written too.
Data: scikit-image's bundled photographs (those inside its wheel; most are 512 px, so 1024 px crops of them are
upscaled) and 192 dead-leaves images rendered at 1024 px (core/analytic/dead_leaves.py), half of each batch each,
random crops (side 0.25-1 of the shorter side, log-uniform), flips, at 128, 256, 512 and 1024 pixels with a
constant token budget per step; each kind has its own seeded "prompt" (one 64-dim text token and a pooled
vector), saved beside the codec. Objective: rectified flow with logit-normal timesteps shifted by the token count
as Flux's rule does; AdamW, warm-up then cosine decay over the wall-clock budget, EMA of the weights (saved).
Outputs under --out: flux-proxy.safetensors, flux-proxy-codec.safetensors, proxy-loss.json, proxy-loss.png.
--smoke: a 1-head, 1+1-block model at 32 and 64 pixels for a few steps on the CPU; without scikit-image the
photographs are replaced by a synthetic set (recorded as such): the path is checked, no figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import proxy_vae
import torch
import torch.nn.functional as F
from _host import import_host, pack_module

SKIMAGE_PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "coins", "moon", "grass", "gravel", "brick", "cell",
                  "stereo_motorcycle"]  # files inside the wheel (no download)
FULL = {"hidden_size": 256, "depth": 3, "depth_single_blocks": 6, "resolutions": {128: 0.15, 256: 0.35, 512: 0.35,
                                                                                   1024: 0.15},
        "token_budget": 32768, "dead_leaves": 192, "dead_leaves_size": 1024}
SMOKE = {"hidden_size": 128, "depth": 1, "depth_single_blocks": 1, "resolutions": {32: 0.5, 64: 0.5},
         "token_budget": 256, "dead_leaves": 8, "dead_leaves_size": 64}
COND_DIM = 64
CLASSES = ("photo", "dead_leaves")


def unet_config(hidden: int, depth: int, single: int) -> dict:
    """The Flux.1 unet_config the host's detection reads back from the file (comfy/model_detection.py)."""
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": COND_DIM,
            "context_in_dim": COND_DIM, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": hidden // 128,
            "depth": depth, "depth_single_blocks": single, "axes_dim": [16, 56, 56], "theta": 10000,
            "patch_size": 2, "qkv_bias": True, "guidance_embed": True}


def build_model(config: dict):
    """The host's Flux BaseModel (fp32 weights), initialised: N(0, 0.02) weights, zero biases, unit norms, and
    zero modulation and output layers (adaLN-zero: every block starts as the identity, the output as 0)."""
    import comfy.supported_models

    demo, features = pack_module("host.demo_models"), pack_module("host.features")
    model = demo.model_from_config(comfy.supported_models.Flux(features.flux_unet_config(config)))
    dm = model.diffusion_model
    demo.init_random_(dm, seed=0)
    with torch.no_grad():
        for name, mod in dm.named_modules():
            if name.endswith(("mod.lin", "modulation.lin", "adaLN_modulation.1")) or name == "final_layer.linear":
                for p in mod.parameters():
                    p.zero_()
    return model


def photographs(smoke: bool) -> tuple[list[torch.Tensor], list[str], str]:
    """scikit-image's bundled photographs as (3, H, W) in [-1, 1] (grey ones as three equal channels), their
    names, and the source; without scikit-image (smoke runs on the CPU machine) a synthetic set."""
    try:
        from skimage import data
    except ImportError:
        if not smoke:
            print("WARNING: scikit-image is missing: training on the synthetic stand-in photographs", flush=True)
        return synthetic_photos(), [], "synthetic stand-in (scikit-image not installed)"
    images, names = [], []
    for name in SKIMAGE_PHOTOS:
        try:
            a = getattr(data, name)()
        except Exception as e:  # those that need a download, or are absent from this version
            print(f"skimage.data.{name}: skipped ({type(e).__name__})", flush=True)
            continue
        a = a[0] if isinstance(a, tuple) else a
        t = torch.as_tensor(a.astype("float32"))
        t = t / (255.0 if a.dtype.kind == "u" and a.max() > 1 else max(float(t.max()), 1e-6))
        t = t[..., :3].permute(2, 0, 1) if t.ndim == 3 else t[None].expand(3, -1, -1)
        if min(t.shape[-2:]) >= 128:
            images.append(t.contiguous() * 2 - 1)
            names.append(name)
    return images, names, "scikit-image bundled photographs"


def synthetic_photos(n: int = 6, size: int = 96) -> list[torch.Tensor]:
    """Smoke-test stand-in: smooth colour fields with a 1/f^2 power spectrum (seeded)."""
    g = torch.Generator().manual_seed(7)
    f = torch.fft.fftfreq(size)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt().clamp_min(1 / size)
    spec = torch.randn(n, 3, size, size, generator=g) / radius
    img = torch.fft.ifft2(spec).real
    img = img / img.flatten(1).std(1)[:, None, None, None] * 0.4
    return list(img.clamp(-1, 1))


def class_conditioning(dim: int = COND_DIM) -> dict[str, torch.Tensor]:
    """Per class: one text token (1, dim) and a pooled vector (dim), seeded, unit-norm rows."""
    g = torch.Generator().manual_seed(19)
    ctx = F.normalize(torch.randn(len(CLASSES), 1, dim, generator=g), dim=-1) * dim**0.5
    pooled = F.normalize(torch.randn(len(CLASSES), dim, generator=g), dim=-1) * dim**0.5
    return {"context": ctx, "pooled": pooled}


def lr_at(progress: float, step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(args, device) -> dict:
    """Train and write the checkpoint, codec and loss curve under args.out; return the run's record."""
    proxy = pack_module("core.proxy")
    leaves_mod = pack_module("core.analytic.dead_leaves")
    spec = dict(SMOKE if args.smoke else FULL)
    for key, value in (("hidden_size", args.hidden), ("depth", args.depth), ("depth_single_blocks", args.single)):
        if value is not None:
            spec[key] = value
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    g = torch.Generator(device=device).manual_seed(args.seed)
    gcpu = torch.Generator().manual_seed(args.seed)
    photos, names, source = photographs(args.smoke)
    photo_bank = proxy.ImageBank(photos, device)
    leaves = [leaves_mod.dead_leaves(1, spec["dead_leaves_size"], g)[0] for _ in range(spec["dead_leaves"])]
    leaf_bank = proxy.ImageBank(leaves, device)
    fit_size = max(spec["resolutions"]) // 2
    fit = torch.cat([photo_bank.crops(64, fit_size, g), leaf_bank.crops(64, fit_size, g)])
    vae_record = None
    if args.codec == "vae":  # a VAE trained first (proxy_vae.py); the patch codec's fitting crops standardise it
        t_vae = time.perf_counter()
        codec, vae_record = proxy_vae.train_codec(args, (photo_bank, leaf_bank), fit, device, out)
        vae_record["seconds_total"] = round(time.perf_counter() - t_vae, 1)
        codec_psnr = vae_record["reconstruction_psnr_db"]
    else:
        codec = proxy.PatchPCACodec.fit(fit, 8, 16).to(device)
        recon = codec.decode(codec.encode(fit))
        codec_psnr = {k: float(proxy.psnr(recon[sl], fit[sl]).mean()) for k, sl in
                      (("photo", slice(0, 64)), ("dead_leaves", slice(64, None)))}
    config = unet_config(spec["hidden_size"], spec["depth"], spec["depth_single_blocks"])
    model = build_model(config)
    dm = model.diffusion_model.to(device).train().requires_grad_(True)
    params = list(dm.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    cond = {k: v.to(device) for k, v in class_conditioning().items()}
    batches = proxy.multires_batches(spec["resolutions"], spec["token_budget"], 1 / 256, gcpu)
    rope = pack_module("host.rope").differentiable_rope
    saved_on_write = pack_module("core.saved_on_write").copy_saved_on_write  # the host's blocks add in place
    bf16 = device.type == "cuda"
    log, step, pending, seen = [], 0, [], 0
    data_seconds = time.perf_counter() - t_start
    if vae_record is not None:
        data_seconds -= vae_record["seconds_total"]
    t0 = time.perf_counter()
    budget = args.train_seconds if not args.smoke else None
    while (step < args.max_steps) and (budget is None or time.perf_counter() - t0 < budget):
        progress = (time.perf_counter() - t0) / budget if budget else step / args.max_steps
        for group in opt.param_groups:
            group["lr"] = lr_at(progress, step, args.lr, args.warmup)
        size, batch = next(batches)
        half = max(1, batch // 2)
        with torch.no_grad():
            x = torch.cat([photo_bank.crops(half, size, g), leaf_bank.crops(max(1, batch - half), size, g)])
            cls = torch.tensor([0] * half + [1] * (x.shape[0] - half), device=device)
            z0 = codec.encode(x)
            tokens = (size // 16) ** 2
            t = proxy.sample_timesteps(x.shape[0], tokens, g, device)
            xt, v = proxy.flow_targets(z0, torch.randn(z0.shape, generator=g, device=device), t)
        guidance = torch.full((x.shape[0],), 3.5, device=device)
        with rope(), saved_on_write(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            pred = dm(xt, t, context=cond["context"][cls], y=cond["pooled"][cls], guidance=guidance,
                      transformer_options={})
        loss = F.mse_loss(pred.float(), v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - min(args.ema, (1 + step) / (10 + step)))
        pending.append((size, loss.detach()))
        seen += x.shape[0]
        step += 1
        if step % args.log_every == 0 or not (step < args.max_steps):
            elapsed = time.perf_counter() - t0
            for s, ls in pending:
                log.append({"step": len(log) + 1, "size": s, "loss": float(ls)})
            log[-1]["seconds"] = round(elapsed, 2)
            pending.clear()
            if step % (args.log_every * 20) == 0:
                print(f"step {step} {elapsed:.0f}s loss {log[-1]['loss']:.4f} (size {size})", flush=True)
    for s, ls in pending:
        log.append({"step": len(log) + 1, "size": s, "loss": float(ls)})
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    ckpt = out / "flux-proxy.safetensors"
    codec_file = out / "flux-proxy-codec.safetensors"
    save_checkpoint(dm, ckpt, config, step)
    from safetensors.torch import save_file

    conds = {f"cond.{k}": v.cpu().contiguous() for k, v in class_conditioning().items()}
    if vae_record is None:
        save_file({**{f"codec.{k}": v.cpu() for k, v in codec.state_dict().items()}, **conds}, str(codec_file),
                  metadata={"classes": json.dumps(CLASSES)})
    else:  # the standardisation (also folded into the VAE file) and where the VAE is
        tensors, meta = proxy_vae.codec_extras(codec, vae_record["config"])
        save_file({**tensors, **conds}, str(codec_file), metadata={"classes": json.dumps(CLASSES), **meta})
    record = {"config": config, "parameters": sum(p.numel() for p in params), "steps": step,
              "train_seconds": round(train_seconds, 1), "data_seconds": round(data_seconds, 1),
              "images_seen": seen, "resolutions": list(spec["resolutions"]), "token_budget": spec["token_budget"],
              "lr": args.lr, "ema": args.ema, "photos": {"source": source, "names": names, "count": len(photos)},
              "dead_leaves": {"count": len(leaves), "size": spec["dead_leaves_size"]},
              "codec": {"kind": "PatchPCACodec f8 c16", "reconstruction_psnr_db": codec_psnr},
              "checkpoint": ckpt.name, "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 2),
              "codec_file": codec_file.name, "device": str(device)}
    if vae_record is not None:
        record["codec"] = {"kind": vae_record["kind"], "reconstruction_psnr_db": codec_psnr,
                           "held_out": f"{vae_record['eval_samples']} crops of {vae_record['eval_size']} px each"}
        record["vae"] = vae_record
        record["train_seconds_total"] = round(time.perf_counter() - t_start, 1)
    write_loss_curve(out, log, record)
    return record


def save_checkpoint(dm, path: Path, config: dict, steps: int) -> None:
    """The diffusion model's state dict in bf16, as Flux files ship (no prefix: a diffusion_models file)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in dm.state_dict().items()}
    save_file(sd, str(path), metadata={"pyra_proxy": "flux", "config": json.dumps(config), "steps": str(steps)})


def smoothed(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def write_loss_curve(out: Path, log: list[dict], record: dict) -> None:
    """proxy-loss.json (every step's loss and size) and proxy-loss.png (running mean per size) where matplotlib is."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        record["loss_png"] = "matplotlib missing"
        (out / "proxy-loss.json").write_text(json.dumps({"record": record, "log": log}) + "\n")
        return
    vae_log = record.get("vae", {}).get("log")
    if vae_log:  # --codec vae: the VAE's curve beside the DiT's
        fig, (ax, vax) = plt.subplots(1, 2, figsize=(12, 4))
        vax.plot([e["step"] for e in vae_log], [e["l1"] for e in vae_log], label="L1", lw=1)
        vax.plot([e["step"] for e in vae_log], [e["grad_l1"] for e in vae_log], label="gradient L1", lw=1)
        vax.set(xlabel="step", ylabel=f"mean of {vae_log[0]['step']} steps", yscale="log",
                title=f"VAE ({record['vae']['kind']}), {record['vae']['steps']} steps")
        vax.legend()
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    for size in sorted({e["size"] for e in log}):
        rows = [e for e in log if e["size"] == size]
        ax.plot([e["step"] for e in rows], smoothed([e["loss"] for e in rows], 50), label=f"{size} px", lw=1)
    ax.set(xlabel="step", ylabel="flow-matching loss (running mean of 50)", yscale="log",
           title=f"Flux-class proxy, {record['parameters'] / 1e6:.1f}M parameters, {record['steps']} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "proxy-loss.png", dpi=110)
    plt.close(fig)
    record["loss_png"] = "proxy-loss.png"
    (out / "proxy-loss.json").write_text(json.dumps({"record": record, "log": log}) + "\n")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes on the CPU: checks the path")
    ap.add_argument("--train-seconds", type=float, default=300.0, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke: 12)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--hidden", type=int, default=None, help="width (default 256; smoke 128)")
    ap.add_argument("--depth", type=int, default=None, help="double blocks (default 3; Flux.1 has 19)")
    ap.add_argument("--single", type=int, default=None, help="single blocks (default 6; Flux.1 has 38)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    proxy_vae.add_args(ap)


def finish_args(args) -> None:
    if args.max_steps is None:
        args.max_steps = 12 if args.smoke else 10**9
    if args.vae_max_steps is None:
        args.vae_max_steps = 3 if args.smoke else 10**9
    if args.smoke:
        args.warmup, args.log_every = 2, 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    args = ap.parse_args()
    finish_args(args)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    import_host(cpu=device.type == "cpu")
    print(json.dumps(train(args, device), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
