"""The example workflows of the 2026 model families (issue 18), as API prompts for tools/author_workflows.py.

Two per family where the host detects a tiny file (host/family_demo_files.py): `pyra-<family>-tiny` runs on the demo
files (random weights: it shows the wiring, not pictures) and `pyra-<family>` names the real model files as the
host's own blueprints and ComfyUI's documentation name them, for a user who has the weights. Chroma, Qwen-Image and
Z-Image have no tiny file (the host's detection fixes their widths), so only the real-file workflow.

Each workflow puts one Pyra node on the family where the README's family table says it runs: the pyramid sampler,
or the step cache where the host's own workflow samples through a node the pyramid sampler replaces (Flux.2's
SamplerCustomAdvanced with Flux2Scheduler, Wan 2.2 A14B's two KSamplerAdvanced switching experts at half the steps).
Wan 2.2 A14B also has a pair with both experts in one pyramid sampler (`low_noise_model`), switched by sigma.

Real file names, and where each was checked (host 0.33.0's blueprints/ folder, or stored documentation):
- Flux.2 dev: flux2_dev_fp8mixed, mistral_3_small_flux2_bf16 (CLIPLoader type flux2): blueprint "Text to Image
  (Flux.2 Dev)"; flux2-vae: blueprint "Image Edit (Flux.2 Klein 4B)" (the dev blueprint loads a
  full_encoder_small_decoder VAE instead). Klein 4B: flux-2-klein-base-4b-fp8 with qwen_3_4b, same blueprint.
- Chroma: Chroma1-HD (huggingface.co/Comfy-Org/Chroma1-HD), t5xxl_fp16 (comfyanonymous/flux_text_encoders), the
  Flux VAE ae (blueprints of Z-Image name the same file); CLIPLoader type chroma is the host's.
- Qwen-Image: qwen_image_fp8_e4m3fn, qwen_2.5_vl_7b_fp8_scaled (type qwen_image), qwen_image_vae, AuraFlow shift
  3.1: blueprint "Text to Image (Qwen-Image)".
- Z-Image Turbo: z_image_turbo_bf16, qwen_3_4b (type lumina2), ae, shift 3, 8 steps res_multistep cfg 1: blueprint
  "Text to Image (Z-Image-Turbo)".
- Wan 2.2 TI2V-5B: wan2.2_ti2v_5B_fp16 and wan2.2_vae (Comfy-Org/Wan_2.2_ComfyUI_Repackaged), umt5_xxl_fp8_e4m3fn_
  scaled (type wan); shift 8 and the sampler settings are not from a stored template (unverified).
- Wan 2.2 A14B: wan2.2_t2v_high/low_noise_14B_fp8_scaled, umt5_xxl_fp8_e4m3fn_scaled, wan_2.1_vae, shift 5, the
  split at half the steps: blueprint "Text to Video (Wan 2.2)" (20 steps, cfg 3.5 without the lightx2v LoRAs).
- HunyuanVideo 1.5: hunyuanvideo1.5_720p_t2v_fp16, hunyuanvideo15_vae_fp16, qwen_2.5_vl_7b_fp8_scaled with
  byt5_small_glyphxl_fp16 (DualCLIPLoader type hunyuan_video_15): Comfy-Org/HunyuanVideo_1.5_repackaged and
  ComfyUI's tutorial; cfg 6 from the tutorial pages, no shift (the model's default) (unverified).
- LTX-2: ltx-2-19b-dev-fp8 (CheckpointLoaderSimple) with gemma_3_12B_it_fp4_mixed (LTXAVTextEncoderLoader):
  blueprint "Canny to Video (LTX 2.0)". Video only: the host's LTX-2 workflows add an audio latent and a second,
  upscaled stage, which this one leaves out. Its frames decode through PyraExactVAEDecode (the host's decode of a
  long LTX-2 clip holds several GiB of activations; the exact one a band's, with the same frames).
"""

from __future__ import annotations

# file-name inputs of the stock loaders: their values are model files, not fixed options
MODEL_FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "text_encoder"}
NEGATIVE = "blurry, low quality, distorted"


def _pyramid(model: list, positive: list, negative: list, latent: list, seed: int, steps: int, cfg: float,
             sampler: str = "euler", scheduler: str = "simple", ladder: str = "2:0.4") -> dict:
    return {"class_type": "PyraPyramidSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
        "positive": positive, "negative": negative, "latent_image": latent, "denoise": 1.0, "ladder": ladder,
        "upsample": "bicubic"}}


def _step_cache(model: list) -> dict:
    return {"class_type": "PyraStepCache", "inputs": {
        "model": model, "preset": "auto", "threshold": -1.0, "start_percent": 0.15, "end_percent": 0.95,
        "cache_on_cpu": False}}


def _demo_cond(family: str) -> dict:
    return {
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 1, "scale": 1.0}},
        "3": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 2, "scale": 0.0}},
    }


def _text(clip: list, prompt: str) -> dict:
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": prompt}}


def _unet(name: str) -> dict:
    return {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}}


def _clip(name: str, kind: str) -> dict:
    return {"class_type": "CLIPLoader", "inputs": {"clip_name": name, "type": kind, "device": "default"}}


def _vae(name: str) -> dict:
    return {"class_type": "VAELoader", "inputs": {"vae_name": name}}


def _decode_save(samples: list, vae: list, prefix: str, video: bool, frames: bool = False,
                 exact: bool = False) -> dict:
    """VAE Decode (or, `exact`, PyraExactVAEDecode with automatic bands) and the save nodes."""
    decode = {"class_type": "PyraExactVAEDecode", "inputs": {"samples": samples, "vae": vae, "slice_rows": 0}} \
        if exact else {"class_type": "VAEDecode", "inputs": {"samples": samples, "vae": vae}}
    out = {"20": decode}
    if video:
        out["21"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["20", 0], "filename_prefix": prefix, "fps": 16.0, "lossless": False, "quality": 90,
            "method": "default"}}
    if frames or not video:
        out["22"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": prefix}}
    return out


# --- Flux.2 ------------------------------------------------------------------------------------------------------

def _flux2(model: list, positive: list, negative: list | None, vae: list, size: int, steps: int,
           prefix: str) -> dict:
    """Flux.2 as the host's blueprints sample it: SamplerCustomAdvanced with Flux2Scheduler, the step cache on the
    model. With `negative` a CFGGuider (klein), else FluxGuidance 4 and a BasicGuider (dev, guidance-distilled)."""
    p = {
        "10": _step_cache(model),
        "11": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "14": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "15": {"class_type": "Flux2Scheduler", "inputs": {"steps": steps, "width": size, "height": size}},
        "16": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["13", 0], "guider": ["12", 0], "sampler": ["14", 0], "sigmas": ["15", 0],
            "latent_image": ["11", 0]}},
    }
    if negative is None:
        p["17"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": positive, "guidance": 4.0}}
        p["12"] = {"class_type": "BasicGuider", "inputs": {"model": ["10", 0], "conditioning": ["17", 0]}}
    else:
        p["12"] = {"class_type": "CFGGuider", "inputs": {
            "model": ["10", 0], "positive": positive, "negative": negative, "cfg": 5.0}}
    p.update(_decode_save(["16", 0], vae, prefix, video=False))
    return p


def flux2_tiny() -> dict:
    """Flux.2 klein (tiny demo file) with the step cache, sampled as the host's klein blueprint does."""
    p = {"1": _unet("pyra-demo-flux2-klein.safetensors"), **_demo_cond("flux2_klein"),
         "6": _vae("pyra-demo-flux2-vae.safetensors")}
    p.update(_flux2(["1", 0], ["2", 0], ["3", 0], ["6", 0], 256, 8, "pyra_flux2_tiny"))
    return p


def flux2_real() -> dict:
    """Flux.2 dev with the step cache (real file names)."""
    p = {"1": _unet("flux2_dev_fp8mixed.safetensors"), "4": _clip("mistral_3_small_flux2_bf16.safetensors", "flux2"),
         "2": _text(["4", 0], "a lighthouse on a cliff at dawn, detailed oil painting"),
         "6": _vae("flux2-vae.safetensors")}
    p.update(_flux2(["1", 0], ["2", 0], None, ["6", 0], 1024, 20, "pyra_flux2_dev"))
    return p


# --- the image DiTs without tiny files ---------------------------------------------------------------------------

def _image_real(unet: str, clip: tuple[str, str], vae: str, size: int, steps: int, cfg: float, prefix: str,
                shift: float | None = None, sampler: str = "euler") -> dict:
    p = {"1": _unet(unet), "4": _clip(*clip), "6": _vae(vae),
         "2": _text(["4", 0], "a red fox in fresh snow, morning light, photograph"),
         "3": _text(["4", 0], NEGATIVE),
         "8": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}}}
    model = ["1", 0]
    if shift is not None:
        p["7"] = {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": model, "shift": shift}}
        model = ["7", 0]
    p["9"] = _pyramid(model, ["2", 0], ["3", 0], ["8", 0], seed=5, steps=steps, cfg=cfg, sampler=sampler)
    p.update(_decode_save(["9", 0], ["6", 0], prefix, video=False))
    return p


def chroma_real() -> dict:
    """Chroma1-HD with the pyramid sampler (real file names; no tiny file: see the module docstring)."""
    return _image_real("Chroma1-HD.safetensors", ("t5xxl_fp16.safetensors", "chroma"), "ae.safetensors", 1024,
                       26, 4.0, "pyra_chroma")


def qwen_image_real() -> dict:
    """Qwen-Image with the pyramid sampler, shift 3.1 as the host's blueprint (real file names)."""
    return _image_real("qwen_image_fp8_e4m3fn.safetensors", ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image"),
                       "qwen_image_vae.safetensors", 1328, 20, 2.5, "pyra_qwen_image", shift=3.1)


def z_image_real() -> dict:
    """Z-Image Turbo with the pyramid sampler: 8 steps, cfg 1, res_multistep, shift 3 as the host's blueprint."""
    return _image_real("z_image_turbo_bf16.safetensors", ("qwen_3_4b.safetensors", "lumina2"), "ae.safetensors",
                       1024, 8, 1.0, "pyra_z_image", shift=3.0, sampler="res_multistep")


# --- Wan 2.2 TI2V-5B ----------------------------------------------------------------------------------------------

def _wan22_5b(model: list, positive: list, negative: list, vae: list, size: tuple[int, int, int], steps: int,
              cfg: float, prefix: str, frames: bool) -> dict:
    width, height, length = size
    p = {
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": 8.0}},
        "8": {"class_type": "Wan22ImageToVideoLatent", "inputs": {
            "vae": vae, "width": width, "height": height, "length": length, "batch_size": 1}},
        "9": _pyramid(["7", 0], positive, negative, ["8", 0], seed=5, steps=steps, cfg=cfg),
    }
    p.update(_decode_save(["9", 0], vae, prefix, video=True, frames=frames))
    return p


def wan22_5b_tiny() -> dict:
    """Wan 2.2 TI2V-5B (tiny demo file, a TAEHV decoder) with the pyramid sampler: H and W per level, frames kept."""
    p = {"1": _unet("pyra-demo-wan22-ti2v-5b.safetensors"), **_demo_cond("wan22"),
         "6": _vae("pyra-demo-wan22-taehv.safetensors")}
    p.update(_wan22_5b(["1", 0], ["2", 0], ["3", 0], ["6", 0], (128, 128, 9), 8, 5.0, "pyra_wan22_5b_tiny", True))
    return p


def wan22_5b_real() -> dict:
    """Wan 2.2 TI2V-5B text to video, 1280x704, 121 frames, with the pyramid sampler (real file names)."""
    p = {"1": _unet("wan2.2_ti2v_5B_fp16.safetensors"),
         "4": _clip("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan"), "6": _vae("wan2.2_vae.safetensors"),
         "2": _text(["4", 0], "a paper boat drifting down a rainy street, cinematic"), "3": _text(["4", 0], NEGATIVE)}
    p.update(_wan22_5b(["1", 0], ["2", 0], ["3", 0], ["6", 0], (1280, 704, 121), 20, 5.0, "pyra_wan22_5b", False))
    return p


# --- Wan 2.2 A14B: two experts -------------------------------------------------------------------------------------

def _wan22_a14b(high: list, low: list, positive: list, negative: list, vae: list, size: tuple[int, int, int],
                steps: int, cfg: float, prefix: str, frames: bool) -> dict:
    """The host's Wan 2.2 A14B graph: shift 5 on both experts, the high-noise one for steps [0, steps/2) with its
    leftover noise, the low-noise one for the rest; the step cache on each expert (each its own clone and cache)."""
    width, height, length = size
    split = steps // 2
    p = {
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": high, "shift": 5.0}},
        "17": {"class_type": "ModelSamplingSD3", "inputs": {"model": low, "shift": 5.0}},
        "10": _step_cache(["7", 0]),
        "18": _step_cache(["17", 0]),
        "8": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": width, "height": height, "length": length, "batch_size": 1}},
    }
    common = {"positive": positive, "negative": negative, "noise_seed": 5, "steps": steps, "cfg": cfg,
              "sampler_name": "euler", "scheduler": "simple"}
    p["9"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["10", 0], "add_noise": "enable", "latent_image": ["8", 0], "start_at_step": 0,
        "end_at_step": split, "return_with_leftover_noise": "enable"}}
    p["19"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["18", 0], "add_noise": "disable", "latent_image": ["9", 0], "start_at_step": split,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    p.update(_decode_save(["19", 0], vae, prefix, video=True, frames=frames))
    return p


def _wan22_a14b_files(tiny: bool) -> dict:
    """The loaders and conditioning of both A14B graphs: nodes 1 and 5 the experts, 2 and 3 the conditioning, 6 the
    VAE (tiny: the demo files; else the real names, with the text encoder as node 4)."""
    if tiny:
        return {"1": _unet("pyra-demo-wan22-a14b-high.safetensors"),
                "5": _unet("pyra-demo-wan22-a14b-low.safetensors"), **_demo_cond("wan22"),
                "6": _vae("pyra-demo-wan21-vae.safetensors")}
    return {"1": _unet("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"),
            "5": _unet("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
            "4": _clip("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan"), "6": _vae("wan_2.1_vae.safetensors"),
            "2": _text(["4", 0], "a hot-air balloon over a misty valley, drone shot"), "3": _text(["4", 0], NEGATIVE)}


def _wan22_a14b_workflow(graph, tiny: bool, prefix: str) -> dict:
    """`graph` (_wan22_a14b or _wan22_a14b_pyramid) on the files: tiny 128x128, 9 frames, 8 steps; real 640x640,
    81 frames, 20 steps (the host's blueprint), cfg 3.5 both."""
    p = _wan22_a14b_files(tiny)
    size, steps = ((128, 128, 9), 8) if tiny else ((640, 640, 81), 20)
    p.update(graph(["1", 0], ["5", 0], ["2", 0], ["3", 0], ["6", 0], size, steps, 3.5, prefix, tiny))
    return p


def wan22_a14b_tiny() -> dict:
    """Wan 2.2 A14B's two experts (tiny demo files), switched at half the steps, each with the step cache."""
    return _wan22_a14b_workflow(_wan22_a14b, True, "pyra_wan22_a14b_tiny")


def wan22_a14b_real() -> dict:
    """Wan 2.2 A14B text to video, 640x640, 81 frames, 20 steps split at 10, step cache per expert (real names)."""
    return _wan22_a14b_workflow(_wan22_a14b, False, "pyra_wan22_a14b")


def _wan22_a14b_pyramid(high: list, low: list, positive: list, negative: list, vae: list,
                        size: tuple[int, int, int], steps: int, cfg: float, prefix: str, frames: bool) -> dict:
    """Both A14B experts in one PyraPyramidSampler: shift 5 on each, the low-noise expert from sigma 0.875 on (the
    node's default: the boundary of Wan 2.2's text-to-video experts), ladder 2:0.4."""
    width, height, length = size
    p = {
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": high, "shift": 5.0}},
        "17": {"class_type": "ModelSamplingSD3", "inputs": {"model": low, "shift": 5.0}},
        "8": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": width, "height": height, "length": length, "batch_size": 1}},
    }
    p["9"] = _pyramid(["7", 0], positive, negative, ["8", 0], seed=5, steps=steps, cfg=cfg)
    p["9"]["inputs"].update(low_noise_model=["17", 0], expert_switch_sigma=0.875)
    p.update(_decode_save(["9", 0], vae, prefix, video=True, frames=frames))
    return p


def wan22_a14b_pyramid_tiny() -> dict:
    """Wan 2.2 A14B's two experts (tiny demo files) in the pyramid sampler, switched by sigma."""
    return _wan22_a14b_workflow(_wan22_a14b_pyramid, True, "pyra_wan22_a14b_pyramid_tiny")


def wan22_a14b_pyramid_real() -> dict:
    """Wan 2.2 A14B text to video, 640x640, 81 frames, 20 steps, both experts in the pyramid sampler (real names)."""
    return _wan22_a14b_workflow(_wan22_a14b_pyramid, False, "pyra_wan22_a14b_pyramid")


# --- HunyuanVideo 1.5 ----------------------------------------------------------------------------------------------

def _hv15(model: list, positive: list, negative: list, vae: list, size: tuple[int, int, int], steps: int,
          prefix: str, frames: bool) -> dict:
    width, height, length = size
    p = {"8": {"class_type": "EmptyHunyuanVideo15Latent", "inputs": {
             "width": width, "height": height, "length": length, "batch_size": 1}},
         "9": _pyramid(model, positive, negative, ["8", 0], seed=5, steps=steps, cfg=6.0)}
    p.update(_decode_save(["9", 0], vae, prefix, video=True, frames=frames))
    return p


def hunyuan_video15_tiny() -> dict:
    """HunyuanVideo 1.5 (tiny demo file, a TAEHV decoder) with the pyramid sampler."""
    p = {"1": _unet("pyra-demo-hunyuan-video15.safetensors"), **_demo_cond("hunyuan_video15"),
         "6": _vae("pyra-demo-hunyuan-video15-taehv.safetensors")}
    p.update(_hv15(["1", 0], ["2", 0], ["3", 0], ["6", 0], (128, 128, 9), 8, "pyra_hv15_tiny", True))
    return p


def hunyuan_video15_real() -> dict:
    """HunyuanVideo 1.5 720p text to video, 121 frames, with the pyramid sampler (real file names)."""
    p = {"1": _unet("hunyuanvideo1.5_720p_t2v_fp16.safetensors"),
         "4": {"class_type": "DualCLIPLoader", "inputs": {
             "clip_name1": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "clip_name2": "byt5_small_glyphxl_fp16.safetensors",
             "type": "hunyuan_video_15", "device": "default"}},
         "6": _vae("hunyuanvideo15_vae_fp16.safetensors"),
         "2": _text(["4", 0], "a glassblower shaping a glowing vase, close-up"), "3": _text(["4", 0], NEGATIVE)}
    p.update(_hv15(["1", 0], ["2", 0], ["3", 0], ["6", 0], (1280, 720, 121), 20, "pyra_hv15", False))
    return p


# --- LTX-2 ---------------------------------------------------------------------------------------------------------

def _ltx2(model: list, positive: list, negative: list, vae: list, size: tuple[int, int, int], steps: int,
          prefix: str, frames: bool) -> dict:
    width, height, length = size
    p = {"7": {"class_type": "LTXVConditioning", "inputs": {
             "positive": positive, "negative": negative, "frame_rate": 25.0}},
         "8": {"class_type": "EmptyLTXVLatentVideo", "inputs": {
             "width": width, "height": height, "length": length, "batch_size": 1}},
         "9": _pyramid(model, ["7", 0], ["7", 1], ["8", 0], seed=5, steps=steps, cfg=3.0)}
    p.update(_decode_save(["9", 0], vae, prefix, video=True, frames=frames, exact=True))
    return p


def ltx2_tiny() -> dict:
    """LTX-2 video (tiny demo model and VAE, their size in the files' metadata) with the pyramid sampler."""
    p = {"1": _unet("pyra-demo-ltx2.safetensors"), **_demo_cond("ltx2"), "6": _vae("pyra-demo-ltx2-vae.safetensors")}
    p.update(_ltx2(["1", 0], ["2", 0], ["3", 0], ["6", 0], (128, 128, 9), 8, "pyra_ltx2_tiny", True))
    return p


def ltx2_real() -> dict:
    """LTX-2 19B dev text to video (video only), 768x512, 97 frames, with the pyramid sampler (real file names)."""
    ckpt = "ltx-2-19b-dev-fp8.safetensors"
    p = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
         "4": {"class_type": "LTXAVTextEncoderLoader", "inputs": {
             "text_encoder": "gemma_3_12B_it_fp4_mixed.safetensors", "ckpt_name": ckpt, "device": "default"}},
         "2": _text(["4", 0], "waves rolling onto a black-sand beach at sunset"), "3": _text(["4", 0], NEGATIVE)}
    p.update(_ltx2(["1", 0], ["2", 0], ["3", 0], ["1", 2], (768, 512, 97), 20, "pyra_ltx2", False))
    return p


# name -> (prompt builder, demo files it needs (host/family_demo_files.FILES keys; None: real file names only))
FAMILY_SPECS: dict[str, tuple] = {
    "pyra-flux2-tiny": (flux2_tiny, ("flux2_klein", "flux2_vae")),
    "pyra-flux2-dev": (flux2_real, None),
    "pyra-chroma": (chroma_real, None),
    "pyra-qwen-image": (qwen_image_real, None),
    "pyra-z-image": (z_image_real, None),
    "pyra-wan22-5b-tiny": (wan22_5b_tiny, ("wan22_ti2v_5b", "wan22_taehv")),
    "pyra-wan22-5b": (wan22_5b_real, None),
    "pyra-wan22-a14b-tiny": (wan22_a14b_tiny, ("wan22_a14b_high", "wan22_a14b_low")),
    "pyra-wan22-a14b": (wan22_a14b_real, None),
    "pyra-wan22-a14b-pyramid-tiny": (wan22_a14b_pyramid_tiny, ("wan22_a14b_high", "wan22_a14b_low")),
    "pyra-wan22-a14b-pyramid": (wan22_a14b_pyramid_real, None),
    "pyra-hunyuan-video15-tiny": (hunyuan_video15_tiny, ("hunyuan_video15", "hv15_taehv")),
    "pyra-hunyuan-video15": (hunyuan_video15_real, None),
    "pyra-ltx2-tiny": (ltx2_tiny, ("ltx2", "ltx2_vae")),
    "pyra-ltx2": (ltx2_real, None),
}
TINY = [name for name, (_, files) in FAMILY_SPECS.items() if files is not None]
REAL = [name for name, (_, files) in FAMILY_SPECS.items() if files is None]


def _schema(info: dict) -> dict[str, tuple[object, dict, bool]]:
    """{input name: (type or list of options, options dict, required)} of one object_info entry."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            kind = spec[0]
            if kind == "COMBO":  # V3 combos: the options in the dict
                kind = opts.get("options", [])
            out[name] = (kind, opts, section == "required")
    return out


def _value_problem(kind, opts: dict, name: str, value) -> str | None:
    if isinstance(kind, list):
        if name in MODEL_FILE_INPUTS:  # a file the user has or not; it must at least be a weights file
            return None if str(value).endswith((".safetensors", ".gguf")) else f"{value!r} is not a model file"
        return None if value in kind else f"{value!r} is not one of the host's options"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not an {kind}"
        if not opts.get("min", value) <= value <= opts.get("max", value):
            return f"{value!r} is outside [{opts.get('min')}, {opts.get('max')}]"
    if kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not a STRING"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not a BOOLEAN"
    return None


def check_prompt(prompt: dict, object_info: dict) -> list[str]:
    """What the host's node schemas (GET /object_info) refuse in an API prompt: unknown node types and inputs,
    required inputs not given, widget values outside the host's options or ranges, links to a missing node or
    output of another type. Model file names are not looked up (the real files are not here)."""
    problems = []
    for nid, node in prompt.items():
        cls = node["class_type"]
        info = object_info.get(cls)
        if info is None:
            problems.append(f"node {nid}: the host has no node {cls}")
            continue
        schema = _schema(info)
        for name, value in node["inputs"].items():
            where = f"node {nid} ({cls}).{name}"
            if name not in schema:
                problems.append(f"{where}: no such input on the host")
                continue
            kind, opts, _ = schema[name]
            if isinstance(value, list):  # a link [node id, output slot]
                src = prompt.get(value[0])
                if src is None:
                    problems.append(f"{where}: links to missing node {value[0]}")
                    continue
                src_info = object_info.get(src["class_type"])
                if src_info is None:
                    continue
                out = src_info["output"][value[1]] if value[1] < len(src_info["output"]) else None
                if out != kind and kind != "*" and not isinstance(kind, list):
                    problems.append(f"{where}: gets {out} from node {value[0]}, the input takes {kind}")
            else:
                problem = _value_problem(kind, opts, name, value)
                if problem:
                    problems.append(f"{where}: {problem}")
        for name, (_, _, required) in schema.items():
            if required and name not in node["inputs"]:
                problems.append(f"node {nid} ({cls}): required input {name} not given")
    return problems


# the models subfolder of each file-name input
MODEL_FOLDERS = {"unet_name": "diffusion_models", "clip_name": "text_encoders", "clip_name1": "text_encoders",
                 "clip_name2": "text_encoders", "text_encoder": "text_encoders", "vae_name": "vae",
                 "ckpt_name": "checkpoints"}


def real_model_files() -> dict[str, set[str]]:
    """{models subfolder: file names} that the real-file workflows load."""
    files: dict[str, set[str]] = {}
    for name in REAL:
        for node in FAMILY_SPECS[name][0]().values():
            for key, value in node["inputs"].items():
                if key in MODEL_FOLDERS:
                    files.setdefault(MODEL_FOLDERS[key], set()).add(value)
    return files


def placeholder_models(root) -> str:
    """Empty files named as the real models under root/<subfolder>/, and an extra_model_paths YAML listing them
    (returned): a server started with it offers the names in its loaders, so the frontend loads the real-file
    workflows without missing-model errors and the host validates them; loading a placeholder fails, as it must."""
    from pathlib import Path

    root = Path(root)
    for folder, names in real_model_files().items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / folder / name).touch()
    yaml = root / "placeholders.yaml"
    yaml.write_text("pyra_placeholders:\n"
                    f"  base_path: {root}\n"
                    + "".join(f"  {folder}: {folder}\n" for folder in sorted(set(MODEL_FOLDERS.values()))))
    return str(yaml)
