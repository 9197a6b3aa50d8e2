"""Pyramid vs direct sampling, wall time on real-size random-weight models built from the host's classes (GPU).

    source benchmarks/device_env.sh   # on the lent H200 (carry .device)
    python3 benchmarks/progressive_speed.py --models flux,sdxl --size 2048 --steps 30 --json OUT.json

For each model and ladder: the speedup the FLOP count predicts (one forward per stage size counted with
torch's FlopCounterMode, weighted by the steps each stage runs, plus the one extra evaluation every lower
level makes at its end) and the measured one (median wall time of whole `guider.sample` runs, direct at
full resolution vs pyramid, same sampler, schedule and noise). Weights are random: speed does not depend
on their values. The pyramid runs with its low-resolution stages replayed from CUDA graphs (the default) and
eagerly (`cuda_graphs=False`), with the relative difference of the two results. Graphs are kept across
runs (kernels/cuda_graphs/store.py), so the timed pyramid runs replay them; `{ladder}_first` times the run that
captures them (after releasing kept graphs; the once-per-process warm-up was paid before).

`--timeline` adds, per model, synchronised timelines (benchmarks/pyramid_timeline.py) of one direct run and
of ladder b: the first graphed run in the process (warm-up and capture), a run replaying kept graphs, and a
run after releasing them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from _host import device_info, import_host, model_patcher, pack_module

LADDERS = {"a": "2:0.4", "b": "4:0.35, 2:0.25"}

FLUX = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
        "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
        "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
        "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
        "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False}
# Qwen-Image (20.4B): the host's detection reads only in_channels (64: 16 latent channels patchified 2x2) and the
# block count (comfy/model_detection.py:951-955); the width is QwenImageTransformer2DModel's default, 24 heads of 128
# (3072), text width 3584 (comfy/ldm/qwen_image/model.py:342-353). Latent: Wan 2.1 format, 8x, a frame axis.
QWEN_IMAGE = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 60}
# Flux.2 dev (32.2B): detection's constants (comfy/model_detection.py:265-279), hidden 6144 (48 heads of 128), 8
# double and 48 single blocks, text from Mistral-3 24B (three layers of 5120 -> 15360), guidance-distilled;
# 128-channel latent at 16x (latent_formats.Flux2), patch 1.
FLUX2 = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "context_in_dim": 15360,
         "hidden_size": 6144, "mlp_ratio": 3.0, "num_heads": 48, "depth": 8, "depth_single_blocks": 48,
         "axes_dim": [32, 32, 32, 32], "theta": 2000, "patch_size": 1, "qkv_bias": False, "guidance_embed": True,
         "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
         "ref_index_scale": 10.0, "txt_ids_dims": [3]}
# Wan 2.2 TI2V-5B: dim 3072 (24 heads of 128: comfy/model_detection.py:735), ffn 14336, 30 blocks, the 48-channel
# Wan 2.2 latent in and out (16x, 4x in time: comfy/sd.py:817-820), patch (1, 2, 2), umT5-XXL text (4096 wide).
WAN22_5B = {"image_model": "wan2.1", "model_type": "t2v", "dim": 3072, "num_heads": 24, "ffn_dim": 14336,
            "num_layers": 30, "in_dim": 48, "out_dim": 48, "patch_size": (1, 2, 2), "freq_dim": 256,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
# Chroma1-HD (8.9B): Flux.1-schnell's blocks (19 double, 38 single, 3072 wide: comfy/model_detection.py:291-314)
# without per-block modulation; the approximator's in 64, out 3072, hidden 5120, 5 layers and in/out 64 (the 16-channel
# Flux latent patchified 2x2) are detection's constants (model_detection.py:319-326); T5-XXL text (4096 wide).
CHROMA = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096, "hidden_size": 3072,
          "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38, "axes_dim": [16, 56, 56],
          "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 3072, "hidden_dim": 5120,
          "n_layers": 5, "txt_ids_dims": [], "vec_in_dim": None}
# Z-Image (6.2B): the Lumina2 NextDiT with detection's dim-3840 fields (model_detection.py:577-612): 30 heads of 128, 30
# layers beside 2 noise- and 2 context-refiner layers (NextDiT's n_refiner_layers default), Qwen3-4B text (2560 wide,
# cap_embedder), time_scale 1000, text padded to a multiple of 32 (the real file has cap_pad_token).
Z_IMAGE = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
           "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
           "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
           "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}
# HunyuanVideo 1.5 (8.3B): what detection reads from the weights (comfy/model_detection.py:211-258): hidden 2048 (16
# heads of 128), 54 double blocks, none single, img_in of 65 channels (32 noise + 32 image + 1 mask: model_base.
# HunyuanVideo15.concat_cond; zeros for text to video), patch [1, 1, 1], Qwen2.5-VL-7B text (3584 wide), the glyph
# (byT5) mapper, the cond-type embedding and the 1152-wide vision input (SigLIP) of 1.5; no guidance embedding.
HUNYUAN_VIDEO15 = {"image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32, "vec_in_dim": None,
                   "context_in_dim": 3584, "hidden_size": 2048, "mlp_ratio": 4.0, "num_heads": 16, "depth": 54,
                   "depth_single_blocks": 0, "axes_dim": [16, 56, 56], "theta": 256, "patch_size": [1, 1, 1],
                   "qkv_bias": True, "guidance_embed": False, "byt5": True, "meanflow": False,
                   "use_cond_type_embedding": True, "vision_in_dim": 1152, "meanflow_sum": True}
# LTX-2 (19B, LTXAV: the class the host gives a file with audio_adaln_single, model_detection.py:419-428): detection
# reads the block count (48), head width (attn2.to_k / 32 heads = 128) and cross-attention width (4096) from the weights
# and the rest from the file's config metadata; these are LTXAVModel's defaults (comfy/ldm/lightricks/av_model.py:
# 395-425): a 4096-wide video stream, a 2048-wide audio stream (32 heads of 64), Gemma 3 12B text of 3840 through the
# model's own text connectors. Not checked against a real file's metadata (none here).
LTX2 = {"image_model": "ltxav", "num_layers": 48, "attention_head_dim": 128, "num_attention_heads": 32,
        "cross_attention_dim": 4096, "audio_attention_head_dim": 64, "audio_num_attention_heads": 32,
        "audio_cross_attention_dim": 2048, "caption_channels": 3840, "use_keyframes_abs_pos_embedding": False}
# family -> (host config class in comfy.supported_models, unet_config, latent channels, VAE compression, 5-D latent).
# Latents: Chroma and Z-Image the Flux one (16, 8x); HunyuanVideo 1.5 32 channels at 16x, 4x in time
# (comfy/latent_formats.py:953-993); LTX-2 the LTXV video latent, 128 at 32x, 8x in time (latent_formats.py:346-350,
# 486), beside its audio latent (AUDIO).
FAMILIES = {"flux": ("Flux", FLUX, 16, 8, False), "sdxl": ("SDXL", SDXL, 4, 8, False),
            "qwen_image": ("QwenImage", QWEN_IMAGE, 16, 8, True), "flux2": ("Flux2", FLUX2, 128, 16, False),
            "wan22_ti2v_5b": ("WAN22_T2V", WAN22_5B, 48, 16, True), "chroma": ("Chroma", CHROMA, 16, 8, False),
            "z_image": ("ZImage", Z_IMAGE, 16, 8, False),
            "hunyuan_video15": ("HunyuanVideo15", HUNYUAN_VIDEO15, 32, 16, True),
            "ltx2": ("LTXAV", LTX2, 128, 32, True)}
# family -> (audio channels, frequency bins, latents per second, temporal compression of the video latent, frame
# rate): LTX-2's audio latent, (1, 8, n, 16) (av_model.py:440-441), 16000 Hz / hop 160 / 4 = 25 latents a second
# (symmetric_patchifier.py:136-139, vae/audio_vae.py:222-223), n for the video's length at 25 fps
# (nodes_lt_audio.py LTXVEmptyLatentAudio: frames / frame rate * latents per second).
AUDIO = {"ltx2": (8, 16, 25, 8, 25)}
# family -> (text tokens, text width, extras, cfg, scheduler) of the random conditioning. Flux.2: its tokenizers'
# min_length 512 (model_base.Flux2 pads to 512). Qwen-Image: 512, the most its pipeline encodes (the real length
# follows the prompt); cfg 1 (one evaluation per step, as its distilled variants run: the stock workflow's true CFG
# doubles every step's batch, the ratio of pyramid to direct stays a per-evaluation one).
CONDITIONING = {"flux": (512, 4096, {"pooled_output": (768,), "guidance": 3.5}, 1.0, "simple"),
                "sdxl": (77, 2048, {"pooled_output": (1280,), "width": 2048, "height": 2048}, 5.0, "karras"),
                "qwen_image": (512, 3584, {}, 1.0, "simple"),
                "flux2": (512, 15360, {"pooled_output": None, "guidance": 4.0}, 1.0, "simple"),  # None: Chroma's note
                "wan22_ti2v_5b": (512, 4096, {}, 1.0, "simple"),
                # Chroma (T5-XXL) and Z-Image (Qwen3-4B): the host pads neither prompt (comfy/text_encoders/
                # pixart_t5.py:27, z_image.py:9: min_length 1): 512 for a long prompt. pooled_output None: what
                # CLIPTextEncode gives, and what the Flux class of 0.8.1 reads unconditionally (Chroma's base);
                # Chroma's guidance defaults to 0 (model_base.Chroma).
                "chroma": (512, 4096, {"pooled_output": None}, 1.0, "simple"),
                "z_image": (512, 2560, {"pooled_output": None}, 1.0, "simple"),
                # Qwen2.5-VL-7B, unpadded (a QwenImageTokenizer: qwen_image.py:11, min_length 1): 512, a long prompt;
                # HunyuanVideo.encode_adm reads pooled_output, which the 1.5 encoder leaves None
                "hunyuan_video15": (512, 3584, {"pooled_output": None}, 1.0, "simple"),
                # Gemma 3 12B, 1024 tokens (min_length 1024: comfy/text_encoders/lt.py:76; the model's text connectors,
                # which run once per sampling run in LTXAV.extra_conds, pad to 1024 with their registers either way:
                # comfy/ldm/lightricks/embeddings_connector.py:282-290), caption_channels wide (a config field, so
                # the smoke size follows). Hosts that run the connectors in the text encoder (0.8.1) are skipped
                # (families.step_cache_skip: their EasyCache takes no audio-video input).
                "ltx2": (1024, "caption_channels", {"frame_rate": 25}, 1.0, "simple")}


def latent_shape(family: str, size: int, frames: int = 1, width: int | None = None) -> tuple:
    """The latent of a size x size (or size high, `width` wide) image of `family`; video latents (and Qwen-Image's)
    have a frame axis of `frames` latent frames. LTX-2: (video shape, audio shape), the audio as long as the video
    (the host's sampler packs the two into one latent; step_cache.run makes them a NestedTensor)."""
    _, _, channels, factor, video = FAMILIES[family]
    h, w = size // factor, (width or size) // factor
    shape = (1, channels, frames, h, w) if video else (1, channels, h, w)
    if family not in AUDIO:
        return shape
    audio_channels, bins, per_second, time_factor, fps = AUDIO[family]
    pixel_frames = 1 + (frames - 1) * time_factor  # causal: the first latent frame is one frame
    return shape, (1, audio_channels, round(pixel_frames / fps * per_second), bins)


def level_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """`shape` with its last two (spatial) axes divided by `factor`."""
    return (*shape[:-2], shape[-2] // factor, shape[-1] // factor)


def smooth_time_embedding(model, family: str, cutoff: float = 0.015) -> None:
    """Scale the input weights of the time-embedding layers (time_layers) on sinusoid frequencies f > cutoff (rad
    per timestep unit, the host's embeddings run t over 0..1000) by cutoff / f.

    Why: with random weights, every sinusoid of the timestep embedding counts equally, and the fastest ones
    turn by up to 1 rad per timestep unit, about 33 rad per step of a 30-step schedule, so the modulation of
    every block, and with it the output, changes at random from one step to the next (on the random Flux the
    output changed by 0.5-0.8 per step, benchmarks/results/step-cache-h200.md, where no cache could reuse
    anything). Trained models vary smoothly along the schedule, which is what step caches exploit. At the
    cutoff a 30-step schedule turns a sinusoid by about 0.5 rad per step.
    """
    import torch

    for layer, features in time_layers(model.diffusion_model, family):
        half = features // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)  # one half, the other
        scale = (cutoff / freqs).clamp(max=1.0)
        with torch.no_grad():
            layer.weight[:, :features].mul_(torch.cat([scale, scale]).to(layer.weight.device, layer.weight.dtype))


def time_layers(dm, family: str) -> list:
    """(linear layer, sinusoid input features) of every timestep embedder of `family`'s diffusion model: the first
    layer after the sinusoids (max period 10000, t over 0..1000 in each: the flow models' multiplier 1000, Chroma's
    and Z-Image's time factor 1000, LTX's timestep_scale_multiplier 1000), whose first `features` inputs they are."""
    one = {"flux": lambda: dm.time_in.in_layer, "flux2": lambda: dm.time_in.in_layer,
           "sdxl": lambda: dm.time_embed[0], "wan22_ti2v_5b": lambda: dm.time_embedding[0],
           "qwen_image": lambda: dm.time_text_embed.timestep_embedder.linear_1,
           "z_image": lambda: dm.t_embedder.mlp[0]}  # comfy/ldm/lumina/model.py:524, 841
    if family in one:
        layer = one[family]()
        return [(layer, layer.in_features)]
    if family == "chroma":  # the approximator's input: 16 timestep, 16 guidance, 32 block-index sinusoids
        return [(dm.distilled_guidance_layer.in_proj, 16)]  # (comfy/ldm/chroma/model.py:163-176)
    if family == "hunyuan_video15":  # the blocks' and the text refiner's (comfy/ldm/hunyuan_video/model.py:159, 313)
        return [(dm.time_in.in_layer, 256), (dm.txt_in.t_embedder.in_layer, 256)]
    if family == "ltx2":  # every AdaLayerNormSingle: video, audio, their cross-attention scales and gates
        return [(m.emb.timestep_embedder.linear_1, 256) for name, m in dm.named_modules()
                if name.endswith("adaln_single")]
    raise ValueError(f"no timestep embedder known for {family!r}")


def build(family: str, device, offload_device=None, smooth_time: bool = False, config: dict | None = None):
    """A real-size model of `family` with random bf16 weights on `device`, its conditioning and sampler setup:
    (patcher, cond, cfg, scheduler, latent channels).

    offload_device: where the host puts the model when it unloads it (default: `device`, it stays).
    smooth_time: the time-smooth stand-in (smooth_time_embedding). config: fields over the family's unet_config
    (fewer blocks, tiny sizes)."""
    import comfy.supported_models as sm
    import torch

    name, cfg, channels, _, _ = FAMILIES[family]
    cfg = {**cfg, **(config or {})}
    if family == "flux":
        cfg = pack_module("host.features").flux_unet_config(cfg)  # txt_ids_dims where the host needs it
    mc = getattr(sm, name)(dict(cfg))
    mc.set_inference_dtype(torch.bfloat16, None)
    with pack_module("host.features").materialised_weights():  # dynamic VRAM builds layers empty
        model = mc.get_model({}, device=device)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            p.zero_() if pname.endswith("bias") else p.normal_(0, 0.02)
    if smooth_time:
        smooth_time_embedding(model, family)
    if family in ("flux", "sdxl"):  # the newer families keep the layers their classes build in fp32 (Wan's patch
        model = model.to(torch.bfloat16)  # embedding), as the host's loader does
    patcher = model_patcher(model, device, offload_device or device)
    tokens, width, extras, cfg_scale, scheduler = CONDITIONING[family]
    width = cfg[width] if isinstance(width, str) else width  # a unet_config field (LTX-2's caption_channels)
    return patcher, random_cond(tokens, width, extras), cfg_scale, scheduler, channels


def random_cond(tokens: int, width: int, extras: dict, seed: int = 0) -> list:
    """`[[cross_attn (1, tokens, width), extras]]`; an extra given as a shape tuple becomes a random tensor."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cross = torch.randn(1, tokens, width, generator=g)
    return [[cross, {k: torch.randn(1, *v, generator=g) if isinstance(v, tuple) else v for k, v in extras.items()}]]


def timed(fn, repeats: int) -> list[float]:
    import torch

    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def forward_flops(guider, sampler, sigmas, shape: tuple[int, ...]) -> float:
    """FLOPs of one sampling step (one model call, CFG included) on a latent of `shape`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(shape)
    with FlopCounterMode(display=False) as counter:
        guider.sample(torch.randn_like(x), x, sampler, torch.stack([sigmas[0], sigmas.new_zeros(())]), seed=0,
                      disable_pbar=True)
    return float(counter.get_total_flops())


def step_seconds(guider, sampler, sigmas, shape: tuple[int, ...], steps: int = 10) -> dict[int, float]:
    """Median seconds per step of direct sampling at each level size (what the model itself costs there)."""
    import torch

    def runner(x):
        return lambda: guider.sample(torch.randn_like(x), x, sampler, sigmas[-(steps + 1):], seed=0,
                                     disable_pbar=True)

    out = {}
    for f in (1, 2, 4):
        run = runner(torch.zeros(level_shape(shape, f)))
        run()
        out[f] = statistics.median(timed(run, 3)) / steps
    return out


def timelines(guider, direct, pyramid_b, family: str, size: int) -> dict:
    """Synchronised timelines: direct, ladder b first graphed run, replaying kept graphs, after releasing them."""
    from pyramid_timeline import traced

    graphs, graph_store = pack_module("host.cuda_graphs"), pack_module("kernels.cuda_graphs.store")
    out = {}
    for name, run in (("direct", direct), ("b first graphed run", pyramid_b), ("b kept graphs", pyramid_b),
                      ("b after release", pyramid_b)):
        if name == "b after release":
            graph_store.release_kept_graphs()
        timeline = traced(guider, run, graphs)
        title = f"{family} {size}, {name}"
        print(timeline.table(title), flush=True)
        out[name] = {"table": timeline.table(title), "seconds_by_segment": timeline.totals()}
    return out


def bench_model(family: str, args, pyr_sampling, pyr) -> dict:
    import comfy.samplers
    import torch

    graph_store = pack_module("kernels.cuda_graphs.store")
    device = torch.device("cuda")
    patcher, cond, cfg, scheduler, _ = build(family, device)
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, cond)
    guider.set_cfg(cfg)
    sampler = comfy.samplers.sampler_object("euler")
    shape = latent_shape(family, args.size)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), scheduler, args.steps).cpu()
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    latent = torch.zeros_like(noise)
    flops = {f: forward_flops(guider, sampler, sigmas, level_shape(shape, f)) for f in (1, 2, 4)}

    def direct():
        return guider.sample(noise, latent, sampler, sigmas, seed=1, disable_pbar=True)

    def pyramid(ladder, graphs=True):
        levels = pyr.parse_ladder(ladder)
        return lambda: pyr_sampling.pyramid_sample(guider, noise, latent, sampler, sigmas, levels, seed=1,
                                                   disable_pbar=True, cuda_graphs=graphs)

    result = {"model": family, "size": args.size, "steps": args.steps, "cfg": cfg, "flops_per_step": flops,
              "step_seconds": step_seconds(guider, sampler, sigmas, shape)}
    if args.timeline:
        result["timeline"] = timelines(guider, direct, pyramid(LADDERS["b"]), family, args.size)
    times = {"direct": timed(direct, args.repeats)}
    for key, ladder in LADDERS.items():
        pyramid(ladder)()  # the warm-up a signature needs once per process
        graph_store.release_kept_graphs()
        times[f"{key}_first"] = timed(pyramid(ladder), 1)  # captures, then later runs replay kept graphs
        times[key] = timed(pyramid(ladder), args.repeats)
        times[f"{key}_eager"] = timed(pyramid(ladder, graphs=False), args.repeats)
        graphed, eager = pyramid(ladder)().float(), pyramid(ladder, graphs=False)().float()
        store = graph_store._store  # the graphs this ladder's runs captured (none where the host refuses them)
        result[f"graphs_captured_{key}"] = sum(1 for g in store.graphs.values() if g) if store else 0
        result[f"graph_vs_eager_rel_diff_{key}"] = float((graphed - eager).norm() / eager.norm())
        result[f"graph_vs_eager_bitwise_{key}"] = bool(torch.equal(graphed, eager))
        stages = pyr.plan_stages(args.steps, pyr.parse_ladder(ladder))
        cost = sum((s.end - s.start) * flops[s.factor] for s in stages) + sum(flops[s.factor] for s in stages[:-1])
        result[f"predicted_{key}"] = args.steps * flops[1] / cost
        secs = result["step_seconds"]
        cost_t = sum((s.end - s.start) * secs[s.factor] for s in stages) + sum(secs[s.factor] for s in stages[:-1])
        result[f"predicted_from_step_times_{key}"] = args.steps * secs[1] / cost_t
    kept = graph_store.kept_pool_bytes()  # both ladders' graphs (None: the allocator gave no snapshot)
    result["kept_graph_pool_gib"] = None if kept is None else kept / 2**30
    med = {k: statistics.median(v) for k, v in times.items()}
    for key in LADDERS:
        result[f"speedup_{key}"] = med["direct"] / med[key]
        result[f"speedup_{key}_eager"] = med["direct"] / med[f"{key}_eager"]
        result[f"efficiency_{key}"] = result[f"speedup_{key}"] / result[f"predicted_{key}"]
    result["seconds"] = times
    return result


def headline(out: dict) -> dict:
    """The committed figures: pyramid_{speedup,predicted}_{model}{size}_{ladder}."""
    figures = {}
    for family, res in out["results"].items():
        for key in LADDERS:
            figures[f"pyramid_speedup_{family}{res['size']}_{key}"] = round(res[f"speedup_{key}"], 3)
            figures[f"pyramid_predicted_{family}{res['size']}_{key}"] = round(res[f"predicted_{key}"], 3)
            figures[f"graphs_captured_{family}_{key}"] = res[f"graphs_captured_{key}"]
        figures[f"graphs_bitwise_equal_eager_{family}"] = all(res[f"graph_vs_eager_bitwise_{key}"] for key in LADDERS)
    if "flux" in out["results"]:   # graphs refused (dynamic VRAM) make this eager against eager: read beside it
        figures["graphs_bitwise_equal_eager"] = figures["graphs_bitwise_equal_eager_flux"]
        figures["graphs_used"] = figures["graphs_captured_flux_b"] > 0
    figures["host"] = [out["device"].get("comfyui"), out["device"].get("memory_mode")]
    return figures


def markdown(out: dict) -> str:
    dev = out["device"]
    lines = [f"# Pyramid sampling speed ({dev['gpu']}, driver {dev['driver']}, torch {dev['torch']}, "
             f"triton {dev['triton']}, {dev['date']})", "", f"Command: `{out['command']}`", "",
             "| model | size | ladder | direct s | pyramid s | predicted | measured | measured/predicted | "
             "first run s | eager pyramid s | eager measured | graphs vs eager rel. diff | bitwise |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, res in out["results"].items():
        direct = statistics.median(res["seconds"]["direct"])
        for key, ladder in LADDERS.items():
            lines.append(f"| {family} | {res['size']} | {key}: `{ladder}` | {direct:.2f} | "
                         f"{statistics.median(res['seconds'][key]):.2f} | {res[f'predicted_{key}']:.2f}x | "
                         f"{res[f'speedup_{key}']:.2f}x | {res[f'efficiency_{key}']:.0%} | "
                         f"{res['seconds'][f'{key}_first'][0]:.2f} | "
                         f"{statistics.median(res['seconds'][f'{key}_eager']):.2f} | "
                         f"{res[f'speedup_{key}_eager']:.2f}x | {res[f'graph_vs_eager_rel_diff_{key}']:.1e} | "
                         f"{res[f'graph_vs_eager_bitwise_{key}']} |")
        lines += ["", *(t["table"] for t in res.get("timeline", {}).values())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="flux,sdxl")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timeline", action="store_true", help="print synchronised per-stage timelines")
    args = parser.parse_args()
    import_host()
    import torch

    pyr_sampling, pyr = pack_module("host.pyramid"), pack_module("core.samplers.pyramid")
    out = {"device": device_info(), "command": " ".join(sys.argv), "results": {}}
    for family in args.models.split(","):
        res = bench_model(family, args, pyr_sampling, pyr)
        torch.cuda.empty_cache()
        out["results"][family] = res
        for key in LADDERS:
            print(f"{family} {args.size} ladder {key} ({LADDERS[key]}): predicted {res[f'predicted_{key}']:.2f}x, "
                  f"measured {res[f'speedup_{key}']:.2f}x ({res[f'efficiency_{key}']:.0%} of predicted); "
                  f"from measured step times {res[f'predicted_from_step_times_{key}']:.2f}x", flush=True)
        print(f"{family} seconds per step by level factor: {res['step_seconds']}", flush=True)
        if args.json:
            out["headline"] = headline(out)
            args.json.write_text(json.dumps(out, indent=1))
            args.json.with_suffix(".md").write_text(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
