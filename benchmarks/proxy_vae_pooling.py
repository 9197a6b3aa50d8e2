"""Does a trained convolutional VAE's latent commute with pooling better than the proxy's patch codec?

    $(python3 tools/host.py python) benchmarks/proxy_vae_pooling.py --seconds 240 \
        --json benchmarks/results/proxy-vae-pooling-cpu.json

The pyramid on the trained proxy is far from direct sampling, and part of the reason is measured
(benchmarks/proxy_codec_pooling.py): pooling the patch codec's latent is far from the latent of the pooled image.
Real models sit in the latent of a convolutional KL VAE. This trains one of the host's own class (AutoencoderKL, the
SD layout at a small width: 3 downsamplings to 1/8, 16 latent channels) from scratch on the same photo crops,
reconstruction loss plus a small KL term, for --seconds on this machine, and measures its posterior mean the same
way: the relative error |pool(E(x)) - E(pool(x))| / |E(pool(x))| and the std ratios, beside the patch codec fitted
to the same crops. One briefly trained VAE is not SD's; it shows whether a convolutional latent is closer to
commuting, not how close SD's is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _host import import_host, pack_module

LAYOUT = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
          "ch_mult": [1, 2, 2, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


class MeanEncoder:
    """encode(x) -> the posterior mean of a host AutoencoderKL (what its VAE Encode returns, unscaled)."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def encode(self, x):
        h = self.model.quant_conv(self.model.encoder(x))
        return h.chunk(2, dim=1)[0]


def build(seed: int, layout: dict = LAYOUT, decoder_layout: dict | None = None):
    """The host's AutoencoderKL at `layout` (the decoder at `decoder_layout` where given), initialised here."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(seed)
    extra = {} if decoder_layout is None else {"decoder_ddconfig": decoder_layout}
    model = AutoencoderKL(ddconfig=layout, embed_dim=16, **extra)
    for m in model.modules():   # the host's ops skip initialisation (weights are loaded from files)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.GroupNorm):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def train(model, bank, seconds: float, size: int, batch: int, kl: float, seed: int) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4 * 4, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    t0, step, log = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < seconds:
        x = bank.crops(batch, size, g)
        moments = model.quant_conv(model.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = model.decode(z)
        loss_rec = F.mse_loss(rec, x)
        loss_kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
        loss = loss_rec + kl * loss_kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            log.append({"step": step, "seconds": round(time.perf_counter() - t0, 1), "mse": loss_rec.item(),
                        "kl": loss_kl.item()})
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "log": log}


def psnr(a, b) -> float:   # images in [-1, 1]: peak-to-peak 2
    return float(10 * torch.log10(4 / F.mse_loss(a, b)))


def markdown(res: dict) -> str:
    vae, codec, training = res["vae"], res["codec"], res["vae"]["training"]
    lines = ["# Pooling a trained conv VAE's latent against the latent of the pooled image", "",
             f"Command: `{res['command']}`", "",
             f"VAE: the host's AutoencoderKL, {vae['parameters'] / 1e6:.2f}M parameters ({vae['layout']}), trained "
             f"{training['steps']} steps / {training['seconds']} s on {res['train_size']} px crops of "
             f"{res['photos']} ({res['device']}); reconstruction {vae['reconstruction_psnr_db']:.1f} dB on held-out "
             f"crops of {res['size']} px. Patch codec: {codec['kind']} fitted to the same crops, reconstruction "
             f"{codec['reconstruction_psnr_db']:.1f} dB.", "",
             "| latent | pooling | relative error | overall std ratio |", "|---|---|---|---|"]
    for name in ("vae", "codec"):
        for f, r in res[name]["pooling"].items():
            lines.append(f"| {name} | {f}x{f} | {r['relative_error']:.3f} | {r['std_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=256, help="held-out crops for the pooling measure")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--kl", type=float, default=1e-4)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    import_host(cpu=True)
    import proxy_codec_pooling
    import proxy_train

    proxy = pack_module("core.proxy")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    photos, _, source = proxy_train.photographs(False)
    bank = proxy.ImageBank(photos, "cpu")
    model = build(args.seed)
    training = train(model, bank, args.seconds, args.train_size, args.batch, args.kl, args.seed)
    model.eval()
    x = bank.crops(args.samples, args.size, torch.Generator().manual_seed(args.seed + 11))
    enc = MeanEncoder(model)
    with torch.no_grad():
        rec = model.decode(enc.encode(x))
    codec = proxy.PatchPCACodec.fit(bank.crops(64, args.size, torch.Generator().manual_seed(args.seed + 12)))
    res = {"command": "python3 benchmarks/proxy_vae_pooling.py " + " ".join(sys.argv[1:]), "device": "CPU",
           "photos": source, "size": args.size, "train_size": args.train_size, "samples": args.samples,
           "vae": {"layout": LAYOUT, "parameters": sum(p.numel() for p in model.parameters()), "training": training,
                   "reconstruction_psnr_db": psnr(rec.clamp(-1, 1), x),
                   "pooling": proxy_codec_pooling.measure(enc, x)},
           "codec": {"kind": f"PatchPCACodec f{codec.factor} c{codec.channels}",
                     "reconstruction_psnr_db": psnr(codec.decode(codec.encode(x)).clamp(-1, 1), x),
                     "pooling": proxy_codec_pooling.measure(codec, x)}}
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
