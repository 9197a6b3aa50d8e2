"""Exact sliced VAE decode vs the host's full and tiled decodes: error, peak memory and time.

    python benchmarks/decode.py --mode cpu --json OUT.json                     # tiny KL and Wan VAEs, CPU, fp32
    python benchmarks/decode.py --mode cpu --families wan                      # the tiny Wan VAE only
    source benchmarks/device_env.sh                                           # on the lent H200 (carry .device)
    python3 benchmarks/decode.py --mode gpu --json OUT.json                   # real-size SDXL and Flux KL VAEs
    python3 benchmarks/decode.py --mode gpu --families wan --json OUT.json    # real-size Wan 2.1 VAE, 81 frames
    python3 benchmarks/decode.py --mode gpu --families flux2,qwen,wan22,hv15 --json OUT.json   # 2026 families
    python3 benchmarks/decode.py --mode cpu --families flux2,qwen,wan22,hv15  # their tiny VAEs (smoke, CPU)

The 2026 families (`family_cases`, see its docstring) run through the node's path and the host's own: `vae.decode`
(the host's full decode) against `host.vae.exact_decode` (what PyraExactVAEDecode runs), in the host's default
memory mode (dynamic VRAM on 0.33.0), at real sizes with random weights.

The Wan 2.1 VAE is the host's WanVAE at its real size (dim 96) with seeded random weights, through comfy.sd.VAE
(detected from its keys as the host loads a Wan 2.1 VAE file). fp32 exactness runs on --wan-exact-frames latent
frames, memory and time in bf16 on 21 latent frames (81 video frames) at 832x480; the tiled baseline uses
VAEDecodeTiled's defaults (512 px tiles, 64 px overlap, 64 frames, 8 frames overlap).

The VAEs are built from the host's own classes (`comfy.sd.VAE` with an AutoencoderKL config: the real SDXL and
Flux decoder layouts, ch 128, ch_mult [1, 2, 4, 4], 2 res blocks) with seeded fan-in-scaled random weights, so
activations stay O(1) through the whole decoder. Speed and memory do not depend on weight values.

Output convention, the same for both: the decoder output in the compute dtype on the device. The host's
`first_stage_model.decode(z)` returns it so (bf16 on the GPU in the bf16 cases), and ours is called with
`out_dtype=z.dtype, out_device=z.device` (its bands are written straight into that tensor); both peaks include it.

Baselines, side by side in one process: `first_stage_model.decode` (the host's full decode) and
`VAE.decode_tiled_` with VAEDecodeTiled's default tiles (512 px, overlap 64 px: 64 and 8 latent units). Errors are
max abs differences to the full decode: raw decoder output for ours, and in the [0, 1] image space of
`process_output` for the tiled decode (that is all it returns) and for ours beside it. fp32 runs with TF32 off.
Peak: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, including the resident weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from _host import host_info as pack_host_info
from _host import import_host, pack_module

START = time.perf_counter()

REAL = {"ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2}
TINY = {"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2}
FAMILIES = {"sdxl": 4, "flux": 16, "wan": 16}   # latent channels
WAN_REAL = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
            "temperal_downsample": [False, True, True], "dropout": 0.0}
WAN_TINY = {**WAN_REAL, "dim": 8}


def seed_weights(model, seed: int, is_scale):
    """Fan-in scaled N(0, 1) weights; 1-D parameters near 1 where `is_scale(name)` (norm scales), else near 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_((1.0 if is_scale(name) else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return model


def build_vae(z_channels: int, layout: dict, device, dtype, seed: int = 0):
    """comfy.sd.VAE around a seeded random AutoencoderKL of `layout`, weights in `dtype` on `device`."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    dd = {"double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
          "attn_resolutions": [], "dropout": 0.0, **layout}
    params = {"embed_dim": z_channels, "ddconfig": dd}
    model = seed_weights(AutoencoderKL(**params), seed, lambda name: "norm" in name and name.endswith("weight"))
    vae = comfy.sd.VAE(sd=model.state_dict(), config={"params": params}, device=device, dtype=dtype)
    vae.first_stage_model.to(device)
    vae.output_device = device
    return vae


def build_wan_vae(layout: dict, device, dtype, seed: int = 0):
    """comfy.sd.VAE around a seeded random WanVAE of `layout` (the host detects it from the state-dict keys)."""
    import comfy.ldm.wan.vae
    import comfy.sd

    model = seed_weights(comfy.ldm.wan.vae.WanVAE(**layout), seed, lambda name: "gamma" in name)
    vae = comfy.sd.VAE(sd=model.state_dict(), device=device, dtype=dtype)
    if vae.first_stage_model.decoder.dim != layout["dim"]:
        raise RuntimeError("the host did not build the Wan 2.1 VAE layout from the random state dict")
    vae.first_stage_model.to(device)
    vae.output_device = device
    return vae


def host_tiled(vae, z, tile):
    """The host's tiled decode with VAEDecodeTiled's tiles (latent units), in process_output's [0, 1] space, under
    inference mode as the server runs it (0.33.0's process_output works in place on the inference tensors it
    builds)."""
    import torch

    with torch.inference_mode():
        if z.ndim == 5:
            return vae.decode_tiled_3d(z, tile_t=16, tile_x=tile[0], tile_y=tile[0], overlap=(2, tile[1], tile[1]))
        return vae.decode_tiled_(z, tile[0], tile[0], tile[1])


def measure(fn, repeats: int, cuda: bool):
    """(last result, median seconds, peak bytes or None) over `repeats` runs after one warm-up."""
    import torch

    out = fn()
    times, peak = [], None
    for _ in range(repeats):
        del out
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), peak


def run_case(vae, z, rows_list, repeats, cuda, tiled=True, ref32=None, tile=(64, 8), reference_rows=()):
    """Full, tiled and sliced decodes of z: a dict of figures. References are kept on the CPU, off the peaks.

    `reference_rows`: band sizes also run with the KL decoder's reference path (`fast=False`), side by side.
    """
    import torch

    kl = pack_module("core.vae.kl")
    sliced = pack_module("core.vae").sliced_decode
    model = vae.first_stage_model
    runs = [(r, True) for r in rows_list] + [(r, False) for r in reference_rows if kl.is_kl(model)]
    with torch.no_grad():
        full, t_full, p_full = measure(lambda: model.decode(z), repeats, cuda)
    full = full.float().cpu()
    full_img = vae.process_output(full.clone())  # 0.33.0's process_output works in place
    res = {"shape": list(z.shape), "dtype": str(z.dtype).removeprefix("torch."), "full_s": t_full, "full_peak": p_full,
           "out_absmax": full.abs().max().item(), "ours": []}
    if tiled:
        til, t_til, p_til = measure(lambda: host_tiled(vae, z, tile), 1, cuda)
        res.update(tiled_s=t_til, tiled_peak=p_til, tiled_err_img=(til.cpu() - full_img).abs().max().item())
        if z.ndim == 5:   # video: which frames the temporal tiles get wrong
            per_frame = (til.cpu() - full_img).abs().amax(dim=(0, 1, 3, 4))
            res["tiled_err_per_frame"] = [round(float(e), 4) for e in per_frame]
            res["tiled_exact_leading_frames"] = int((per_frame.cumsum(0) <= 1e-5).sum())
        del til
    for rows, fast in runs:
        run = (lambda r=rows: sliced(model, z, r, z.device, z.dtype)) if fast else \
            (lambda r=rows: kl.kl_decode(model, z, r, z.device, z.dtype, fast=False))
        out, t, p = measure(run, repeats, cuda)
        out = out.float().cpu()
        res["ours"].append({"rows": rows, "fast": fast, "s": t, "peak": p, "err": (out - full).abs().max().item(),
                            "err_img": (vae.process_output(out.clone()) - full_img).abs().max().item()})
        if ref32 is not None:
            res["ours"][-1]["err_vs_fp32"] = (out - ref32).abs().max().item()
        del out
    return res, full


def latent(shape, device, dtype, seed=1):
    import torch

    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)


def gpu_cases(args, emit):
    """Real-size SDXL/Flux decoders: fp32 exactness at --exact-size, bf16 memory/time at --sizes."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    # with its index, as the host's own loaders give it (comfy-aimdo's dynamic VRAM needs one)
    dev = torch.device("cuda", torch.cuda.current_device())
    for fam in args.families:
        if fam in NEW_FAMILIES:
            family_cases(args, emit, dev, fam)
            continue
        if fam == "wan":
            wan_gpu_cases(args, emit, dev)
            continue
        c = FAMILIES[fam]
        vae = build_vae(c, REAL, dev, torch.float32)
        lat = args.exact_size // 8
        z = latent((1, c, lat, lat), dev, torch.float32)
        res, full32 = run_case(vae, z, [args.exact_rows], 1, True)
        emit(f"{fam}_fp32_{args.exact_size}", res)
        vae.first_stage_model.to(torch.bfloat16)
        vae.vae_dtype = torch.bfloat16
        res, full16 = run_case(vae, z.bfloat16(), [args.exact_rows], 1, True, tiled=False, ref32=full32)
        res["full_bf16_vs_fp32"] = (full16 - full32).abs().max().item()
        emit(f"{fam}_bf16_{args.exact_size}", res)
        del full32, full16
        for size in args.sizes:
            lat = size // 8
            z = latent((1, c, lat, lat), dev, torch.bfloat16)
            res, _ = run_case(vae, z, args.rows, args.repeats, True, reference_rows=args.reference_rows)
            emit(f"{fam}_bf16_{size}", res)
        del vae
        torch.cuda.empty_cache()


def wan_gpu_cases(args, emit, dev):
    """Real-size Wan 2.1 VAE at 832x480: fp32 exactness on a few latent frames, bf16 memory/time on 81 frames."""
    import torch

    vae = build_wan_vae(WAN_REAL, dev, torch.float32)
    z = latent((1, 16, args.wan_exact_frames, 60, 104), dev, torch.float32)
    res, full32 = run_case(vae, z, [args.exact_rows // 2], 1, True)
    emit(f"wan_fp32_{args.wan_exact_frames}f_832x480", res)
    vae.first_stage_model.to(torch.bfloat16)
    vae.vae_dtype = torch.bfloat16
    res, full16 = run_case(vae, z.bfloat16(), [args.exact_rows // 2], 1, True, tiled=False, ref32=full32)
    res["full_bf16_vs_fp32"] = (full16 - full32).abs().max().item()
    emit(f"wan_bf16_{args.wan_exact_frames}f_832x480", res)
    del full32, full16
    z = latent((1, 16, 21, 60, 104), dev, torch.bfloat16)
    res, _ = run_case(vae, z, args.wan_rows, args.repeats, True)
    emit("wan_bf16_81f_832x480", res)
    del vae
    torch.cuda.empty_cache()


def cpu_cases(args, emit):
    import torch

    if any(f != "wan" for f in args.families):
        vae = build_vae(4, TINY, torch.device("cpu"), torch.float32)
        for size in args.sizes:
            z = latent((2, 4, size // 8 + 1, size // 8 - 1), torch.device("cpu"), torch.float32)   # batch 2, odd
            res, _ = run_case(vae, z, args.rows, args.repeats, False, tile=(args.tile, args.overlap))
            emit(f"tiny_fp32_{size}", res)
    if "wan" in args.families:
        vae = build_wan_vae(WAN_TINY, torch.device("cpu"), torch.float32)
        z = latent((1, 16, 3, 9, 7), torch.device("cpu"), torch.float32)
        res, _ = run_case(vae, z, [1, 4], args.repeats, False, tile=(4, 1))
        emit("wan_tiny_fp32_3x72x56", res)
        z = latent((1, 16, 21, 8, 8), torch.device("cpu"), torch.float32)   # 81 frames: the host's temporal tiles
        res, _ = run_case(vae, z, [4], 1, False, tile=(64, 8))
        emit("wan_tiny_fp32_81x64x64", res)


# --- the 2026 families: Flux.2, Qwen-Image (the Wan 2.1 VAE class), Wan 2.2 TI2V-5B, HunyuanVideo 1.5 --------------

# family -> (fp32 exactness latent, bf16 memory/time latents, band sizes) on the GPU; shapes (B, C, [T,] h, w)
NEW_FAMILIES = {
    "flux2": ((1, 128, 64, 64), [(1, 128, 128, 128), (1, 128, 256, 256)], [0, 4, 8]),       # 1024; 2048, 4096 px
    "qwen": ((1, 16, 1, 128, 128), [(1, 16, 1, 166, 166), (1, 16, 1, 256, 256)], [0, 8, 16]),  # 1024; 1328, 2048
    "wan22": ((1, 48, 2, 44, 80), [(1, 48, 21, 44, 80)], [0, 1, 2, 4]),   # 1280x704: 5 frames; 81 frames
    "hv15": ((1, 32, 2, 45, 80), [(1, 32, 21, 45, 80)], [0, 1, 2, 4]),    # 1280x720: 5 frames; 81 frames
    "ltx": ((1, 128, 3, 22, 40), [(1, 128, 16, 22, 40)], [0, 1, 2, 4]),   # 1280x704: 17 frames; 121 frames
}
TINY_FAMILIES = {"flux2": ("image", "flux2", (2, 128, 5, 3)), "qwen": ("image", "qwen_image", (1, 16, 1, 9, 7)),
                 "wan22": ("video", "wan22_ti2v_5b", (1, 48, 2, 3, 2)),
                 "hv15": ("video", "hunyuan_video15", (1, 32, 3, 3, 2)),
                 "ltx": ("video", "ltx2", (1, 128, 3, 3, 2))}
HV15_REAL = {"in_channels": 3, "out_channels": 3, "num_res_blocks": 2, "ffactor_spatial": 16, "ffactor_temporal": 4,
             "downsample_match_channel": True, "upsample_match_channel": True, "z_channels": 32,
             "block_out_channels": [128, 256, 512, 1024, 1024]}
FAMILY_GOALS = {"peak": 1 / 4, "time": 1.3, "err_fp32": 1e-4}


@functools.lru_cache(maxsize=1)
def family_state_dict(fam: str, seed: int = 0) -> dict:
    """The VAE file of `fam` at its real size with seeded random weights, in the layout the host detects. Built with
    its layers' weights (`host.features.materialised_weights`): under dynamic VRAM the host builds comfy.ops Linear
    layers without them (the LTX VAE's time embedders), and the file would then lack their keys."""
    with pack_module("host.features").materialised_weights():
        return _family_state_dict(fam, seed)


def _family_state_dict(fam: str, seed: int) -> dict:
    import torch

    if fam == "flux2":
        from comfy.ldm.models.autoencoder import AutoencoderKL

        dd = {"double_z": True, "z_channels": 32, "resolution": 256, "in_channels": 3, "out_ch": 3,
              "attn_resolutions": [], "dropout": 0.0, "batch_norm_latent": True, **REAL}
        model = seed_weights(AutoencoderKL(ddconfig=dd, embed_dim=32), seed,
                             lambda name: "norm" in name and name.endswith("weight"))
        g = torch.Generator().manual_seed(seed + 1)
        model.bn.running_mean.copy_(0.1 * torch.randn(model.bn.running_mean.shape, generator=g))
        model.bn.running_var.copy_(1.0 + torch.rand(model.bn.running_var.shape, generator=g))
    elif fam == "qwen":
        import comfy.ldm.wan.vae

        model = seed_weights(comfy.ldm.wan.vae.WanVAE(**WAN_REAL), seed, lambda name: "gamma" in name)
    elif fam == "ltx":   # the layout the host builds for an LTX-2 VAE file (timestep conditioned)
        import comfy.ldm.lightricks.vae.causal_video_autoencoder as ltx

        model = ltx.VideoVAE(version=2)
        multiplier = model.decoder.timestep_scale_multiplier.item()
        model = seed_weights(model, seed, lambda name: False)
        with torch.no_grad():
            model.decoder.timestep_scale_multiplier.fill_(multiplier)
        g = torch.Generator().manual_seed(seed + 1)
        stats = model.per_channel_statistics
        stats.get_buffer("std-of-means").copy_(0.5 + torch.rand(128, generator=g))
        stats.get_buffer("mean-of-means").copy_(0.1 * torch.randn(128, generator=g))
    elif fam == "hv15":
        import comfy.ldm.hunyuan_video.vae_refiner as refiner

        model = torch.nn.Module()
        model.encoder, model.decoder = refiner.Encoder(**HV15_REAL), refiner.Decoder(**HV15_REAL)
        model = seed_weights(model, seed, lambda name: "gamma" in name)
    else:
        import comfy.ldm.wan.vae2_2

        model = seed_weights(comfy.ldm.wan.vae2_2.WanVAE(dec_dim=256, **{**WAN_REAL, "dim": 160, "z_dim": 48}),
                             seed, lambda name: "gamma" in name)
    return model.state_dict()


def build_family_vae(fam: str, device, dtype):
    """comfy.sd.VAE of `fam` (family_state_dict) with its weights in `dtype`."""
    import comfy.sd

    vae = comfy.sd.VAE(sd=family_state_dict(fam), device=device, dtype=dtype)
    vae.output_device = device   # the decoded image stays on the GPU for both: peaks include it, times no copy
    return vae


def _node_run(vae, z, rows, repeats, cuda, warmup=True):
    """(images, s, peak) of the host's `vae.decode` (rows None) or Pyra's `exact_decode` (rows >= 0; 0 = auto)."""
    import torch

    exact = pack_module("host.vae").exact_decode
    decode = (lambda: vae.decode(z)) if rows is None else (lambda: exact(vae, z, rows))

    def fn():   # the LTX decode mixes unseeded noise into the latent: both paths draw it from the same state
        torch.manual_seed(0)
        return decode()
    return measure(fn, repeats, cuda) if warmup else _measure_once(fn, cuda)


def _measure_once(fn, cuda):
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated() if cuda else None


def family_case(vae, z, rows_list, repeats, cuda, raw=True, warmup=True):
    """Host full decode against ours at each band size, through the node's path (images in [0, 1], fp32) and, with
    `raw`, the decoder output itself (first_stage_model.decode against core sliced_decode, before the clamp)."""
    import torch

    sliced = pack_module("core.vae").sliced_decode
    if not warmup and z.ndim == 5:   # warm both paths' kernels on one latent frame instead of a whole run
        for rows in (None, rows_list[0]):
            _measure_once(lambda r=rows: _node_run(vae, z[:, :, :1], r, 1, cuda, False), cuda)
    host, t_host, p_host = _node_run(vae, z, None, repeats, cuda, warmup)
    host = host.float().cpu()
    res = {"shape": list(z.shape), "dtype": str(vae.vae_dtype).removeprefix("torch."), "full_s": t_host,
           "full_peak": p_host, "ours": []}
    if raw:
        with torch.no_grad():
            zz = z.to(vae.device, vae.vae_dtype)
            torch.manual_seed(0)
            ref = vae.first_stage_model.decode(zz).float().cpu()
            res["raw_absmax"] = ref.abs().max().item()
            torch.manual_seed(0)
            res["raw_err"] = (sliced(vae.first_stage_model, zz, max(1, rows_list[-1])).cpu() - ref).abs().max().item()
            del ref, zz
    for rows in rows_list:
        out, t, p = _node_run(vae, z, rows, repeats, cuda, warmup)
        res["ours"].append({"rows": rows, "s": t, "peak": p, "err_img": (out.float().cpu() - host).abs().max().item()})
        del out
    return res


# the one-image encodes measured in bf16, (height, width): img2img and edit inputs, and the start images of
# image-to-video runs at 720p (TI2V-5B and LTX-2 704 x 1280; HunyuanVideo 1.5 720 x 1280)
ENCODE_SIZES = {"flux2": (2048, 2048), "qwen": (2048, 2048), "wan22": (704, 1280), "hv15": (720, 1280),
                "ltx": (704, 1280)}


def _second_of_two(fn, cuda):
    """(output, seconds, peak) of the second of two runs: the first pays the kernels' first use at its shapes."""
    _measure_once(fn, cuda)
    return _measure_once(fn, cuda)


# the video encodes (--encode-video): frames at the 720p sizes above (video-to-video inputs); Qwen-Image's VAE is
# the Wan 2.1 class (Wan 2.1 and Wan 2.2 A14B use it for video), so its video encode runs at Wan's 720p
ENCODE_FRAMES = {"wan22": 81, "hv15": 81, "ltx": 121, "qwen": 81}
VIDEO_ENCODE_SIZES = {"qwen": (720, 1280)}


def encode_case(vae, size: tuple[int, int], rows_list, cuda, frames: int = 1) -> dict:
    """The host's `vae.encode` of `frames` random images of `size` (height, width; several frames are one video to
    a video VAE) against Pyra's `exact_encode` at each band size: time and peak of the second of two runs each, and
    the largest latent difference."""
    import torch

    exact = pack_module("host.vae").exact_encode
    pixels = torch.rand((frames, *size, 3), generator=torch.Generator().manual_seed(7))
    run = _second_of_two if frames == 1 else _measure_once   # a video: one run each, after a one-image warm-up
    if frames > 1:
        vae.encode(pixels[:1])
        exact(vae, pixels[:1], rows_list[0])
    host, t_host, p_host = run(lambda: vae.encode(pixels), cuda)
    host = host.float().cpu()
    res = {"shape": list(pixels.shape), "dtype": str(vae.vae_dtype).removeprefix("torch."), "full_s": t_host,
           "full_peak": p_host, "ours": []}
    for rows in rows_list:
        out, t, p = run(lambda r=rows: exact(vae, pixels, r), cuda)
        err = (out.float().cpu() - host).abs().max().item()
        res["ours"].append({"rows": rows, "s": t, "peak": p, "err_latent": err})
        del out
    return res


def family_cases(args, emit, dev, fam):
    """One 2026 family at real size on the GPU: fp32 exactness, then bf16 (the host's VAE dtype there) memory and
    time at the real sizes of NEW_FAMILIES. Cases past --budget seconds are skipped (recorded)."""
    import comfy.model_management as mm
    import torch

    exact_shape, shapes, rows = NEW_FAMILIES[fam]
    video = len(exact_shape) == 5 and exact_shape[2] > 1
    plan = ((torch.float32, [exact_shape]), (torch.bfloat16, shapes))
    if args.no_exact:
        plan = ((torch.bfloat16, shapes),)
    if args.encode_only:
        plan = ((torch.bfloat16, []),)
    for dtype, todo in plan:
        vae = build_family_vae(fam, dev, dtype)
        for shape in todo:
            name = f"{fam}_{str(dtype).removeprefix('torch.')}_{'x'.join(map(str, shape[1:]))}"
            if time.perf_counter() - START > args.budget:
                emit(name, {"skipped": f"past the --budget of {args.budget} s"})
                continue
            z = latent(shape, torch.device("cpu"), torch.float32)
            long = video and shape[2] > 8   # 81 frames: one timed run after a one-frame warm-up
            fp32 = dtype == torch.float32
            reps = 1 if long or fp32 or shape[-1] >= 256 else args.repeats   # 2048/4096 px images: one timed run
            emit(name, family_case(vae, z, rows, reps, True, raw=fp32, warmup=not (long or (fp32 and video))))
        if fam in ENCODE_SIZES and dtype == torch.bfloat16:
            size = ENCODE_SIZES[fam]
            name = f"{fam}_encode_bfloat16_{size[0]}px" if size[0] == size[1] else \
                f"{fam}_encode_bfloat16_{size[0]}x{size[1]}"
            if time.perf_counter() - START > args.budget:
                emit(name, {"skipped": f"past the --budget of {args.budget} s"})
            else:
                emit(name, encode_case(vae, size, rows, True))
            if args.encode_video and fam in ENCODE_FRAMES:
                size = VIDEO_ENCODE_SIZES.get(fam, size)
                name = f"{fam}_encode_video_bfloat16_{ENCODE_FRAMES[fam]}x{size[0]}x{size[1]}"
                if time.perf_counter() - START > args.budget:
                    emit(name, {"skipped": f"past the --budget of {args.budget} s"})
                else:
                    emit(name, encode_case(vae, size, rows, True, ENCODE_FRAMES[fam]))
        del vae
        mm.unload_all_models()
        mm.soft_empty_cache(True)


def family_cpu_cases(args, emit):
    """The tiny VAEs of host/tiny_image_families.py and tiny_video_families.py on the CPU, fp32 (a smoke run)."""
    import torch

    for fam in args.families:
        kind, family, shape = TINY_FAMILIES[fam]
        vae = pack_module(f"host.tiny_{kind}_families").tiny_vae(family)
        emit(f"{fam}_tiny_fp32_{'x'.join(map(str, shape[1:]))}",
             family_case(vae, latent(shape, torch.device("cpu"), torch.float32), [0, 2], 1, False))
        if fam in ENCODE_SIZES:
            emit(f"{fam}_tiny_encode_fp32_64px", encode_case(vae, (64, 64), [0, 2], False))
        if args.encode_video and fam in ENCODE_FRAMES:
            frames = {"wan22": 9, "hv15": 9, "ltx": 17, "qwen": 9}[fam]   # two latent frames after the first
            emit(f"{fam}_tiny_encode_video_fp32_{frames}x64x64", encode_case(vae, (64, 64), [0, 2], False, frames))


def family_summary(cases: dict) -> dict:
    """Per family: the worst fp32 error (raw and image), and for the largest bf16 case run, peak and time of ours
    over the host's at the band size with the lowest peak and at the auto size (rows 0), with the goals."""
    head = {"goals": FAMILY_GOALS}
    for fam in NEW_FAMILIES:
        done = {k: c for k, c in cases.items() if k.startswith(fam + "_") and "skipped" not in c}
        if not done:
            continue
        for kind in ("encode", "encode_video"):   # the latent difference in the case's dtype; peak, time: GPU only
            enc = [c for k, c in done.items() if f"_{kind}_" in k and (kind != "encode" or "_encode_video_" not in k)]
            if not enc:
                continue
            c = enc[-1]
            head[f"{fam}_{kind}_err"] = max(o["err_latent"] for o in c["ours"])
            if c["full_peak"]:
                low, auto = min(c["ours"], key=lambda o: o["peak"]), next(o for o in c["ours"] if o["rows"] == 0)
                head[f"{fam}_{kind}_peak_ratio"] = low["peak"] / c["full_peak"]
                head[f"{fam}_{kind}_time_ratio"] = low["s"] / c["full_s"]
                head[f"{fam}_{kind}_auto_peak_ratio"] = auto["peak"] / c["full_peak"]
                head[f"{fam}_{kind}_auto_time_ratio"] = auto["s"] / c["full_s"]
        done = {k: c for k, c in done.items() if "_encode_" not in k}
        f32 = [c for k, c in done.items() if "_float32_" in k or "_fp32_" in k]
        if f32:
            head[f"{fam}_err_fp32_raw"] = max(c.get("raw_err", 0.0) for c in f32)
            head[f"{fam}_err_fp32_img"] = max(o["err_img"] for c in f32 for o in c["ours"])
        b16 = [c for k, c in done.items() if "_bfloat16_" in k and c.get("full_peak")]
        if b16:
            c = max(b16, key=lambda c: c["full_peak"])
            low, auto = min(c["ours"], key=lambda o: o["peak"]), next(o for o in c["ours"] if o["rows"] == 0)
            head[f"{fam}_case"] = "x".join(map(str, c["shape"][1:]))
            head[f"{fam}_rows_lowest_peak"] = low["rows"]
            head[f"{fam}_peak_ratio"] = low["peak"] / c["full_peak"]
            head[f"{fam}_time_ratio"] = low["s"] / c["full_s"]
            head[f"{fam}_auto_peak_ratio"] = auto["peak"] / c["full_peak"]
            head[f"{fam}_auto_time_ratio"] = auto["s"] / c["full_s"]
    return head


def family_markdown(report: dict) -> str:
    env, gib = report["env"], 1 << 30
    lines = [f"# Exact VAE decode, 2026 families ({env.get('gpu', 'CPU')}, torch {env['torch']}, "
             f"ComfyUI {env.get('comfyui', '?')}, {env.get('memory_mode', '?')}, {env['date']})", "",
             f"Command: `{env['command']}`", "",
             "Host: `vae.decode` (full decode); Pyra: `host.vae.exact_decode` (the node's path; band rows 0 = auto). "
             "Errors: max abs difference to the host's images in [0, 1] (encodes: to its latents); raw: the decoder "
             "output before the clamp.",
             "", "| case | decoder | band rows | time s | peak GiB | max abs err (image) | raw err |",
             "|---|---|---|---|---|---|---|"]
    for name, c in report["cases"].items():
        if "skipped" in c:
            lines.append(f"| {name} | skipped: {c['skipped']} | | | | | |")
            continue
        peak = "-" if not c["full_peak"] else f"{c['full_peak'] / gib:.2f}"
        what = "encode" if "_encode_" in name else "decode"
        lines.append(f"| {name} | host {what} | - | {c['full_s']:.3f} | {peak} | 0 | 0 |")
        for o in c["ours"]:
            peak = "-" if not o["peak"] else f"{o['peak'] / gib:.2f}"
            raw = f"{c['raw_err']:.3g}" if "raw_err" in c else "-"
            err = o.get("err_img", o.get("err_latent"))
            lines.append(f"| {name} | Pyra exact | {o['rows']} | {o['s']:.3f} | {peak} | {err:.3g} | {raw} |")
    lines += ["", "Summary: " + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                                          for k, v in report["summary"].items())]
    return "\n".join(lines) + "\n"


GOALS = {2048: 1 / 4, 4096: 1 / 6}   # the issue's peak-memory goals (fraction of the full decode's peak)


def _shipped(case: dict) -> list[dict]:
    """Our runs on the path the node uses (not the reference rows)."""
    return [o for o in case["ours"] if o.get("fast", True)]


def _lowest_peak(case: dict) -> dict:
    """Ours at the band size with the lowest peak: its peak and time are reported together."""
    return min(_shipped(case), key=lambda o: o["peak"])


def _fastest_within(case: dict, goal: float) -> dict | None:
    """Ours at the fastest band size whose peak meets `goal` (peak and time of that one configuration)."""
    fits = [o for o in _shipped(case) if o["peak"] <= goal * case["full_peak"]]
    return min(fits, key=lambda o: o["s"]) if fits else None


def summary(cases: dict) -> dict:
    """The headline keys the issue asks for (worst case over families; peak and time of ours at the same band
    size, the one with the lowest peak)."""
    head = {}
    fp32 = [c for k, c in cases.items() if "_fp32_" in k]
    head["exact_max_abs_err_fp32"] = max(o["err"] for c in fp32 for o in c["ours"])
    head["tiled_host_max_abs_err"] = max(c["tiled_err_img"] for c in fp32 if "tiled_err_img" in c)
    bf16 = [c for k, c in cases.items() if "full_bf16_vs_fp32" in c]
    head["bf16_err_over_precision_gap"] = max(o["err_vs_fp32"] / c["full_bf16_vs_fp32"]
                                              for c in bf16 for o in c["ours"])
    wan = cases.get("wan_bf16_81f_832x480")
    if wan and wan.get("full_peak"):
        best = _lowest_peak(wan)
        head["wan_rows_81f_832x480"] = best["rows"]
        head["wan_peak_ratio_81f_832x480"] = best["peak"] / wan["full_peak"]
        head["wan_time_ratio_81f_832x480"] = best["s"] / wan["full_s"]
        head["wan_tiled_host_peak_ratio"] = wan["tiled_peak"] / wan["full_peak"]
    for size in (2048, 4096):
        sel = [c for k, c in cases.items() if k.endswith(f"_bf16_{size}")]
        if sel and sel[0].get("full_peak"):
            head[f"peak_ratio_{size}"] = max(_lowest_peak(c)["peak"] / c["full_peak"] for c in sel)
            head[f"time_ratio_{size}"] = max(_lowest_peak(c)["s"] / c["full_s"] for c in sel)
            best = [_fastest_within(c, GOALS[size]) for c in sel]
            if all(best):   # the fastest band size meeting the peak goal, per family; worst family reported
                head[f"fit_rows_{size}"] = max(o["rows"] for o in best)
                head[f"fit_peak_ratio_{size}"] = max(o["peak"] / c["full_peak"] for o, c in zip(best, sel, strict=True))
                head[f"fit_time_ratio_{size}"] = max(o["s"] / c["full_s"] for o, c in zip(best, sel, strict=True))
    return head


def markdown(report: dict) -> str:
    """The committed .md table: per case, full / tiled / ours (each band size) with time, peak and error."""
    env = report["env"]
    gib = 1 << 30
    lines = [f"# Exact VAE decode ({env.get('gpu', 'CPU')}, torch {env['torch']}, {env['date']})", "",
             f"Command: `{env['command']}`", "",
             "| case | decoder | band rows | time s | peak GiB | max abs err (raw) | max abs err (image) |",
             "|---|---|---|---|---|---|---|"]

    def cell(x, fmt):
        return "-" if x is None else format(x, fmt)

    for name, c in report["cases"].items():
        full_peak = cell(c["full_peak"] and c["full_peak"] / gib, ".2f")
        lines.append(f"| {name} | host full | - | {c['full_s']:.3f} | {full_peak} | 0 | 0 |")
        if "tiled_s" in c:
            lines.append(f"| {name} | host tiled | - | {c['tiled_s']:.3f} | "
                         f"{cell(c['tiled_peak'] and c['tiled_peak'] / gib, '.2f')} | - | {c['tiled_err_img']:.3g} |")
        for o in c["ours"]:
            peak = cell(o["peak"] and o["peak"] / gib, ".2f")
            label = "Pyra exact" if o.get("fast", True) else "Pyra exact (reference path)"
            lines.append(f"| {name} | {label} | {o['rows']} | {o['s']:.3f} | {peak} | {o['err']:.3g} | "
                         f"{o['err_img']:.3g} |")
    lines += ["", "Ratios: peak and time of ours at the band size with the lowest peak (other band sizes: see the "
              "rows above); `fit_*`: at the fastest band size whose peak meets the goal (1/4 at 2048, 1/6 at 4096), "
              "rows = the largest such size over families; reference-path rows are left out of both; bf16 error "
              "over the bf16-vs-fp32 gap of the full decode.", "",
              "Summary: " + ", ".join(f"`{k}` = {v:.4g}" for k, v in report["summary"].items())]
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "command": "python3 " + " ".join(sys.argv)}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--families", type=lambda s: s.split(","), default=list(FAMILIES))
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    ap.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=None)
    ap.add_argument("--exact-size", type=int, default=1024)
    ap.add_argument("--exact-rows", type=int, default=16)
    ap.add_argument("--wan-exact-frames", type=int, default=5, help="latent frames of the fp32 Wan exactness case")
    ap.add_argument("--wan-rows", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 15],
                    help="band sizes (latent rows of 60) for the Wan 81-frame case")
    ap.add_argument("--reference-rows", type=lambda s: [int(x) for x in s.split(",")], default=[],
                    help="band sizes also run on the KL decoder's reference path (fast=False) at --sizes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encode-only", action="store_true", help="2026 families: only the one-image encodes")
    ap.add_argument("--no-exact", action="store_true", help="2026 families: skip the fp32 exactness cases")
    ap.add_argument("--encode-video", action="store_true",
                    help="2026 families: also the video encodes of ENCODE_FRAMES (Wan 2.2, HV1.5, the Wan 2.1 class of "
                         "Qwen-Image 81 frames; LTX-2 121)")
    ap.add_argument("--tile", type=int, default=64, help="tiled baseline: tile in latent units (CPU mode)")
    ap.add_argument("--overlap", type=int, default=8, help="tiled baseline: overlap in latent units (CPU mode)")
    ap.add_argument("--budget", type=float, default=170.0,
                    help="2026 families: seconds after which the remaining GPU cases are skipped (recorded)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--resummarize", type=Path, default=None,
                    help="recompute the summary and table of an earlier GPU result file from its cases, in place")
    args = ap.parse_args()
    if args.resummarize:
        report = json.loads(args.resummarize.read_text())
        report["summary"] = summary(report["cases"])
        args.resummarize.write_text(json.dumps(report, indent=1))
        args.resummarize.with_suffix(".md").write_text(markdown(report))
        print(json.dumps(report["summary"], indent=1))
        return
    gpu = args.mode == "gpu"
    args.sizes = args.sizes or ([2048, 4096] if gpu else [256])
    args.rows = args.rows or ([8, 16, 32] if gpu else [4, 16])
    import_host(cpu=not gpu)
    report = {"env": environment(), "cases": {}}

    def emit(name, res):
        report["cases"][name] = res
        print(name, json.dumps(res), flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))

    new = all(f in NEW_FAMILIES for f in args.families)
    if new:
        report["env"].update(pack_host_info())
        if gpu:
            gpu_cases(args, emit)
        else:
            family_cpu_cases(args, emit)
        report["summary"] = family_summary(report["cases"])
        print(json.dumps(report["summary"], indent=1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
            args.json.with_suffix(".md").write_text(family_markdown(report))
        return
    (gpu_cases if gpu else cpu_cases)(args, emit)
    report["summary"] = summary(report["cases"]) if gpu else {
        "exact_max_abs_err_fp32": max(o["err"] for c in report["cases"].values() for o in c["ours"]),
        "tiled_host_max_abs_err": max(c["tiled_err_img"] for c in report["cases"].values())}
    print(json.dumps(report["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        args.json.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
