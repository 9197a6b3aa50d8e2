"""Author the shipped example workflows from API prompts, through the host's real frontend.

    $(python3 tools/host.py python) tools/author_workflows.py [name ...]

For each workflow below: start the server, load the API prompt in the frontend (`app.loadApiJson`), let
LiteGraph lay it out, fix the seed widgets (so a shared file reproduces its images), serialize the UI
workflow without null fields (the frontend's schema rejects them), run it, and save the first output image
as the 256x256 thumbnail: workflows/<name>.json and workflows/<name>.jpg.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from family_workflows import FAMILY_SPECS, REAL, placeholder_models
from frontend import frontend_page, load_workflow, workflow_to_api
from harness import ComfyServer
from host import REPO

WORKFLOWS = REPO / "workflows"


def _demo(family: str, unet: str, vae: str) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 1, "scale": 1.0}},
        "3": {"class_type": "PyraDemoConditioning", "inputs": {"family": family, "seed": 2, "scale": 0.0}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
    }


def _ksampler(model: list, latent: list, seed: int, steps: int, cfg: float = 5.0, sampler: str = "euler",
              scheduler: str = "normal", denoise: float = 1.0) -> dict:
    """A stock KSampler node on the demo conditioning (nodes "2" and "3" of `_demo`)."""
    return {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["2", 0], "negative": ["3", 0], "latent_image": latent, "seed": seed,
        "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": denoise}}


def two_stage_highres() -> dict:
    """SDXL-style: a base image, then a structure-guided 2x stage (demo SD1.5 stands in for SDXL)."""
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": _ksampler(["1", 0], ["4", 0], seed=7, steps=12, sampler="dpmpp_2m", scheduler="karras"),
        "9": {"class_type": "PyraDiffuseHigh", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "seed": 8,
            "scales": "2", "steps": 15, "denoise": 0.3, "cfg": "7.0", "sampler_name": "euler",
            "scheduler": "normal", "guidance_steps": 5, "guidance_mode": "latent", "wavelet": "db4",
            "guidance_strength": 1.0, "sharpen": 1.0, "renoise": 1.0, "upscale_method": "latent",
            "vae": ["6", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["6", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "pyra_highres_2x"}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    })
    return p


def flux_style_pyramid() -> dict:
    """Flux-style text-to-image: a flow model with a shifted schedule, PyraPyramidGuider in SamplerCustomAdvanced."""
    p = _demo("sd3", "pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors")
    p.update({
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "8": {"class_type": "CFGGuider", "inputs": {
            "model": ["7", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 3.5}},
        "9": {"class_type": "PyraPyramidGuider", "inputs": {
            "guider": ["8", 0], "ladder": "4:0.35, 2:0.25", "upsample": "bicubic"}},
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 11}},
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "12": {"class_type": "BasicScheduler", "inputs": {
            "model": ["7", 0], "scheduler": "simple", "steps": 20, "denoise": 1.0}},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["10", 0], "guider": ["9", 0], "sampler": ["11", 0], "sigmas": ["12", 0],
            "latent_image": ["4", 0]}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["6", 0]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "pyra_pyramid_flow"}},
    })
    return p


def wan_pyramid_video() -> dict:
    """Wan text-to-video with the all-in-one pyramid sampler: H and W scaled per level, frames kept."""
    p = _demo("wan21", "pyra-demo-wan21.safetensors", "pyra-demo-wan21-vae.safetensors")
    p.update({
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {
            "width": 128, "height": 128, "length": 9, "batch_size": 1}},
        "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "5": {"class_type": "PyraPyramidSampler", "inputs": {
            "model": ["7", 0], "seed": 5, "steps": 12, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0, "ladder": "2:0.4", "upsample": "bicubic"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "9": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["8", 0], "filename_prefix": "pyra_pyramid_video", "fps": 16.0, "lossless": False,
            "quality": 90, "method": "default"}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "pyra_video_frames"}},
    })
    return p


def exact_decode_levels() -> dict:
    """A large image decoded exactly in row bands, its Laplacian levels, and a multi-level decode."""
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 512, "batch_size": 1}},
        "5": _ksampler(["1", 0], ["4", 0], seed=3, steps=6),
        "7": {"class_type": "PyraExactVAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0], "slice_rows": 0}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "pyra_exact_decode"}},
        "9": {"class_type": "PyraPyramidSplit", "inputs": {"kind": "laplacian", "levels": 3, "image": ["7", 0]}},
        "10": {"class_type": "PyraPyramidLevel", "inputs": {
            "pyramid": ["9", 0], "level": 0, "full_size": True, "offset": 0.5}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
        "12": {"class_type": "PyraPyramidLevel", "inputs": {
            "pyramid": ["9", 0], "level": 3, "full_size": True, "offset": 0.5}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
        "14": {"class_type": "PyraMultiLevelDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0], "levels": 3}},
        "15": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
    })
    return p


def exact_encode_img2img() -> dict:
    """Image to image through the exact encoder and decoder: a generated picture re-encoded in row bands and
    re-sampled at denoise 0.5."""
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 384, "batch_size": 1}},
        "5": _ksampler(["1", 0], ["4", 0], seed=5, steps=6),
        "7": {"class_type": "PyraExactVAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0], "slice_rows": 0}},
        "8": {"class_type": "PyraExactVAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["6", 0], "slice_rows": 0}},
        "9": _ksampler(["1", 0], ["8", 0], seed=6, steps=6, denoise=0.5),
        "10": {"class_type": "PyraExactVAEDecode", "inputs": {"samples": ["9", 0], "vae": ["6", 0], "slice_rows": 0}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "pyra_exact_img2img"}},
    })
    return p


def lora_tools() -> dict:
    """The demo LoRA through the stock loader; extraction of it back from the merged model; resize; merge."""
    lora = "pyra-demo-sd15-lora.safetensors"
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "7": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                              "strength_model": 1.0}},
        "5": _ksampler(["7", 0], ["4", 0], seed=9, steps=8),
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "pyra_lora_sample"}},
        "10": {"class_type": "PyraExtractLoRA", "inputs": {
            "model_a": ["7", 0], "model_b": ["1", 0], "mode": "energy", "value": 0.999, "max_rank": 16,
            "method": "randomized", "device": "auto", "bias_diff": True, "dtype": "fp16",
            "filename_prefix": "loras/pyra_demo_extracted"}},
        "11": {"class_type": "PyraResizeLoRA", "inputs": {
            "lora_name": lora, "mode": "rank", "value": 2.0, "dtype": "fp16",
            "filename_prefix": "loras/pyra_demo_resized"}},
        "12": {"class_type": "PyraMergeLoRA", "inputs": {
            "lora_1": lora, "weight_1": 0.5, "lora_2": lora, "weight_2": 0.5, "lora_3": "None", "weight_3": 1.0,
            "lora_4": "None", "weight_4": 1.0, "merge": "sum", "density": 1.0, "seed": 0, "mode": "energy",
            "value": 0.999, "dtype": "fp16", "filename_prefix": "loras/pyra_demo_merged"}},
    })
    return p


def train_sparse_adapter() -> dict:
    """A sparse (SaRA) adapter trained on a few demo latents, then sampled with the adapted model."""
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "5": _ksampler(["1", 0], ["4", 0], seed=2, steps=4, cfg=3.0),
        "7": {"class_type": "PyraTrainSparseAdapter", "inputs": {
            "model": ["1", 0], "latents": ["5", 0], "positive": ["2", 0], "adapter_type": "sparse", "steps": 6,
            "learning_rate": 3e-3, "batch_size": 2, "seed": 0, "threshold": 5e-3, "lambda_rank": 5e-4,
            "reselect_at": 0.5, "reflections": 8, "filename_prefix": "loras/pyra_demo_sparse_adapter"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "9": _ksampler(["7", 0], ["8", 0], seed=9, steps=8),
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["6", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "pyra_sparse_adapter"}},
    })
    return p


def sparsify_then_sample() -> dict:
    """2:4 sparsity on the demo SD1.5 (with the demo LoRA applied first), dense and sparse side by side."""
    p = _demo("sd15", "pyra-demo-sd15.safetensors", "pyra-demo-taesd.safetensors")
    p.update({
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "7": {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["1", 0], "lora_name": "pyra-demo-sd15-lora.safetensors", "strength_model": 1.0}},
        "8": {"class_type": "PyraSparsify", "inputs": {
            "model": ["7", 0], "layers": "all", "name_regex": "", "score": "wanda", "calibration_steps": 2,
            "lowrank_rank": 16, "speed_check_tokens": 4096}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 1]}},
        "5": _ksampler(["8", 0], ["4", 0], seed=4, steps=8),
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "pyra_sparse24"}},
        "12": _ksampler(["7", 0], ["4", 0], seed=4, steps=8),
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["6", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "pyra_dense"}},
    })
    return p


def dfm_convert_sample() -> dict:
    """The demo SD3 converted into a 2-level DFM model and sampled stage by stage (untrained new layers)."""
    p = _demo("sd3", "pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors")
    p.update({
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "7": {"class_type": "PyraDFMConvert", "inputs": {"model": ["1", 0], "levels": 2}},
        "5": {"class_type": "PyraDFMSampler", "inputs": {
            "model": ["7", 0], "seed": 5, "stage_steps": "12, 6", "thresholds": "0.3", "solver": "euler",
            "cfg": 3.5, "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["4", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "pyra_dfm"}},
    })
    return p


def searched_schedule() -> dict:
    """A searched 10-step schedule in the stock SamplerCustomAdvanced, with coarse previews."""
    p = _demo("sd3", "pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors")
    p.update({
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "7": {"class_type": "CFGGuider", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 3.5}},
        "8": {"class_type": "PyraCoarsePreviewGuider", "inputs": {"guider": ["7", 0], "preview_size": 0}},
        "9": {"class_type": "RandomNoise", "inputs": {"noise_seed": 6}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "11": {"class_type": "PyraSearchedSigmas", "inputs": {
            "model": ["1", 0], "family": "auto", "sampler": "dpmpp_2m", "steps": 10, "denoise": 1.0}},
        "12": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["9", 0], "guider": ["8", 0], "sampler": ["10", 0], "sigmas": ["11", 0],
            "latent_image": ["4", 0]}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["6", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "pyra_searched"}},
    })
    return p


def sparse_compute() -> dict:
    """Feature slicing, the step cache and block-sparse attention stacked on the demo SD3."""
    p = _demo("sd3", "pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors")
    p.update({
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "7": {"class_type": "PyraFeatureSlicing", "inputs": {"model": ["1", 0], "slice_tokens": 256}},
        "8": {"class_type": "PyraStepCache", "inputs": {
            "model": ["7", 0], "preset": "auto", "threshold": -1.0, "start_percent": 0.15, "end_percent": 0.95,
            "cache_on_cpu": False}},
        "9": {"class_type": "PyraSparseAttention", "inputs": {
            "model": ["8", 0], "keep_mass": 0.9, "keep_ratio": 0.0, "block_size": "64", "start_percent": 0.2,
            "end_percent": 1.0, "text_tokens": -1, "fastest_dense_backend": True}},
        "5": _ksampler(["9", 0], ["4", 0], seed=8, steps=12, cfg=3.5, scheduler="simple"),
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "pyra_sparse_compute"}},
    })
    return p


def dfm_train() -> dict:
    """A 2-level DFM model of the demo SD3 finetuned for a few steps on latents it made, then sampled."""
    p = _demo("sd3", "pyra-demo-sd3.safetensors", "pyra-demo-taesd3.safetensors")
    p.update({
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 4}},
        "5": _ksampler(["1", 0], ["4", 0], seed=2, steps=4, cfg=3.0, scheduler="simple"),
        "7": {"class_type": "PyraDFMConvert", "inputs": {"model": ["1", 0], "levels": 2}},
        "8": {"class_type": "PyraDFMTrain", "inputs": {
            "model": ["7", 0], "latents": ["5", 0], "positive": ["2", 0], "steps": 10, "learning_rate": 1e-3,
            "batch_size": 2, "core": "lora", "lora_rank": 4, "seed": 0, "gradient_checkpointing": False,
            "bf16": False, "save_name": "pyra-demo-dfm", "resume": False}},
        "9": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "10": {"class_type": "PyraDFMSampler", "inputs": {
            "model": ["8", 0], "seed": 5, "stage_steps": "12, 6", "thresholds": "0.3", "solver": "euler",
            "cfg": 3.5, "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0],
            "latent_image": ["9", 0]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["6", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "pyra_dfm_trained"}},
    })
    return p


SPECS = {
    "pyra-two-stage-highres": two_stage_highres,
    "pyra-flux-style-pyramid": flux_style_pyramid,
    "pyra-wan-pyramid-video": wan_pyramid_video,
    "pyra-exact-decode-levels": exact_decode_levels,
    "pyra-exact-encode-img2img": exact_encode_img2img,
    "pyra-lora-tools": lora_tools,
    "pyra-train-sparse-adapter": train_sparse_adapter,
    "pyra-sparsify": sparsify_then_sample,
    "pyra-dfm-convert-sample": dfm_convert_sample,
    "pyra-searched-schedule": searched_schedule,
    "pyra-sparse-compute": sparse_compute,
    "pyra-dfm-train": dfm_train,
    # the 2026 families (tools/family_workflows.py): a tiny one on the demo files, one with the real file names
    **{name: make for name, (make, _) in FAMILY_SPECS.items()},
}


def _strip_nulls(value):
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def ui_workflow(page, prompt: dict, name: str) -> dict:
    """The frontend's own UI serialization of an API prompt, laid out, seeds fixed, nulls dropped."""
    graph = page.evaluate(
        """async ([prompt, name]) => {
            await window.app.loadApiJson(prompt, name);
            const graph = window.app.graph;
            graph.arrange(60);
            for (const node of graph.nodes || graph._nodes) {
                for (const w of node.widgets || []) {
                    if (w.name === 'control_after_generate') w.value = 'fixed';
                }
            }
            return graph.serialize();
        }""",
        [prompt, name],
    )
    graph = _strip_nulls(graph)
    graph["extra"] = {"ds": {"scale": 0.7, "offset": [40, 60]}}
    return graph


def thumbnail(server, entry: dict, path: Path) -> None:
    from PIL import Image

    images = server.output_images(entry)
    if not images:
        raise RuntimeError(f"{path.stem}: the workflow saved no image")
    with Image.open(images[0]) as im:
        im.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS).save(path, quality=90)


def graph_thumbnail(page, workflow: dict, name: str, path: Path) -> None:
    """The frontend's picture of the graph as the thumbnail: for the workflows with real file names, which cannot
    run here (no weights), rather than a picture they did not make."""
    from PIL import Image

    shot = path.with_suffix(".png")
    load_workflow(page, workflow, name, screenshot=shot)
    with Image.open(shot) as im:
        im.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS).save(path, quality=90)
    shot.unlink()


def main(names: list[str]) -> int:
    names = names or list(SPECS)
    placeholders = Path(tempfile.mkdtemp(prefix="pyra-placeholders-"))
    # the real-file workflows' models as empty files, so the frontend lays them out without missing-model errors
    server = ComfyServer.start(extra_args=("--extra-model-paths-config", placeholder_models(placeholders)))
    try:
        with frontend_page(server.url) as page:
            for name in names:
                workflow = ui_workflow(page, SPECS[name](), name)
                if name in REAL:  # the real models are not here: checked against the host's schemas instead
                    graph_thumbnail(page, workflow, name, WORKFLOWS / f"{name}.jpg")
                    (WORKFLOWS / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
                    print(f"{name}: {len(workflow['nodes'])} nodes, written (real file names, not run)")
                    continue
                prompt = workflow_to_api(page, workflow, name)
                entry = server.wait(server.queue(prompt), timeout=600)
                (WORKFLOWS / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
                thumbnail(server, entry, WORKFLOWS / f"{name}.jpg")
                print(f"{name}: {len(workflow['nodes'])} nodes, written")
    finally:
        server.stop()
        shutil.rmtree(placeholders, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
