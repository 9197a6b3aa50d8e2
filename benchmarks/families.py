"""The model families of 2026 on the GPU (issue 18): pyramid speed, block-sparse attention, step cache vs EasyCache.

    source benchmarks/device_env.sh   # on the lent H200 (carry .device: tools/device_bundle.py)
    python3 benchmarks/families.py --json OUT/families-h200.json
    $(python3 tools/host.py python) benchmarks/families.py --smoke --json /tmp/f.json   # tiny sizes on the CPU

Real-size random-weight models built from the host's own classes (progressive_speed.build), bf16. Weights are
random: every figure here is a speed figure. One JSON, `families.<family>.<figure>`, written after every figure.

pyramid (figure 1): ladder b (`4:0.35, 2:0.25`) against direct sampling at 2048x2048, euler, --steps steps, on
  Qwen-Image (20.4B: 60 blocks, 3072 wide, 8x latent patchified 2x2: 128 x 128 = 16,384 image tokens, 512 text
  tokens of 3584, cfg 1) and Flux.2 dev (32.2B: 8 + 48 blocks, 6144 wide, 16x latent, patch 1: 16,384 image
  tokens, 512 text tokens of 15360). predicted = FLOPs of direct / FLOPs of the pyramid (one forward per level
  size counted by FlopCounterMode, weighted by each stage's steps, plus the extra evaluation at the end of every
  lower level: progressive_speed.bench_model's count); measured = median wall time of whole runs, direct / pyramid.
  `pyramid_first_s` is the first pyramid run (CUDA-graph capture where the host's memory mode allows it).
attention (figure 2): self-attention over the video tokens of a 720p clip, cuDNN SDPA against block-sparse
  attention at 80 % and 90 % block sparsity (block 128, keep ratio 0.2 / 0.1), the mask cost included: the
  eager predictor (predict_block_plan; compiled it was 0.1 ms faster at 75,600 tokens,
  results/sparse-attention-h200-comfy0330-75k.md), the BlockMask built from the plan and the compiled
  FlexAttention kernel, timed together; q and k have local structure (sparse_attention.structured_qkv). Token
  counts and heads from the host (ComfyUI 0.33.0) source:
    wan22_a14b       1280x720, 81 frames. Wan 2.1 VAE (comfy/sd.py:831-833: 8x, frames (81 + 3) // 4 = 21):
                     21 x 90 x 160; patch (1, 2, 2) (comfy/model_detection.py:737): 21 x 45 x 80 = 75,600 tokens;
                     heads dim // 128 = 5120 // 128 = 40 (model_detection.py:735), head dim 128.
    wan22_ti2v_5b    1280x704, 121 frames. Wan 2.2 VAE (sd.py:817-820: 16x, (121 + 3) // 4 = 31): 31 x 44 x 80;
                     patch (1, 2, 2): 31 x 22 x 40 = 27,280 tokens; 3072 // 128 = 24 heads of 128.
    hunyuan_video15  1280x720, 121 frames. HunyuanVideo 1.5 VAE (sd.py:761-765: 16x, 4x in time): 31 x 45 x 80;
                     patch [1, 1, 1] (read from img_in, model_detection.py:217; the real model's is 1): 111,600
                     tokens; heads hidden // 128 = 2048 // 128 = 16 (model_detection.py:237). Its joint attention
                     also holds the text tokens (kept dense), which are left out here.
step_cache (figure 3): step_cache.bench_model (PyraStepCache searched to EasyCache's deviation, EasyCache and
  LazyCache at 0.2, uncached) at real width with fewer blocks, on the time-smooth stand-in
  (progressive_speed.smooth_time_embedding), CACHE_MODELS: at 768x768 Flux.2 dev (6144 wide, 2 + 6 of 8 + 48
  blocks, Flux.1 preset), Qwen-Image (3072 wide, 8 of 60), Chroma (3072 wide, 3 + 6 of 19 + 38) and Z-Image (3840
  wide, 8 of 30 layers beside its 2 + 2 refiner layers, the lumina2 preset); at 832x480, 9 latent frames, Wan 2.2
  TI2V-5B (3072 wide, 8 of 30, Wan 2.1 preset, 33 frames), HunyuanVideo 1.5 (2048 wide, 8 of 54, 33 frames) and
  LTX-2 (LTXAV: 4096-wide video and 2048-wide audio, 8 of 48, 65 frames with their 65 audio latents: the host's
  EasyCache needs the audio stream, without it it fails on the model's input list). Random weights show speed
  only: the deviations and reuse counts say nothing about a trained model's quality. A family the host cannot
  compare is skipped with the reason (step_cache_skip: LTX-2 on 0.8.1, whose EasyCache takes no audio-video input).
  The default device bundle has no av, so comfy_api does not import and EasyCache's node classes get
  step_cache's stand-in base (its holders and wrappers are the host's); `easycache_node_base` records which.
  `tools/device_bundle.py --video` brings av but drops comfy-kitchen's CUDA extension, whose kernels the host's
  Flux rope runs on (comfy/ldm/flux/math.py): `host_extras` records both.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

from _host import device_info, import_host, pack_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import progressive_speed as ps
import sparse_attention as sa

FIGURES = ("pyramid", "attention", "step_cache")
# Flux.2 first: the host reserves 70 GiB of inference memory beside its 60 GiB of weights at 2048x2048 (its
# memory_usage_factor, 29.3); should a model outlive free_memory, Qwen-Image (38 GiB + 17) still fits beside it.
PYRAMID_FAMILIES = ("flux2", "qwen_image")
LADDER = ps.LADDERS["b"]
# family -> (tokens, heads, head dim); the derivation is in the docstring
VIDEO_ATTENTION = {"wan22_a14b": (75600, 40, 128), "wan22_ti2v_5b": (27280, 24, 128),
                   "hunyuan_video15": (111600, 16, 128)}
SPARSITY = {"s80": 0.8, "s90": 0.9}
BLOCK = 128
# figure 3: family -> (cache preset, model family, blocks over the real config, latent: size, width, frames)
# (presets: core/cache/presets.py, by the family names of host/models.py; Z-Image is `lumina2` there)
CACHE_MODELS = {
    "flux2": ("flux", "flux2", {"depth": 2, "depth_single_blocks": 6}, (768, None, 1)),
    "wan22_ti2v_5b": ("wan21", "wan22_ti2v_5b", {"num_layers": 8}, (480, 832, 9)),
    "qwen_image": ("qwen_image", "qwen_image", {"num_layers": 8}, (768, None, 1)),
    "chroma": ("chroma", "chroma", {"depth": 3, "depth_single_blocks": 6}, (768, None, 1)),
    "z_image": ("lumina2", "z_image", {"n_layers": 8}, (768, None, 1)),
    "hunyuan_video15": ("hunyuan_video", "hunyuan_video15", {"depth": 8}, (480, 832, 9)),
    "ltx2": ("ltx2", "ltx2", {"num_layers": 8}, (480, 832, 9)),
}
# --smoke: tiny widths on the CPU (the code path, not a figure); three blocks or more, so the cache has one to skip
SMOKE_MODELS = {
    "qwen_image": {"num_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2, "axes_dims_rope": [8, 12, 12]},
    "flux2": {"hidden_size": 128, "num_heads": 1, "depth": 1, "depth_single_blocks": 2},
    "wan22_ti2v_5b": {"dim": 128, "num_heads": 1, "ffn_dim": 256, "num_layers": 3},
    # the approximator's out_dim is the blocks' width (its outputs modulate them)
    "chroma": {"hidden_size": 128, "num_heads": 1, "depth": 1, "depth_single_blocks": 2, "out_dim": 128,
               "hidden_dim": 128, "n_layers": 2},
    # dim >= 256: with z_image_modulation the blocks' adaLN reads min(dim, 256) features (host/tiny_image_families.py)
    "z_image": {"dim": 256, "n_heads": 2, "n_kv_heads": 2, "n_layers": 3, "n_refiner_layers": 1},
    "hunyuan_video15": {"hidden_size": 128, "num_heads": 1, "depth": 3},
    # the text connectors' width (heads x head width) must equal caption_channels (host/tiny_video_families.py)
    "ltx2": {"num_layers": 3, "num_attention_heads": 2, "attention_head_dim": 32, "cross_attention_dim": 64,
             "audio_num_attention_heads": 2, "audio_attention_head_dim": 16, "audio_cross_attention_dim": 32,
             "caption_channels": 32, "connector_num_attention_heads": 2, "connector_attention_head_dim": 16,
             "connector_num_layers": 1},
}
SMOKE_ATTENTION = {family: (1024, 2, 32) for family in VIDEO_ATTENTION}
NOTE = ("Random weights: speed only. Pyramid and step-cache runs go through the host's sampler on real-size (step "
        "cache: real-width, fewer blocks) models built from the host's classes; the step cache runs on the "
        "time-smooth stand-in, its deviations and reuse counts are not a trained model's. Every model runs at cfg 1 "
        "(one evaluation per step; Qwen-Image's stock workflow runs true CFG, two).")


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def timed(fn, repeats: int, cuda: bool) -> list[float]:
    """Wall seconds of `repeats` calls of fn, synchronised."""
    out = []
    for _ in range(repeats):
        _sync(cuda)
        t0 = time.perf_counter()
        fn()
        _sync(cuda)
        out.append(time.perf_counter() - t0)
    return out


def free_memory() -> dict:
    """Drop the host's loaded models and the kept CUDA graphs; GiB still allocated afterwards."""
    import comfy.model_management
    import torch

    pack_module("kernels.cuda_graphs.store").release_kept_graphs()
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    if not torch.cuda.is_available():
        return {}
    torch.cuda.empty_cache()
    return {"allocated_after_free_gib": torch.cuda.memory_allocated() / 2**30}


def predicted_speedup(steps: int, flops: dict[int, float]) -> float:
    """Direct FLOPs / pyramid FLOPs of ladder b (progressive_speed.bench_model's count)."""
    pyr = pack_module("core.samplers.pyramid")
    stages = pyr.plan_stages(steps, pyr.parse_ladder(LADDER))
    cost = sum((s.end - s.start) * flops[s.factor] for s in stages) + sum(flops[s.factor] for s in stages[:-1])
    return steps * flops[1] / cost


def bench_pyramid(family: str, args, device) -> dict:
    """Figure 1 on one family: FLOP-predicted and measured speedup of ladder b over direct sampling."""
    import comfy.samplers
    import torch

    cuda = device.type == "cuda"
    pyr_sampling, pyr = pack_module("host.pyramid"), pack_module("core.samplers.pyramid")
    t0 = time.perf_counter()
    patcher, cond, cfg, scheduler, _ = ps.build(family, device, config=SMOKE_MODELS[family] if args.smoke else None)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in patcher.model.diffusion_model.parameters())
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(cond, cond)
    guider.set_cfg(cfg)
    sampler = comfy.samplers.sampler_object("euler")
    shape = ps.latent_shape(family, args.size)
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), scheduler, args.steps).cpu()
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    latent = torch.zeros_like(noise)
    flops = {f: ps.forward_flops(guider, sampler, sigmas, ps.level_shape(shape, f)) for f in (1, 2, 4)}
    for f in (1, 2, 4):  # warm-up: one step at every level size
        x = torch.zeros(ps.level_shape(shape, f))
        guider.sample(torch.randn_like(x), x, sampler, sigmas[-2:], seed=0, disable_pbar=True)
    levels = pyr.parse_ladder(LADDER)

    def direct():
        return guider.sample(noise, latent, sampler, sigmas, seed=1, disable_pbar=True)

    def pyramid():
        return pyr_sampling.pyramid_sample(guider, noise, latent, sampler, sigmas, levels, seed=1, disable_pbar=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = timed(pyramid, 1, cuda)
    seconds = {"direct": [], "pyramid": []}
    for _ in range(max(1, args.repeats)):  # interleaved: drift of the machine's speed spreads over both
        seconds["direct"] += timed(direct, 1, cuda)
        seconds["pyramid"] += timed(pyramid, 1, cuda)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    predicted = predicted_speedup(args.steps, flops)
    stages = pyr.plan_stages(args.steps, levels)
    result = {"params": params, "unet_config": {**ps.FAMILIES[family][1], **(SMOKE_MODELS[family] if args.smoke
                                                                             else {})},
              "size": args.size, "latent": list(shape), "text": list(cond[0][0].shape[1:]), "cfg": cfg,
              "scheduler": scheduler, "sampler": "euler", "steps": args.steps, "ladder": LADDER,
              "stages": [[s.factor, s.start, s.end] for s in stages], "flops_per_step": flops,
              "build_s": build_s, "pyramid_first_s": first[0], "seconds": seconds,
              "direct_s": med["direct"], "pyramid_s": med["pyramid"], "predicted": predicted,
              "measured": med["direct"] / med["pyramid"]}
    result["measured_over_predicted"] = result["measured"] / predicted
    result["tflops_direct"] = args.steps * flops[1] / med["direct"] / 1e12
    if cuda:
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    guider = patcher = None  # the closures hold them: freed before the next family is built
    result |= free_memory()
    return result


def attention_case(n: int, heads: int, dim: int, repeats: int, cuda: bool) -> dict:
    """Figure 2 on one token count: cuDNN SDPA vs predicted mask + BlockMask + FlexAttention, per sparsity."""
    import torch
    import torch.nn.functional as F

    attn, bsa = pack_module("core.attention"), pack_module("kernels.block_sparse_attention")
    q, k, v = sa.structured_qkv(n, heads=heads, dim=dim, device="cuda" if cuda else "cpu")
    block = BLOCK if cuda else 64
    dense = sa.dense("cudnn") if cuda else F.scaled_dot_product_attention
    ms = (lambda fn: sa.median_ms(fn, repeats)) if cuda else (lambda fn: 1e3 * statistics.median(timed(fn, 3, False)))
    ref = dense(q, k, v)
    row = {"tokens": n, "heads": heads, "head_dim": dim, "block": block, "dtype": str(q.dtype),
           "dense": "cudnn" if cuda else "sdpa (cpu)", "dense_ms": ms(lambda: dense(q, k, v))}
    row["dense_tflops"] = 4 * n * n * heads * dim / row["dense_ms"] / 1e9  # FLOPs per ms / 1e9 = TFLOP/s
    backend = bsa.SparseAttentionBackend()
    for key, sparsity in SPARSITY.items():
        keep = 1.0 - sparsity

        def total(keep=keep):
            return backend(q, k, v, attn.predict_block_plan(q, k, block, keep_ratio=keep, compiled=False), block)

        plan = attn.predict_block_plan(q, k, block, keep_ratio=keep, compiled=False)
        out = total()
        row[key] = {"target_sparsity": sparsity, "sparsity": attn.block_sparsity(plan.mask),
                    "total_ms": ms(total),
                    "predict_ms": ms(lambda keep=keep: attn.predict_block_plan(q, k, block, keep_ratio=keep,
                                                                                compiled=False)),
                    "rel_error_vs_dense": float((out.float() - ref.float()).norm() / ref.float().norm()),
                    "fallback_reason": backend.fallback_reason}
        row[key]["speedup_vs_dense"] = row["dense_ms"] / row[key]["total_ms"]
    q = k = v = ref = out = None
    if cuda:
        torch.cuda.empty_cache()
    return row


def cache_builder(family: str, args, device):
    """() -> (patcher, cond, cfg, scheduler, latent shape) of figure 3's model of `family`."""
    _, model, blocks, (size, width, frames) = CACHE_MODELS[family]

    def build():
        config = {**blocks, **(SMOKE_MODELS[model] if args.smoke else {})}
        patcher, cond, cfg, scheduler, _ = ps.build(model, device, smooth_time=True, config=config)
        scale = 8 if args.smoke else 1
        return patcher, cond, cfg, scheduler, ps.latent_shape(model, size // scale, frames,
                                                              width // scale if width else None)
    return build


def step_cache_skip(family: str) -> str | None:
    """Why this host cannot give figure 3 on `family` (it is then skipped and says so), else None."""
    if family == "ltx2":
        import step_cache

        # 0.33.0's EasyCache splits LTX-2's video and audio inputs (comfy_extras/nodes_easycache.py:12-17); older
        # ones slice the model input as one tensor, which fails on the list LTX-2's model takes
        if not hasattr(step_cache._import_easycache(), "_extract_tensor"):
            return ("this host's EasyCache takes the model input as one tensor, not LTX-2's video and audio latents "
                    "(comfy_extras/nodes_easycache.py): no baseline to compare with")
    return None


def bench_step_cache(family: str, args, device) -> dict:
    import step_cache

    preset, model, blocks, latent = CACHE_MODELS[family]
    result = step_cache.bench_model(preset, device, args.cache_steps, args.repeats + 1, args.search_runs,
                                    smooth_time=True, built=cache_builder(family, args, device)())
    runs = result["runs"]
    latest = sys.modules.get("comfy_api.latest")  # the host's, or step_cache's stand-in where comfy_api lacks av
    result["easycache_node_base"] = "comfy_api" if getattr(latest, "__file__", None) else "stand-in (no comfy_api)"
    result |= {"preset": preset, "model": model, "blocks": blocks, "image": list(latent),
               "speedup_ours": runs["ours_deviation_matched"]["speedup"],
               "speedup_easycache": runs["easycache"]["speedup"],
               "deviation_ours": runs["ours_deviation_matched"]["deviation"],
               "deviation_easycache": runs["easycache"]["deviation"]}
    return result | free_memory()


def headline(families: dict) -> dict:
    """Flat keys `<figure>_<what>_<family>[_<sparsity>]`."""
    out = {}
    for family, figs in families.items():
        if "pyramid" in figs:
            p = figs["pyramid"]
            out |= {f"pyramid_speedup_{family}{p['size']}_b": p["measured"],
                    f"pyramid_predicted_{family}{p['size']}_b": p["predicted"],
                    f"pyramid_measured_over_predicted_{family}{p['size']}_b": p["measured_over_predicted"]}
        for key in SPARSITY if "attention" in figs else ():
            out[f"attn_speedup_vs_cudnn_{family}_{key}"] = figs["attention"][key]["speedup_vs_dense"]
        if "step_cache" in figs:
            c = figs["step_cache"]
            out |= {f"cache_speedup_{family}": c["speedup_ours"], f"easycache_speedup_{family}": c["speedup_easycache"],
                    f"cache_deviation_{family}": c["deviation_ours"],
                    f"easycache_deviation_{family}": c["deviation_easycache"]}
    return out


def markdown(out: dict) -> str:
    dev = out["device"]
    lines = [f"# The families of 2026 ({dev.get('gpu', 'cpu')}, ComfyUI {dev.get('comfyui')}, "
             f"{dev.get('memory_mode')}, torch {dev.get('torch')}, {dev.get('date')})", "",
             f"Command: `{out['command']}`", "", out["note"], ""]
    pyr = {f: r["pyramid"] for f, r in out["families"].items() if "pyramid" in r}
    if pyr:
        lines += [f"## Pyramid, ladder b (`{LADDER}`), {out['dtype']}", "",
                  "| family | params | latent | steps | direct s | pyramid s | first pyramid s | predicted | "
                  "measured | measured/predicted | direct TFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {f} | {r['params'] / 1e9:.1f}B | {r['latent']} | {r['steps']} | {r['direct_s']:.2f} | "
                  f"{r['pyramid_s']:.2f} | {r['pyramid_first_s']:.2f} | {r['predicted']:.2f}x | {r['measured']:.2f}x | "
                  f"{r['measured_over_predicted']:.0%} | {r['tflops_direct']:.0f} |" for f, r in pyr.items()]
        lines.append("")
    att = {f: r["attention"] for f, r in out["families"].items() if "attention" in r}
    if att:
        lines += ["## Block-sparse attention vs dense SDPA (mask prediction and BlockMask included)", "",
                  "| family | tokens | heads x dim | dense | dense ms | dense TFLOP/s | sparsity | sparse total ms | "
                  "predict ms | speedup | rel. error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for f, r in att.items():
            lines += [f"| {f} | {r['tokens']} | {r['heads']} x {r['head_dim']} | {r['dense']} | {r['dense_ms']:.2f} | "
                      f"{r['dense_tflops']:.0f} | {r[k]['sparsity']:.3f} | {r[k]['total_ms']:.2f} | "
                      f"{r[k]['predict_ms']:.2f} | {r[k]['speedup_vs_dense']:.2f}x | {r[k]['rel_error_vs_dense']:.3f} |"
                      for k in SPARSITY]
        lines.append("")
    for f, r in out["families"].items():
        if "step_cache" in r:
            c = r["step_cache"]
            lines += [f"## Step cache, {f} ({c['model']}, blocks {c['blocks']}, latent {c['latent']}, "
                      f"{c['steps']} steps, preset {c['preset']}; EasyCache's node base: "
                      f"{c['easycache_node_base']})", "",
                      "| run | computed | reused | speedup | deviation |", "|---|---|---|---|---|"]
            lines += [f"| {name} | {row['computed']} | {row['reused']} | {row.get('speedup', 1.0):.2f}x | "
                      f"{row['deviation']:.4f} |" for name, row in c["runs"].items()]
            lines.append("")
    lines += [f"Skipped: {key}: {why}" for key, why in out.get("skipped", {}).items()]
    lines += [f"Failed: {key}: {err.strip().splitlines()[-1]}" for key, err in out.get("errors", {}).items()]
    lines += ["Headline: " + ", ".join(f"{k} {v:.3g}" for k, v in out["headline"].items()), ""]
    return "\n".join(lines)


def write(out: dict, path: Path | None) -> None:
    out["headline"] = headline(out["families"])
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(out))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="results (a .md beside it), rewritten after every figure")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated figures of {', '.join(FIGURES)}")
    parser.add_argument("--families", default="", help="comma-separated families (default: each figure's all)")
    parser.add_argument("--steps", type=int, default=16, help="pyramid: sampling steps")
    parser.add_argument("--size", type=int, default=2048, help="pyramid: image side")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed pyramid runs of each (at least 1); the step cache times repeats + 1 rounds")
    parser.add_argument("--attention-repeats", type=int, default=10, help="attention: timed calls per median")
    parser.add_argument("--cache-steps", type=int, default=20, help="step cache: sampling steps")
    parser.add_argument("--search-runs", type=int, default=3, help="step cache: runs of the deviation search")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the code path")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(FIGURES)
    known = {*PYRAMID_FAMILIES, *VIDEO_ATTENTION, *CACHE_MODELS}
    unknown |= set(filter(None, args.families.split(","))) - known
    if unknown:
        parser.error(f"unknown {', '.join(sorted(unknown))}: figures {', '.join(FIGURES)}; "
                     f"families {', '.join(sorted(known))}")
    if args.smoke:
        args.size, args.steps, args.cache_steps, args.attention_repeats = min(args.size, 256), min(args.steps, 6), \
            min(args.cache_steps, 6), min(args.attention_repeats, 2)
    return args


def host_extras() -> dict:
    """What of the host's optional compiled parts this process has (the --video bundle drops the first)."""
    try:
        from comfy_kitchen.backends import cuda as kitchen_cuda

        kitchen = bool(getattr(kitchen_cuda, "_EXT_AVAILABLE", False))
    except ImportError:
        kitchen = None
    try:
        import av  # noqa: F401

        has_av = True
    except ImportError:
        has_av = False
    return {"comfy_kitchen_cuda_extension": kitchen, "av": has_av}


def main(argv=None) -> int:
    args = parse_args(argv)
    import_host(cpu=args.smoke)
    import torch

    cuda = not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    wanted = set(args.only.split(","))
    chosen = set(filter(None, args.families.split(",")))

    def pick(names):
        return [n for n in names if not chosen or n in chosen]

    out = {"device": device_info() if cuda else {"gpu": "cpu (smoke)", "torch": torch.__version__,
                                                   "date": time.strftime("%Y-%m-%d"),
                                                   **__import__("_host").host_info()},
           "host_extras": host_extras(), "command": " ".join(["python3", *sys.argv]), "dtype": "bfloat16",
           "note": NOTE, "figure_seconds": {}, "errors": {}, "skipped": {},
           "families": {}}
    for figure, names, run in (
            ("pyramid", PYRAMID_FAMILIES, lambda f: bench_pyramid(f, args, device)),
            ("attention", VIDEO_ATTENTION, lambda f: attention_case(
                *(SMOKE_ATTENTION if args.smoke else VIDEO_ATTENTION)[f], args.attention_repeats, cuda)),
            ("step_cache", CACHE_MODELS, lambda f: bench_step_cache(f, args, device))):
        if figure not in wanted:
            continue
        t0 = time.perf_counter()
        for family in pick(names):
            t1 = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] {figure} {family}", flush=True)
            if figure == "step_cache" and (why := step_cache_skip(family)):
                out["skipped"][f"{family}.{figure}"] = why
                print(f"skipped: {why}", flush=True)
                continue
            try:
                result = run(family)
            except Exception:  # one device run gives every figure it can: the failure is recorded, not hidden
                out["errors"][f"{family}.{figure}"] = traceback.format_exc()[-3000:]
                print(out["errors"][f"{family}.{figure}"], flush=True)
                free_memory()
                continue
            out["families"].setdefault(family, {})[figure] = result
            result["wall_s"] = time.perf_counter() - t1
            print(figure, family, json.dumps(headline({family: {figure: result}})), flush=True)
            write(out, args.json)
        out["figure_seconds"][figure] = time.perf_counter() - t0
        write(out, args.json)
    print(markdown(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
