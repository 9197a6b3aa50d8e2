"""The Flux-class proxy's VAE latent (`proxy_train.py --codec vae`, `proxies.py --codec vae`): train the host's
AutoencoderKL on the proxy's own crops, then serve it as the proxy's codec (issue 19).

    source benchmarks/device_env.sh; python3 benchmarks/proxies.py --out $OUT --codec vae --vae-seconds 150 \
        --train-seconds 240 ...                                                        # H100 / H200, one run
    $(python3 tools/host.py python) benchmarks/proxies.py --smoke --codec vae --out /tmp/proxies-vae   # CPU check

The patch codec's latent does not commute with pooling (benchmarks/proxy_codec_pooling.py: 0.91 relative error),
a briefly trained conv VAE's is much closer (benchmarks/proxy_vae_pooling.py: 0.22, but blurry). This trains one
on the GPU before the DiT and puts the DiT in its latent, so that the pyramid is judged on a latent like a real
model's.

VAE: comfy.ldm.models.autoencoder.AutoencoderKL (the host's class, the SD layout: 3 downsamplings to 1/8, a
mid-block attention, 16 latent channels, embed_dim 16), initialised as proxy_vae_pooling.py does. Two layouts:
- `small` (default): encoder and decoder at --vae-ch (64), ch_mult (1, 2, 2, 4), 1 res block per level
  (proxy_vae_pooling's layout at twice its width; 12.0M parameters at ch 64). The host's VAELoader cannot build it:
  comfy.sd.VAE's detection of an AutoencoderKL file fixes the encoder at ch 128, ch_mult (1, 2, 4, 4) and 2 res
  blocks (only the decoder's width and the latent channels are read from the file), so the load fails with size
  mismatches (recorded by the run); it is loaded through the host's own comfy.sd.VAE(sd, config=...) instead, and
  decodes through the same VAE.decode as VAEDecode.
- `stock`: that fixed encoder (34.3M parameters) and a decoder at --vae-ch with ch_mult (1, 2, 4, 4), 2 res blocks:
  the stock VAELoader loads it as it is (checked by the run), at about 3.5x the small layout's FLOPs per crop, in
  the VAE's training and in the DiT's (every DiT batch is encoded on the fly).
Data: the DiT's own banks (scikit-image photographs and dead leaves, half of each batch each), random crops at
--vae-size (256) px, --vae-batch (16) a step, with the same random scales and flips. Loss (kept simple, for
sharpness):
    L1(x_hat, x) + --vae-grad * L1 of the finite-difference gradients (d/dx and d/dy) + --vae-kl * KL
with x_hat decoded from a posterior sample, the KL to N(0, 1) averaged per latent element (1e-6: about 10x SD's
weight per element, enough to keep the latent bounded; no adversarial or perceptual term). The posterior's
log-variance starts at -8 (quant_conv's log-variance rows zeroed, bias -8), so that the decoder is not handed
unit-variance noise while the mean is still small. AdamW (--vae-lr 1e-3), 100 warm-up steps then cosine decay to
a tenth over --vae-seconds, bf16 autocast on the GPU, gradient clipping at 1. On 2 CPU cores (ch 32, 64 px crops,
batch 8, 300 steps) that recipe reached 16.6 dB on held-out photo crops against 16.2 dB at lr 4e-4 and a unit
initial variance: the VAE is step-limited at these budgets, which is why the batch is small.
Recorded after training: reconstruction PSNR (core.proxy.psnr, the posterior mean decoded, clamped to [-1, 1])
and per-band power of the reconstructions over the input's (8 bands, core.analytic.band_ratio: below 1 in the top
bands is blur) on held-out photo and dead-leaves crops; the pooling-commutation error of proxy_vae_pooling
(proxy_codec_pooling.measure: |pool(E(x)) - E(pool(x))| / |E(pool(x))|, 2x2 and 4x4) for the raw posterior mean
(what proxy-vae-pooling-cpu.md measured), the standardised latent the DiT sees, and a patch codec fitted to the
same crops (what proxy-codec-pooling.md measured).
Latent: the posterior mean, standardised per channel (mean and std over the crops the patch codec is fitted on,
in the DiT-time encoding precision), is the DiT's model space. The saved file flux-proxy-vae.safetensors (bf16,
the AutoencoderKL key layout) has that standardisation and Flux's latent format folded into quant_conv and
post_quant_conv: its VAE Encode output, through the Flux model's process_latent_in, is exactly the standardised
latent, so the checkpoint and this VAE work together in the host's stock graph (UNETLoader + VAELoader where the
layout allows). proxies.py decodes every evaluation through that file, loaded by the host.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _host import pack_module

VAE_FILE = "flux-proxy-vae.safetensors"
LATENT = 16
BASE = {"double_z": True, "z_channels": LATENT, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "attn_resolutions": [], "dropout": 0.0}
# comfy.sd.VAE's AutoencoderKL detection: the encoder it builds whatever the file holds (sd.py, "decoder.conv_in")
STOCK_ENCODER = {"ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2}
LOGVAR_INIT = -8.0   # the posterior's log-variance at the start (std 0.018): training starts near-deterministic
FULL = {"size": 256, "batch": 16, "ch": 64, "ch_mult": [1, 2, 2, 4], "eval_size": 256, "eval_samples": 32,
        "warmup": 100, "log_every": 25, "chunk_pixels": 2**24}
SMOKE = {"size": 32, "batch": 4, "ch": 32, "ch_mult": [1, 1, 2, 2], "eval_size": 64, "eval_samples": 4,
         "warmup": 2, "log_every": 1, "chunk_pixels": 2**20}


def spec_of(args) -> dict:
    spec = dict(SMOKE if args.smoke else FULL)
    for key in ("size", "batch", "ch"):
        value = getattr(args, f"vae_{key}")
        if value is not None:
            spec[key] = value
    return spec


def layout(kind: str, spec: dict) -> dict:
    """{'ddconfig', 'decoder_ddconfig' (or None), 'embed_dim'}: the AutoencoderKL constructor's arguments."""
    if kind == "stock":
        enc = {**BASE, **STOCK_ENCODER}
        dec = {**BASE, **STOCK_ENCODER, "ch": spec["ch"]}
        return {"ddconfig": enc, "decoder_ddconfig": None if dec == enc else dec, "embed_dim": LATENT}
    return {"ddconfig": {**BASE, "ch": spec["ch"], "ch_mult": list(spec["ch_mult"]), "num_res_blocks": 1},
            "decoder_ddconfig": None, "embed_dim": LATENT}


def build(config: dict, seed: int):
    """proxy_vae_pooling's initialisation, the log-variance rows of quant_conv then set to LOGVAR_INIT."""
    import proxy_vae_pooling

    model = proxy_vae_pooling.build(seed, config["ddconfig"], config["decoder_ddconfig"])
    with torch.no_grad():
        model.quant_conv.weight[LATENT:] = 0
        model.quant_conv.bias[LATENT:] = LOGVAR_INIT
    return model


def _autocast(device):
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


class VAECodec:
    """A trained AutoencoderKL as the proxy's codec: encode -> the posterior mean standardised per channel
    ((mean - shift) / scale, the DiT's model space), decode -> pixels; the PatchPCACodec interface (encode, decode,
    to, channels, factor). Batches are cut to `chunk_pixels` input pixels; bf16 autocast on the GPU."""

    factor = 8

    def __init__(self, model, shift: torch.Tensor, scale: torch.Tensor, chunk_pixels: int = 2**24):
        self.model, self.shift, self.scale, self.chunk_pixels = model, shift, scale, chunk_pixels

    @property
    def channels(self) -> int:
        return self.shift.numel()

    def to(self, device) -> VAECodec:
        return VAECodec(self.model.to(device), self.shift.to(device), self.scale.to(device), self.chunk_pixels)

    def _chunks(self, x: torch.Tensor, pixels: int) -> list[torch.Tensor]:
        n = max(1, self.chunk_pixels // max(1, pixels))
        return [x[i: i + n] for i in range(0, x.shape[0], n)]

    @torch.no_grad()
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> the posterior mean (B, 16, H / 8, W / 8), unscaled, float32."""
        out = []
        for part in self._chunks(x, x.shape[-2] * x.shape[-1]):
            with _autocast(part.device):
                moments = self.model.quant_conv(self.model.encoder(part))
            out.append(moments.float().chunk(2, dim=1)[0])
        return torch.cat(out)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.shift.view(1, -1, 1, 1)) / self.scale.view(1, -1, 1, 1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        m = z.float() * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)
        out = []
        for part in self._chunks(m, 64 * m.shape[-2] * m.shape[-1]):
            with _autocast(part.device):
                out.append(self.model.decode(part).float())
        return torch.cat(out)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


def train_vae(model, banks: tuple, args, spec: dict, device) -> dict:
    """Train `model` (on `device`) for --vae-seconds (smoke: --vae-max-steps) on half-and-half crops of `banks`
    (photo bank, dead-leaves bank); returns the run's record with its loss log."""
    import proxy_train

    photos, leaves = banks
    gen = torch.Generator(device=device).manual_seed(args.seed + 101)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    budget = None if args.smoke else args.vae_seconds
    size, batch, half = spec["size"], spec["batch"], max(1, spec["batch"] // 2)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick (restored below)
    log, step, sums = [], 0, None
    t0 = time.perf_counter()
    try:
        while step < args.vae_max_steps and (budget is None or time.perf_counter() - t0 < budget):
            progress = (time.perf_counter() - t0) / budget if budget else step / args.vae_max_steps
            for group in opt.param_groups:
                group["lr"] = proxy_train.lr_at(progress, step, args.vae_lr, spec["warmup"])
            with torch.no_grad():
                x = torch.cat([photos.crops(half, size, gen), leaves.crops(max(1, batch - half), size, gen)])
            with _autocast(device):
                moments = model.quant_conv(model.encoder(x))
            mean, logvar = moments.float().chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            z = mean + torch.randn(mean.shape, generator=gen, device=device) * (0.5 * logvar).exp()
            with _autocast(device):
                rec = model.decoder(model.post_quant_conv(z))
            rec = rec.float()
            terms = {"l1": (rec - x).abs().mean(), "grad_l1": _grad_l1(rec, x),
                     "kl": 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()}
            loss = terms["l1"] + args.vae_grad * terms["grad_l1"] + args.vae_kl * terms["kl"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                row = torch.stack([loss.detach(), *(t.detach() for t in terms.values()),
                                   F.mse_loss(rec.detach(), x)])
                sums = row if sums is None else sums + row
            step += 1
            if step % spec["log_every"] == 0:
                vals = (sums / spec["log_every"]).tolist()
                sums = None
                log.append({"step": step, "seconds": round(time.perf_counter() - t0, 2), "loss": vals[0],
                            **dict(zip(["l1", "grad_l1", "kl"], vals[1:4], strict=True)),
                            "psnr_db": 10 * math.log10(4 / max(vals[4], 1e-12))})
                if step % (spec["log_every"] * 20) == 0:
                    print(f"vae step {step} {log[-1]['seconds']:.0f}s loss {vals[0]:.4f} "
                          f"(train PSNR {log[-1]['psnr_db']:.1f} dB)", flush=True)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    return {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1), "images_seen": step * batch,
            "log": log}


def evaluate(codec: VAECodec, banks: tuple, spec: dict, seed: int, device) -> dict:
    """Held-out reconstruction (PSNR, bands over the input's) and pooling commutation, beside a patch codec fitted
    to the same crops."""
    import proxy_codec_pooling
    import proxy_vae_pooling
    import pyramid_inconsistent as pi

    proxy, analytic = pack_module("core.proxy"), pack_module("core.analytic")
    prior = analytic.NaturalImagePrior()
    photos, leaves = banks
    gen = torch.Generator(device=device).manual_seed(seed + 11)
    n, size = spec["eval_samples"], spec["eval_size"]
    held = {"photo": photos.crops(n, size, gen), "dead_leaves": leaves.crops(n, size, gen)}
    out = {"eval_size": size, "eval_samples": n, "reconstruction_psnr_db": {}, "bands_vs_input": {},
           "worst_band_vs_input": {}}
    for name, x in held.items():
        rec = codec.decode(codec.encode(x)).clamp(-1, 1)
        out["reconstruction_psnr_db"][name] = float(proxy.psnr(rec, x).mean())
        out["bands_vs_input"][name] = pi.band_ratios(analytic, prior, rec, x)
        out["worst_band_vs_input"][name] = pi.worst(out["bands_vs_input"][name])
    x = held["photo"]
    patch = proxy.PatchPCACodec.fit(photos.crops(64, size, torch.Generator(device=device).manual_seed(seed + 12)))
    patch = patch.to(device)
    with torch.no_grad():
        out["pooling"] = {"raw_mean": proxy_codec_pooling.measure(proxy_vae_pooling.MeanEncoder(codec.model), x),
                          "standardised": proxy_codec_pooling.measure(codec, x),
                          "patch_codec_same_crops": proxy_codec_pooling.measure(patch, x)}
    out["patch_codec_same_crops_psnr_db"] = float(proxy.psnr(patch.decode(patch.encode(x)).clamp(-1, 1), x).mean())
    return out


def standardisation(codec: VAECodec, fit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the posterior mean over `fit` (the patch codec's fitting crops)."""
    m = codec.raw(fit).double()
    return m.mean(dim=(0, 2, 3)).float(), m.std(dim=(0, 2, 3)).float()


def folded_state_dict(model, shift: torch.Tensor, scale: torch.Tensor, latent_format,
                      dtype: torch.dtype = torch.bfloat16) -> dict:
    """The AutoencoderKL state dict with the standardisation and `latent_format` (Flux's) folded in: its posterior
    mean m' = a m + b with a = 1 / (scale * scale_factor), b = shift_factor - shift * a, so that
    latent_format.process_in(m') = (m - shift) / scale (the DiT's model space); post_quant_conv takes m' back."""
    sd = {k: v.detach().to("cpu", torch.float64).clone() for k, v in model.state_dict().items()}
    a = 1.0 / (scale.double().cpu() * latent_format.scale_factor)
    b = latent_format.shift_factor - shift.double().cpu() * a
    w, bias = sd["quant_conv.weight"], sd["quant_conv.bias"]
    c = a.numel()
    w[:c] *= a.view(-1, 1, 1, 1)
    bias[:c] = bias[:c] * a + b
    bias[c:] += 2 * torch.log(a)   # the log-variance of m' = a m
    p, pb = sd["post_quant_conv.weight"], sd["post_quant_conv.bias"]
    sd["post_quant_conv.bias"] = pb - p[:, :, 0, 0] @ (b / a)
    sd["post_quant_conv.weight"] = p / a.view(1, -1, 1, 1)
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def train_codec(args, banks: tuple, fit: torch.Tensor, device, out: Path) -> tuple[VAECodec, dict]:
    """Train the VAE, measure it, standardise its latent on `fit`, save the folded file under `out`; return the
    codec the DiT trains in and its record (for proxy_train's record)."""
    import comfy.latent_formats
    from safetensors.torch import save_file

    spec = spec_of(args)
    config = layout(args.vae_layout, spec)
    model = build(config, args.seed).to(device).train().requires_grad_(True)
    training = train_vae(model, banks, args, spec, device)
    model.eval().requires_grad_(False)
    codec = VAECodec(model, torch.zeros(LATENT, device=device), torch.ones(LATENT, device=device),
                     spec["chunk_pixels"])
    shift, scale = standardisation(codec, fit)
    codec = VAECodec(model, shift, scale, spec["chunk_pixels"])
    t0 = time.perf_counter()
    measured = evaluate(codec, banks, spec, args.seed, device)
    fmt = comfy.latent_formats.Flux()
    path = out / VAE_FILE
    save_file(folded_state_dict(model, shift, scale, fmt), str(path),
              metadata={"pyra_proxy": "flux-vae", "config": json.dumps(config), "steps": str(training["steps"])})
    params = sum(p.numel() for p in model.parameters())
    record = {"kind": f"AutoencoderKL f8 c{LATENT} ({args.vae_layout}, ch {spec['ch']})", "layout": args.vae_layout,
              "config": config, "parameters": params,
              "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
              "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
              "crop_size": spec["size"], "batch": spec["batch"], "lr": args.vae_lr, "logvar_init": LOGVAR_INIT,
              "loss": f"L1 + {args.vae_grad:g} * gradient L1 + {args.vae_kl:g} * KL (per element)",
              "data": "the DiT's photo and dead-leaves banks, half of each batch each",
              **training, **measured, "eval_seconds": round(time.perf_counter() - t0, 1),
              "standardisation": {"shift": shift.tolist(), "scale": scale.tolist(),
                                  "measured_on": f"{fit.shape[0]} crops of {fit.shape[-1]} px (the patch codec's)"},
              "latent_format_folded": {"scale_factor": fmt.scale_factor, "shift_factor": fmt.shift_factor},
              "file": path.name, "file_mb": round(path.stat().st_size / 2**20, 2)}
    print(f"vae: {training['steps']} steps / {training['train_seconds']} s, held-out PSNR "
          + ", ".join(f"{k} {v:.2f} dB" for k, v in measured["reconstruction_psnr_db"].items())
          + "; pooling error (standardised) "
          + ", ".join(f"{f}x{f} {r['relative_error']:.3f}" for f, r in measured["pooling"]["standardised"].items()),
          flush=True)
    return codec, record


def codec_extras(codec: VAECodec, config: dict) -> tuple[dict, dict]:
    """What flux-proxy-codec.safetensors holds beside the conditioning in VAE mode: (tensors, metadata)."""
    return ({"vae_codec.shift": codec.shift.cpu().contiguous(), "vae_codec.scale": codec.scale.cpu().contiguous()},
            {"codec": "vae", "vae_file": VAE_FILE, "vae_config": json.dumps(config)})


class HostVAE:
    """The saved VAE as the host loaded it (a comfy.sd.VAE): decode_latent(latent) is VAEDecode's path
    (vae.decode of a latent in VAE space, as a sampler returns it) as (B, 3, H, W) in [-1, 1]; encode_latent the
    VAEEncode path back to a VAE-space latent."""

    def __init__(self, vae):
        self.vae = vae

    def to(self, device) -> HostVAE:
        return self

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent).float().movedim(-1, 1) * 2 - 1

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(((x.clamp(-1, 1) + 1) / 2).movedim(1, -1).cpu()).float()


def load(path: Path, config: dict) -> tuple[HostVAE, dict]:
    """The VAE file through the host: the stock VAELoader's path (comfy.utils.load_torch_file, comfy.sd.VAE(sd,
    metadata)) where its detection can build the layout, else comfy.sd.VAE(sd, config=...) with the file's layout
    (the reason recorded); the largest difference of the loaded weights to the file."""
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    record = {"file": path.name}
    try:
        vae = comfy.sd.VAE(sd=dict(sd), metadata=metadata)
        vae.throw_exception_if_invalid()
        record["loader"] = "stock VAELoader path: comfy.sd.VAE(sd, metadata)"
    except Exception as e:  # the small layout: the host's detection builds a different encoder
        first = str(e).strip().splitlines()
        record["stock_vaeloader"] = f"fails: {type(e).__name__}: {' '.join(first[:3])[:400]}"
        vae = comfy.sd.VAE(sd=dict(sd), config={"params": {k: v for k, v in config.items() if v is not None}})
        record["loader"] = "comfy.sd.VAE(sd, config=the file's layout) (the stock VAELoader cannot build it)"
    loaded = vae.first_stage_model.state_dict()
    try:
        record["max_abs_diff_to_file"] = max(float((loaded[k].float().cpu() - v.float()).abs().max())
                                             for k, v in sd.items() if k in loaded)
    except Exception as e:  # weights a memory mode keeps elsewhere: recorded, not fatal
        record["max_abs_diff_to_file"] = f"not compared: {type(e).__name__}: {e}"
    record["keys_missing_after_load"] = sorted(set(sd) - set(loaded))[:5]
    record["vae_dtype"] = str(vae.vae_dtype)
    record["class"] = type(vae.first_stage_model).__name__
    return HostVAE(vae), record


def file_check(vae: HostVAE, latent_format, x: torch.Tensor) -> dict:
    """The loaded file end to end on held-out photo crops `x`: VAEEncode -> VAEDecode PSNR, and the std of the
    encoded latent through the model's process_latent_in (about 1 per channel where the fold is right)."""
    proxy = pack_module("core.proxy")
    latent = vae.encode_latent(x)
    rec = vae.decode_latent(latent).to(x.device)
    z = latent_format.process_in(latent)
    return {"psnr_db": float(proxy.psnr(rec.clamp(-1, 1), x).mean()), "crops": x.shape[0], "size": x.shape[-1],
            "model_space_channel_std": [round(float(s), 3) for s in z.std(dim=(0, 2, 3))],
            "model_space_channel_mean": [round(float(s), 3) for s in z.mean(dim=(0, 2, 3))]}


def add_args(ap) -> None:
    ap.add_argument("--codec", choices=("patch", "vae"), default="patch",
                    help="the proxy's latent: the PCA patch codec (default) or a VAE trained first (proxy_vae.py)")
    ap.add_argument("--vae-seconds", type=float, default=150.0, help="--codec vae: the VAE's wall-clock budget")
    ap.add_argument("--vae-max-steps", type=int, default=None, help="--codec vae: stop after this many (smoke: 3)")
    ap.add_argument("--vae-layout", choices=("small", "stock"), default="small",
                    help="small: ch_mult 1,2,2,4, 1 res block, not loadable by VAELoader; stock: VAELoader's layout")
    ap.add_argument("--vae-ch", type=int, default=None, help="--codec vae: width, a multiple of 32 (64; smoke 32)")
    ap.add_argument("--vae-size", type=int, default=None, help="--codec vae: training crop size (256; smoke 32)")
    ap.add_argument("--vae-batch", type=int, default=None, help="--codec vae: crops per step (16; smoke 4)")
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-6, help="KL weight per latent element")
    ap.add_argument("--vae-grad", type=float, default=1.0, help="weight of the image-gradient L1 term")
    ap.add_argument("--vae-return", action="store_true",
                    help="keep the VAE file in --out (split by --split-mb); default: moved off --out after loading")
