"""PyraExactVAEDecode / PyraExactVAEEncode through the real server, on the user's path, against the stock nodes.

One row per (node, VAE kind): the VAE as users load it (CheckpointLoaderSimple on an SD1.5-format checkpoint with a
real-size KL VAE and CLIP-L, VAELoader on a real-size 16-channel SD3/Flux-format KL VAE, TAESD, the Wan 2.1 VAE on a
video and on one image (and its encode of a 5-frame clip), the tiny LTX-2-layout VAE on a 9-frame clip where the
host has LTX-2), the server running the prompt under torch.inference_mode() as always. Each row states the path the
Pyra node takes on every host of the matrix, so a gap shows as a row: "exact" (the sliced decode/encode, no fallback
line in the log) or "host" (the node's one logged fallback to the host's own decode/encode). Run the suite on each
host for the host dimension.

Tolerances. Decode: the 8-bit PNGs SaveImage writes, exact rows at most one rounding step apart (the sliced decode
equals the host's up to float summation order: in-process within 1e-4 of VAE Decode), host rows identical. Encode:
the fp32 latents SaveLatent writes, exact rows within ENCODE_TOL (absolute, on latents of order one), host rows
identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from prompts import EXACT_VAE_IMAGE, EXACT_VAE_KINDS, exact_vae

pytestmark = pytest.mark.server

ENCODE_TOL = 1e-4

# (node, VAE kind) -> the path PyraExact* takes on every host
PATHS = {
    ("decode", "kl_checkpoint"): "exact",
    ("decode", "kl16"): "exact",
    ("decode", "taesd"): "exact",
    ("decode", "taesd3"): "exact",
    ("decode", "wan21"): "exact",
    ("decode", "wan21_image"): "exact",   # one latent frame: the checkpointed one-frame program
    ("decode", "ltx2"): "exact",   # the LTX-2 VAE layout (hosts with LTX-2 only: 0.33.0)
    ("encode", "kl_checkpoint"): "exact",
    ("encode", "kl16"): "exact",
    ("encode", "taesd"): "host",     # no exact sliced TAESD encoder
    ("encode", "taesd3"): "host",
    ("encode", "wan21"): "exact",    # one image: the one-frame Wan encoder
    ("encode", "wan21_video"): "exact",   # 5 frames (1 + 4): the streamed Wan video encoder, 2 latent frames
    ("encode", "ltx2"): "exact",     # one image, the LTX encoder streamed (hosts with LTX-2 only)
}
# decoded frames per kind (64x48: 8x6 latents; Wan: 3 latent frames -> 9; LTX-2: 2 latent frames -> 9)
FRAMES = {"wan21": 9, "ltx2": 9}
SIZES = {"ltx2": (64, 64)}   # scaled to LTX's 32-pixel grid: a 2x2 latent (the host's decode cannot reflect 1 row)
OPTIONAL = {"ltx2"}   # kinds whose demo file only hosts with the family get
FALLBACK = {"decode": "using the host's own decode", "encode": "using the host's own encode"}


@pytest.fixture(scope="module")
def test_image(server):
    """A 64x48 RGB picture with structure at every scale (gradients, a disc, seeded noise) in the input folder."""
    yy, xx = np.mgrid[0:48, 0:64] / 48.0
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], -1)
    rgb[(xx - 0.7) ** 2 + (yy - 0.5) ** 2 < 0.08] = (0.9, 0.2, 0.1)
    rgb += 0.1 * np.random.default_rng(0).standard_normal(rgb.shape)
    path = server.base / "input" / EXACT_VAE_IMAGE
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def real_format_files(server):
    """The real-format files must be on the host (tools/demo_models.py writes them at host install)."""
    from host import comfyui_dir

    models = comfyui_dir() / "models"
    missing = [name for kind, (name, loader) in EXACT_VAE_KINDS.items()
               if kind not in OPTIONAL and not (models / ("checkpoints" if loader == "checkpoint" else "vae") / name)
               .is_file()]
    if missing:
        pytest.fail(f"missing demo files {missing} under {models}: run `python tools/demo_models.py --comfyui "
                    f"{comfyui_dir()}` with the host's python (or `make host`)")


def run_row(server, node: str, kind: str) -> tuple[dict, str]:
    """Queue the row's prompt; (history entry, the server log lines it wrote)."""
    start = server.log_path.stat().st_size
    entry = server.wait(server.queue(exact_vae(node, kind, prefix=f"pyra_test_exact_{node}_{kind}")), timeout=300)
    with server.log_path.open("rb") as f:
        f.seek(start)
        return entry, f.read().decode(errors="replace")


def saved(server, entry: dict, kind: str) -> dict[str, list]:
    """{"stock": [...], "pyra": [...]}: the row's saved files (images or latents) in output order."""
    files = {"stock": [], "pyra": []}
    for out in entry["outputs"].values():
        for item in out.get("images", []) + out.get("latents", []):
            path = server.base / "output" / item.get("subfolder", "") / item["filename"]
            files["pyra" if "_pyra_" in path.name else "stock"].append(path)
    return {tag: sorted(paths) for tag, paths in files.items()}


@pytest.mark.parametrize("node, kind", list(PATHS))
def test_exact_vae_node_matches_stock_node(server, test_image, real_format_files, node, kind):
    if kind in OPTIONAL:
        from host import comfyui_dir

        name = EXACT_VAE_KINDS[kind][0]
        if not (comfyui_dir() / "models" / "vae" / name).is_file():
            pytest.skip(f"this host has no {kind} demo file ({name}): it lacks the family's classes")
    entry, log = run_row(server, node, kind)
    fell_back = FALLBACK[node] in log
    assert fell_back == (PATHS[node, kind] == "host"), \
        f"expected the {PATHS[node, kind]} path for {node} on {kind}; server log:\n{log[-2000:]}"
    files = saved(server, entry, kind)
    if node == "decode":
        compare_images(files, FRAMES.get(kind, 1), exact=PATHS[node, kind] == "exact", size=SIZES.get(kind, (48, 64)))
    else:
        compare_latents(files, kind, exact=PATHS[node, kind] == "exact")


def compare_images(files: dict[str, list], frames: int, exact: bool, size: tuple[int, int] = (48, 64)) -> None:
    assert len(files["stock"]) == len(files["pyra"]) == frames
    for a, b in zip(files["stock"], files["pyra"], strict=True):
        with Image.open(a) as ia, Image.open(b) as ib:
            pa, pb = np.asarray(ia, dtype=np.int16), np.asarray(ib, dtype=np.int16)
        assert pa.shape == pb.shape == (*size, 3)
        assert pa.std() > 2   # not a flat picture (the random TAESD round trip has the least contrast, std ~6)
        assert np.abs(pa - pb).max() <= (1 if exact else 0)   # 8-bit PNGs: at most one rounding step apart


def compare_latents(files: dict[str, list], kind: str, exact: bool) -> None:
    import torch
    from safetensors.torch import load_file

    assert len(files["stock"]) == len(files["pyra"]) == 1
    ref, out = (load_file(str(files[tag][0]))["latent_tensor"] for tag in ("stock", "pyra"))
    channels = {"kl_checkpoint": 4, "taesd": 4, "ltx2": 128}.get(kind, 16)
    hw = (1, 2) if kind == "ltx2" else (6, 8)   # LTX: 32x, the 48-row test image cropped to 32 rows
    assert ref.shape == out.shape and ref.shape[:2] == (1, channels) and ref.shape[-2:] == hw
    if kind == "wan21_video":
        assert ref.shape[2] == 2   # 5 frames: the first, then 4 through the time downsamplings
    assert ref.dtype == out.dtype == torch.float32
    assert ref.std() > 0.05
    gap = (out - ref).abs().max().item()
    assert gap <= ENCODE_TOL if exact else gap == 0, f"latents differ by {gap}"
