"""Demo files of the 2026 families that the host's own loaders detect at a tiny size (issue 18), beside DEMO_FILES.

Written by tools/demo_models.py at host install (not committed), only on a host that has the family's classes;
the example workflows `pyra-<family>-tiny` load them through the stock UNETLoader and VAELoader.

- Flux.2 klein: the UNETLoader detects and loads the tiny model (host.tiny_image_families DETECTION). Its VAE is
  the host's Flux.2 KL autoencoder: the host builds the encoder at its real width (ch 128, 34M parameters) and reads
  only the decoder's width from the file, so this file is about 70 MB, the largest of these.
- Wan 2.2 TI2V-5B, the two Wan 2.2 A14B experts, HunyuanVideo 1.5 and LTX-2: detected and loaded
  (host.tiny_video_families). The A14B experts use the Wan 2.1 VAE file of DEMO_FILES. LTX-2's model and VAE
  carry their size in the safetensors `config` metadata, as the real LTX-2 files do.
- The Wan 2.2 VAE and the HunyuanVideo 1.5 VAE have no tiny file: the host builds them at a fixed width whatever the
  file holds (705M and 1.26B parameters). Their workflows decode through the host's TAEHV class instead (the
  VAELoader's `lighttaew2_2` / `lighttaehy1_5` branch: a file with `decoder.22.bias`, 48 or 32 latent channels),
  seeded random, about 16 MB each.
- Chroma, Qwen-Image and Z-Image have none: the host's detection fixes their widths (Chroma's approximator 3072,
  Qwen-Image's 24 heads of 128 and 3584 text width, Z-Image only at dim 3840), so a tiny file is either
  refused or taken for another family. They get only the workflows with the real file names.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import demo_models, tiny_image_families, tiny_video_families

# key -> (models subfolder, file name, family of the tiny builders)
FAMILY_FILES: dict[str, tuple[str, str, str]] = {
    "flux2_klein": ("diffusion_models", "pyra-demo-flux2-klein.safetensors", "flux2_klein"),
    "flux2_vae": ("vae", "pyra-demo-flux2-vae.safetensors", "flux2_klein"),
    "wan22_ti2v_5b": ("diffusion_models", "pyra-demo-wan22-ti2v-5b.safetensors", "wan22_ti2v_5b"),
    "wan22_taehv": ("vae", "pyra-demo-wan22-taehv.safetensors", "wan22_ti2v_5b"),
    "wan22_a14b_high": ("diffusion_models", "pyra-demo-wan22-a14b-high.safetensors", "wan22_a14b_high"),
    "wan22_a14b_low": ("diffusion_models", "pyra-demo-wan22-a14b-low.safetensors", "wan22_a14b_low"),
    "hunyuan_video15": ("diffusion_models", "pyra-demo-hunyuan-video15.safetensors", "hunyuan_video15"),
    "hv15_taehv": ("vae", "pyra-demo-hunyuan-video15-taehv.safetensors", "hunyuan_video15"),
    "ltx2": ("diffusion_models", "pyra-demo-ltx2.safetensors", "ltx2"),
    "ltx2_vae": ("vae", "pyra-demo-ltx2-vae.safetensors", "ltx2"),
}
FILES: dict[str, tuple[str, str]] = {key: (sub, name) for key, (sub, name, _) in FAMILY_FILES.items()}
# TAEHV latent channels: 48 selects the host's Wan 2.2 branch, 32 (with a 12-channel last conv) HunyuanVideo 1.5's
_TAEHV_CHANNELS = {"wan22_taehv": 48, "hv15_taehv": 32}


def missing(key: str) -> str | None:
    """What this host lacks for FAMILY_FILES[key] (a class, as 'module:attribute'), or None. A VAE file is only
    written with its family's model file."""
    subfolder, _, family = FAMILY_FILES[key]
    if subfolder == "vae":
        model = next(k for k, (sub, _, fam) in FAMILY_FILES.items() if fam == family and sub == "diffusion_models")
        lacking = missing(model)
        if lacking is not None:
            return lacking
    if family in tiny_image_families.TINY_CONFIGS:
        lacking = tiny_image_families.missing_host_class(family)
        if lacking is None and subfolder == "diffusion_models":
            fixed = tiny_image_families.detection_mismatch(family)
            if fixed:  # e.g. 0.8.1 fixes Flux.2's num_heads: the tiny file would not load
                lacking = f"detection of a tiny {family} file (it fixes {', '.join(sorted(fixed))})"
        return lacking
    lacking = tiny_video_families.missing_host_classes(family)
    if key in _TAEHV_CHANNELS:
        try:
            import comfy.taesd.taehv  # noqa: F401
        except ImportError:
            lacking.append("comfy.taesd.taehv:TAEHV")
    return lacking[0] if lacking else None


def _taehv_state_dict(channels: int, seed: int) -> dict[str, torch.Tensor]:
    import comfy.taesd.taehv

    model = comfy.taesd.taehv.TAEHV(latent_channels=channels)
    return demo_models.init_random_(model, seed, std=1.0, fan_in=True).state_dict()


def state_dict(key: str, seed: int = demo_models.DEMO_SEED) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(fp16 tensors, extra safetensors metadata) of FAMILY_FILES[key]."""
    subfolder, _, family = FAMILY_FILES[key]
    metadata: dict[str, str] = {}
    if key in _TAEHV_CHANNELS:
        sd = _taehv_state_dict(_TAEHV_CHANNELS[key], seed)
    elif family in tiny_image_families.TINY_CONFIGS:
        sd = (tiny_image_families.vae_state_dict(family, seed) if subfolder == "vae"
              else tiny_image_families.state_dict(family, seed))
    elif subfolder == "vae":
        sd, meta = tiny_video_families.vae_file(family, seed)
        metadata.update(meta or {})
    else:
        sd = tiny_video_families.state_dict(family, seed)
        metadata.update(tiny_video_families.file_metadata(family) or {})
    sd = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    return sd, metadata


def write(models_dir: Path, force: bool = False) -> tuple[list[Path], dict[str, str]]:
    """Write every FAMILY_FILES entry this host can load under models_dir/<subfolder>/ (fp16, atomic).
    Returns (paths written, {key: what the host lacks} for the files skipped)."""
    written, skipped = [], {}
    for key, (subfolder, name, family) in FAMILY_FILES.items():
        lacking = missing(key)
        if lacking is not None:
            skipped[key] = lacking
            continue
        path = Path(models_dir) / subfolder / name
        if path.exists() and not force:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        sd, extra = state_dict(key)
        metadata = {"pyra_demo": "1", "family": family, "seed": str(demo_models.DEMO_SEED), **extra}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(demo_models._safetensors_bytes(sd, metadata))
        os.replace(tmp, path)
        written.append(path)
    return written, skipped
