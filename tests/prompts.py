"""API-format prompts for the tests (UI-format workflows for users live in workflows/)."""

from __future__ import annotations

import copy


def analytic_textures(width=64, height=64, batch=2, steps=8, sampler="euler", scheduler="simple",
                      parametrisation="flow", seed=1, prefix="pyra_test_analytic", latent_node=None) -> dict:
    """PyraAnalyticModel -> KSampler -> pixel_space VAEDecode -> SaveImage."""
    latent = latent_node or {"class_type": "EmptyChromaRadianceLatentImage",
                             "inputs": {"width": width, "height": height, "batch_size": batch}}
    return {
        "1": {"class_type": "PyraAnalyticModel", "inputs": {
            "parametrisation": parametrisation, "spectral_slope": 2.0, "knee": 1.0, "contrast": 0.5}},
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": "analytic", "seed": 0, "scale": 1.0}},
        "3": latent,
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0],
            "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0}},
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


# family -> (diffusion model file, VAE file, empty-latent node)
DEMO_FAMILIES = {
    "sd15": ("pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors",
             {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}),
    "sd3": ("pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors",
            {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}),
    "wan21": ("pyra-demo-wan21.safetensors", "pyra-demo-wan21-vae.safetensors",
              {"class_type": "EmptyHunyuanLatentVideo",
               "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}),
}

DEMO_LORA = "pyra-demo-sd15-lora.safetensors"  # a LoRA of the demo SD1.5 (host/demo_models.py)


def demo_model(family: str, steps=2, cfg=2.0, prefix=None) -> dict:
    """A stock text-to-image graph on a demo model: UNETLoader + VAELoader from the host's model folders."""
    unet, vae, latent = copy.deepcopy(DEMO_FAMILIES[family])
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 1, "scale": 1.0}},
        "3": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 2, "scale": 0.0}},
        "4": latent,
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 3, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage",
              "inputs": {"images": ["7", 0], "filename_prefix": prefix or f"pyra_test_{family}"}},
    }


def pyramid_sampler(family: str, ladder="4:0.35, 2:0.25", steps=8, size=128, prefix=None) -> dict:
    """demo_model's graph with the all-in-one PyraPyramidSampler in place of KSampler."""
    prompt = demo_model(family, steps=steps, prefix=prefix or f"pyra_test_pyramid_{family}")
    prompt["4"]["inputs"].update(width=size, height=size)
    inputs = dict(prompt["5"]["inputs"], ladder=ladder, upsample="bicubic")
    prompt["5"] = {"class_type": "PyraPyramidSampler", "inputs": inputs}
    return prompt


def pyramid_guider_masked_area(family: str = "sd3", ladder="2:0.4", steps=6) -> dict:
    """PyraPyramidGuider in SamplerCustomAdvanced, with a noise mask and an area-conditioned prompt."""
    prompt = demo_model(family, steps=steps, prefix=f"pyra_test_pyramid_guider_{family}")
    prompt["4"]["inputs"].update(width=128, height=128)
    prompt.update({
        "9": {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": ["3", 0], "width": 64, "height": 64, "x": 64, "y": 0, "strength": 1.0}},
        "10": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["9", 0]}},
        "11": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 128}},
        "12": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["4", 0], "mask": ["11", 0]}},
        "13": {"class_type": "CFGGuider", "inputs": {
            "model": ["1", 0], "positive": ["10", 0], "negative": ["3", 0], "cfg": 2.0}},
        "14": {"class_type": "PyraPyramidGuider", "inputs": {"guider": ["13", 0], "ladder": ladder,
                                                            "upsample": "bicubic"}},
        "15": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "17": {"class_type": "BasicScheduler", "inputs": {
            "model": ["1", 0], "scheduler": "simple", "steps": steps, "denoise": 1.0}},
        "5": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["15", 0], "guider": ["14", 0], "sampler": ["16", 0], "sigmas": ["17", 0],
            "latent_image": ["12", 0]}},
    })
    return prompt


def diffusehigh(family: str, steps=2, scales="2", guidance_mode="latent", upscale_method="latent",
                prefix=None) -> dict:
    """demo_model's base graph, then PyraDiffuseHigh on its latent, decoded at the high resolution."""
    prompt = demo_model(family, steps=steps, prefix=prefix or f"pyra_test_highres_{family}")
    prompt["9"] = {"class_type": "PyraDiffuseHigh", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "seed": 4,
        "scales": scales, "steps": steps, "denoise": 0.4, "cfg": "2.0", "sampler_name": "euler",
        "scheduler": "simple", "guidance_steps": 1, "guidance_mode": guidance_mode, "wavelet": "db4",
        "guidance_strength": 1.0, "sharpen": 1.0, "renoise": 1.0, "upscale_method": upscale_method,
        "vae": ["6", 0]}}
    prompt["7"]["inputs"]["samples"] = ["9", 0]
    return prompt


def with_controlnet(prompt: dict, sampler_node: str, strength=1.0) -> dict:
    """`prompt` (a demo_model-style SD1.5 graph) with the demo ControlNet applied to both conditionings."""
    prompt = copy.deepcopy(prompt)
    prompt.update({
        "30": {"class_type": "ControlNetLoader",
               "inputs": {"control_net_name": "pyra-demo-sd15-controlnet.safetensors"}},
        "31": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                      "color": 0xE08020}},
        "32": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["30", 0], "image": ["31", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
    })
    prompt[sampler_node]["inputs"].update(positive=["32", 0], negative=["32", 1])
    return prompt


# The user's VAEs for the exact decode/encode table (tests/e2e/test_vae_decode.py): kind -> (VAE file, loader).
# "checkpoint": the VAE output of CheckpointLoaderSimple on the SD1.5-format checkpoint (real-size KL VAE, CLIP-L);
# "vae": VAELoader. Real-format files are written at host install by tools/demo_models.py (REAL_FORMAT_FILES).
EXACT_VAE_KINDS = {
    "kl_checkpoint": ("pyra-demo-sd15-checkpoint.safetensors", "checkpoint"),
    "kl16": ("pyra-demo-kl16-vae.safetensors", "vae"),
    "taesd": ("pyra-demo-taesd.safetensors", "vae"),
    "taesd3": ("pyra-demo-taesd3.safetensors", "vae"),
    "wan21": ("pyra-demo-wan21-vae.safetensors", "vae"),
    "wan21_image": ("pyra-demo-wan21-vae.safetensors", "vae"),   # one frame, as Qwen-Image uses this VAE
    "wan21_video": ("pyra-demo-wan21-vae.safetensors", "vae"),   # encode: a 5-frame clip, one video to the host
    "ltx2": ("pyra-demo-ltx2-vae.safetensors", "vae"),   # written only on hosts with LTX-2 (host/family_demo_files)
}
EXACT_VAE_IMAGE = "pyra_exact_vae_test.png"   # written into the server's input folder by the test


def exact_vae(node: str, kind: str, prefix: str, slice_rows: int = 3, width: int = 64, height: int = 48) -> dict:
    """The stock VAE node and its Pyra twin on the same input, each result saved (prefix_stock, prefix_pyra).

    node "decode": a latent made the user's way decoded by VAEDecode and PyraExactVAEDecode (SaveImage). The latent:
    for the checkpoint, CLIPTextEncode + KSampler on its own model (text to image); for Wan 2.1, KSampler on the demo
    Wan model (9 frames: 3 latent frames); for LTX-2, VAEEncode of the test image at 64x64 repeated into a 9-frame clip;
    otherwise VAEEncode of the test image (image to image; for "wan21_image"
    a one-frame latent, the Qwen-Image case).
    node "encode": the test image (LoadImage) encoded by VAEEncode and PyraExactVAEEncode (SaveLatent); for
    "wan21_video" a 5-frame clip of it, frames alternating with its inverse (ImageInvert, ImageBatch).
    """
    name, loader = EXACT_VAE_KINDS[kind]
    if loader == "checkpoint":
        prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}
        vae = ["1", 2]
    else:
        prompt = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": name}}}
        vae = ["1", 0]
    prompt["2"] = {"class_type": "LoadImage", "inputs": {"image": EXACT_VAE_IMAGE}}
    if node == "encode":
        pixels = ["2", 0]
        if kind == "wan21_video":
            prompt.update({"5": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
                           "6": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["5", 0]}},
                           "7": {"class_type": "ImageBatch", "inputs": {"image1": ["6", 0], "image2": ["6", 0]}},
                           "8": {"class_type": "ImageBatch", "inputs": {"image1": ["7", 0], "image2": ["2", 0]}}})
            pixels = ["8", 0]
        pair = {"stock": ("VAEEncode", {"pixels": pixels, "vae": vae}),
                "pyra": ("PyraExactVAEEncode", {"pixels": pixels, "vae": vae, "slice_rows": slice_rows})}
        save, key = "SaveLatent", "samples"
    else:
        prompt.update(_exact_vae_latent(kind, vae, width, height))
        pair = {"stock": ("VAEDecode", {"samples": ["3", 0], "vae": vae}),
                "pyra": ("PyraExactVAEDecode", {"samples": ["3", 0], "vae": vae, "slice_rows": slice_rows})}
        save, key = "SaveImage", "images"
    for i, (tag, (class_type, inputs)) in enumerate(pair.items()):
        prompt[str(10 + 2 * i)] = {"class_type": class_type, "inputs": inputs}
        prompt[str(11 + 2 * i)] = {"class_type": save,
                                   "inputs": {key: [str(10 + 2 * i), 0], "filename_prefix": f"{prefix}_{tag}"}}
    return prompt


def _exact_vae_latent(kind: str, vae: list, width: int, height: int) -> dict:
    """Nodes "3".."8" of exact_vae's decode graph; "3" outputs the latent."""
    if kind == "kl_checkpoint":
        nodes = {
            "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red fox in the snow"}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        }
        model, positive, negative = ["1", 0], ["4", 0], ["5", 0]
    elif kind == "wan21":
        nodes = {
            "4": {"class_type": "PyraDemoConditioning", "inputs": {"family": "wan21", "seed": 1, "scale": 1.0}},
            "6": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": width, "height": height, "length": 9, "batch_size": 1}},
            "7": {"class_type": "UNETLoader",
                  "inputs": {"unet_name": DEMO_FAMILIES["wan21"][0], "weight_dtype": "default"}},
        }
        model, positive, negative = ["7", 0], ["4", 0], ["4", 0]
    elif kind == "ltx2":   # the test image at 64x64 (a 2x2 latent) as a 9-frame clip, encoded by the host (2 frames)
        return {"5": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "bilinear",
                                                             "width": 64, "height": 64, "crop": "disabled"}},
                "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["5", 0], "amount": 9}},
                "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": vae}}}
    else:
        return {"3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": vae}}}
    nodes["3"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": negative, "latent_image": ["6", 0], "seed": 3, "steps": 2,
        "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    return nodes


def lora_extract(prefix="loras/pyra_e2e_extract", mode="size_mb", value=2.0) -> dict:
    """PyraExtractLoRA on the SD1.5 demo model: model_a = base + base (ModelMergeAdd), model_b = base."""
    unet = DEMO_FAMILIES["sd15"][0]
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "ModelMergeAdd", "inputs": {"model1": ["1", 0], "model2": ["1", 0]}},
        "3": {"class_type": "PyraExtractLoRA", "inputs": {
            "model_a": ["2", 0], "model_b": ["1", 0], "mode": mode, "value": value, "max_rank": 8,
            "method": "randomized", "device": "auto", "bias_diff": True, "dtype": "fp16",
            "filename_prefix": prefix}},
    }


def demo_with_lora(lora_name: str, family="sd15", strength=1.0, prefix=None) -> dict:
    """demo_model's graph with the stock LoraLoaderModelOnly between the model loader and the sampler."""
    prompt = demo_model(family, prefix=prefix or f"pyra_test_lora_{family}")
    prompt["9"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength_model": strength}}
    prompt["5"]["inputs"]["model"] = ["9", 0]
    return prompt


def pyramid_levels(family: str = "sd15", kind: str = "db4", prefix: str = "pyra_test_levels") -> dict:
    """demo_model's image split into a pyramid and merged back (saved as _merged), and a multi-level decode."""
    prompt = demo_model(family, prefix=f"{prefix}_stock")
    prompt.update({
        "20": {"class_type": "PyraPyramidSplit", "inputs": {"kind": kind, "levels": 2, "image": ["7", 0]}},
        "21": {"class_type": "PyraPyramidMerge", "inputs": {"pyramid": ["20", 0]}},
        "22": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": f"{prefix}_merged"}},
        "23": {"class_type": "PyraMultiLevelDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0], "levels": 2}},
        "24": {"class_type": "SaveImage", "inputs": {"images": ["23", 0], "filename_prefix": f"{prefix}_multi"}},
    })
    return prompt


def sparsified(family: str = "sd15", lora: str | None = None, rank: int = 0, layers: str = "all", steps=2,
               sparse: bool = True, prefix=None, score: str = "magnitude") -> dict:
    """demo_model's graph with an optional LoraLoaderModelOnly, then PyraSparsify (report shown by PreviewAny)."""
    prompt = demo_model(family, steps=steps, prefix=prefix or f"pyra_test_sparse_{family}")
    model = ["1", 0]
    if lora:
        prompt["9"] = {"class_type": "LoraLoaderModelOnly",
                       "inputs": {"model": model, "lora_name": lora, "strength_model": 1.0}}
        model = ["9", 0]
    if sparse:
        prompt["10"] = {"class_type": "PyraSparsify", "inputs": {
            "model": model, "layers": layers, "name_regex": "", "score": score, "calibration_steps": 1,
            "lowrank_rank": rank, "speed_check_tokens": 0}}
        prompt["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["10", 1]}}
        model = ["10", 0]
    prompt["5"]["inputs"]["model"] = model
    return prompt


def searched_sigmas(family: str = "sd15", sampler="dpmpp_2m", steps=6, prefix=None) -> dict:
    """demo_model's graph with SamplerCustom driven by PyraSearchedSigmas (family auto) and KSamplerSelect."""
    prompt = demo_model(family, steps=steps, prefix=prefix or f"pyra_test_searched_{family}")
    prompt.update({
        "9": {"class_type": "PyraSearchedSigmas", "inputs": {
            "model": ["1", 0], "family": "auto", "sampler": sampler, "steps": steps, "denoise": 1.0}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "5": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 3, "cfg": 2.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["10", 0], "sigmas": ["9", 0], "latent_image": ["4", 0]}},
    })
    return prompt


def train_adapter(adapter_type: str = "sparse", steps: int = 2, prefix: str = "loras/pyra_e2e_train",
                  family: str = "sd15") -> dict:
    """PyraTrainSparseAdapter on a demo model with two empty latents (it is an output node)."""
    unet, _, latent = copy.deepcopy(DEMO_FAMILIES[family])
    latent["inputs"]["batch_size"] = 2
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 1, "scale": 1.0}},
        "3": latent,
        "5": {"class_type": "PyraTrainSparseAdapter", "inputs": {
            "model": ["1", 0], "latents": ["3", 0], "positive": ["2", 0], "adapter_type": adapter_type,
            "steps": steps, "learning_rate": 3e-4, "batch_size": 2, "seed": 0, "threshold": 5e-3,
            "lambda_rank": 5e-4, "reselect_at": 0.5, "reflections": 2, "filename_prefix": prefix}},
    }


def step_cache(family: str, threshold=-1.0, steps=6, prefix=None, **options) -> dict:
    """demo_model's graph with PyraStepCache between the loader and KSampler; `options`: its optional inputs."""
    prompt = demo_model(family, steps=steps, prefix=prefix or f"pyra_test_step_cache_{family}")
    prompt["20"] = {"class_type": "PyraStepCache", "inputs": {
        "model": ["1", 0], "preset": "auto", "threshold": threshold, "start_percent": 0.0, "end_percent": 1.0,
        "cache_on_cpu": False, **options}}
    prompt["5"]["inputs"]["model"] = ["20", 0]
    return prompt


def dfm_convert_sample(levels: int = 2, stage_steps: str = "3, 2", prefix: str = "pyra_test_dfm",
                       family: str = "sd3") -> dict:
    """A demo model (SD3 by default) converted by PyraDFMConvert and sampled stage by stage with PyraDFMSampler."""
    prompt = demo_model(family, prefix=prefix)
    prompt["4"]["inputs"].update(width=128, height=128)
    prompt["9"] = {"class_type": "PyraDFMConvert", "inputs": {"model": ["1", 0], "levels": levels}}
    prompt["5"] = {"class_type": "PyraDFMSampler", "inputs": {
        "model": ["9", 0], "seed": 3, "stage_steps": stage_steps, "thresholds": "0.3", "solver": "euler",
        "cfg": 2.0, "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}}
    return prompt


def dfm_train_sample(steps: int = 6, resume: bool = False, name: str = "pyra_test_dfm_train",
                     prefix: str = "pyra_test_dfm_train", family: str = "sd3") -> dict:
    """dfm_convert_sample with PyraDFMTrain between convert and sampler, on 2 latents the base model sampled."""
    prompt = dfm_convert_sample(prefix=prefix, family=family)
    prompt["10"] = copy.deepcopy(prompt["4"])
    prompt["10"]["inputs"]["batch_size"] = 2
    prompt["11"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["10", 0], "seed": 4,
        "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}}
    prompt["12"] = {"class_type": "PyraDFMTrain", "inputs": {
        "model": ["9", 0], "latents": ["11", 0], "positive": ["2", 0], "steps": steps, "learning_rate": 1e-3,
        "batch_size": 2, "core": "lora", "lora_rank": 4, "seed": 0, "gradient_checkpointing": True, "bf16": False,
        "save_name": name, "resume": resume}}
    prompt["5"]["inputs"]["model"] = ["12", 0]
    return prompt
