"""The Pyra/decoding nodes: exact low-memory VAE decode and encode, coarse previews and multi-level decode, and
the pyramid decomposition nodes (split an IMAGE or LATENT into frequency levels, view, edit, mix and merge them
exactly)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core.multilevel.pyramids import KINDS, Pyramid, decompose, max_levels, mix, reconstruct, upsample
from ..core.text_lists import parse_numbers
from ..host.previews import CoarsePreviewGuider, decode_levels
from ..host.vae import exact_decode, exact_encode
from .schema import search_aliases

SLICE_TOOLTIP = (
    "Latent rows per band. 0 picks it from free device memory (at most 16, and an eighth of the height). Smaller bands "
    "use less memory and recompute a little more; the result is the same for every value. If a band runs out of "
    "memory the node halves it and starts again."
)










class PyraExactVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraExactVAEDecode",
            **search_aliases("tiled decode", "vae decode", "low memory decode"),
            display_name="Exact VAE Decode (Pyra)",
            category="Pyra/decoding",
            description=(
                "Decodes a latent in row bands with a fraction of VAE Decode's memory and the same result (up to "
                "float rounding): every convolution gets its full halo and GroupNorm statistics cover the whole "
                "image, so there are no seams or colour shifts as with tiled decoding. Exact for the KL VAEs of "
                "SD1.5/SDXL/SD3/Flux/Flux.2, for TAESD, and for the Wan 2.1 video VAE (also Qwen-Image's), the "
                "Wan 2.2 TI2V-5B, the HunyuanVideo 1.5 and the LTX video (LTX-2) VAEs (bands of rows walk all "
                "frames with their own time state); other VAEs use the host's own decode."
            ),
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode (image, or video for video VAEs)."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE. KL VAEs (SD1.5, SDXL, SD3, Flux, Flux.2), TAESD, the Wan 2.1 (Qwen-Image), Wan 2.2, "
                    "HunyuanVideo 1.5 and LTX video (LTX-2; not LTXV 0.9.1's noise-injecting decoder) VAEs decode "
                    "sliced and exact; "
                    "any other VAE falls back to the host's plain decode, with one line in the log saying why.")),
                io.Int.Input("slice_rows", default=0, min=0, max=16384, tooltip=SLICE_TOOLTIP),
            ],
            outputs=[io.Image.Output(tooltip="The decoded image, as VAE Decode gives it (video frames batched).")],
        )

    @classmethod
    def execute(cls, samples, vae, slice_rows: int) -> io.NodeOutput:
        images = exact_decode(vae, samples["samples"], slice_rows)
        if images.ndim == 5:   # as VAEDecode: combine the batch and time axes
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)


class PyraExactVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraExactVAEEncode",
            **search_aliases("tiled encode", "vae encode", "low memory encode"),
            display_name="Exact VAE Encode (Pyra)",
            category="Pyra/decoding",
            description=(
                "Encodes an image in row bands with a fraction of VAE Encode's memory and the same result (up to "
                "float rounding): every convolution gets its full halo and GroupNorm statistics cover the whole "
                "image, so there are no seams as with tiled encoding. Exact for the KL VAEs of "
                "SD1.5/SDXL/SD3/Flux/Flux.2 and, for an image or a video, the Wan 2.1-class VAE (Qwen-Image, Wan "
                "2.1, Wan 2.2 A14B), the Wan 2.2 VAE and the HunyuanVideo 1.5 VAE (clips of 1 + 4k frames; a batch "
                "of images is one clip to them, as to VAE Encode) and the LTX video (LTX-2) VAE (1 + 8k frames, or "
                "one image); other VAEs (TAESD, ...) use the host's own encode."
            ),
            inputs=[
                io.Image.Input("pixels", tooltip="The image to encode (cropped to a multiple of the VAE's "
                                                 "downscale, 8 or 16, as VAE Encode does; only the first 3 channels "
                                                 "are used)."),
                io.Vae.Input("vae", tooltip=(
                    "The VAE. KL VAEs (SD1.5, SDXL, SD3, Flux, Flux.2), the Wan 2.1-class VAE (Qwen-Image, Wan 2.1, "
                    "A14B), the Wan 2.2 and the HunyuanVideo 1.5 VAEs (an image or a clip of 1 + 4k frames), and the "
                    "LTX video VAE (an image or a clip of 1 + 8k frames; to every video VAE the batch is the clip's "
                    "frames) encode sliced and exact; any other VAE falls back to the host's plain encode, with one "
                    "line in the log saying why.")),
                io.Int.Input("slice_rows", default=0, min=0, max=16384, tooltip=(
                    "Latent rows per band (8 image rows each; 16 for Flux.2, Wan 2.2 and HunyuanVideo 1.5; 32 for "
                    "LTX). 0 "
                    "picks it from free device memory (at most 16, and an eighth of the height). The result is the "
                    "same for every value. If a band runs out of memory the node halves it and starts again.")),
            ],
            outputs=[io.Latent.Output(tooltip="The latent, as VAE Encode gives it.")],
        )

    @classmethod
    def execute(cls, pixels, vae, slice_rows: int) -> io.NodeOutput:
        return io.NodeOutput({"samples": exact_encode(vae, pixels[:, :, :, :3], slice_rows)})


class PyraCoarsePreviewGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraCoarsePreviewGuider",
            **search_aliases("preview", "low resolution preview"),
            display_name="Coarse Previews (Pyra)",
            category="Pyra/decoding",
            description="Wraps a GUIDER so that sampling previews decode a coarse level of the latent: the same "
                        "preview at a fraction of the cost for large images. The result is unchanged.",
            inputs=[
                io.Guider.Input("guider", tooltip="Any guider (CFGGuider, BasicGuider, Pyramid Guider, ...)."),
                io.Int.Input("preview_size", default=0, min=0, max=4096, step=64,
                             tooltip="Longest preview side in pixels; 0 uses the host's --preview-size."),
            ],
            outputs=[io.Guider.Output(tooltip="The same guider with coarse previews.")],
        )

    @classmethod
    def execute(cls, guider, preview_size) -> io.NodeOutput:
        return io.NodeOutput(CoarsePreviewGuider(guider, preview_size or None))


class PyraMultiLevelDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraMultiLevelDecode",
            **search_aliases("progressive preview", "laplacian pyramid"),
            display_name="Multi-Level Decode (Pyra)",
            category="Pyra/decoding",
            description="Decodes a latent at several levels in one go: the 2x2-mean levels 1/2^k of the latent, "
                        "coarsest first, then the full latent; coarse levels cost a fraction of a full decode.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode (first item of a batch)."),
                io.Vae.Input("vae", tooltip="The VAE of the latent's model family."),
                io.Int.Input("levels", default=3, min=1, max=8, tooltip="Coarse levels below the full one."),
            ],
            outputs=[io.Image.Output(tooltip="One image per level, coarsest first, the full decode last; coarse "
                                             "levels are upscaled (nearest) to the full size so they batch.")],
        )

    @classmethod
    def execute(cls, samples, vae, levels) -> io.NodeOutput:
        return io.NodeOutput(decode_levels(vae, samples["samples"][:1], levels))


PyramidType = io.Custom("PYRA_PYRAMID")

KIND_TOOLTIP = ("laplacian: band-pass images, overcomplete, any size. haar / db4: orthogonal wavelets (each level "
                "keeps its three detail bands; edits are projected onto them).")
LEVEL_TOOLTIP = "Level index: 0 is the finest detail; the number of levels is the low-pass residual."


def _image_to_tensor(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1)


def _split(image, latent) -> tuple[torch.Tensor, dict]:
    if (image is None) == (latent is None):
        raise ValueError("connect exactly one of image or latent")
    if image is not None:
        return _image_to_tensor(image), {"source": "image"}
    extra = {k: v for k, v in latent.items() if k != "samples"}
    return latent["samples"], {"source": "latent", "latent": extra}


def _outputs(p: Pyramid, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(IMAGE, LATENT) views of a pyramid-shaped tensor: the one matching the source is the real output."""
    if p.extra.get("source") == "image":
        image = x.movedim(1, -1) if x.ndim == 4 else x.movedim(1, -1).flatten(0, 1)
        return image.contiguous(), {"samples": x}
    latent = {**p.extra.get("latent", {}), "samples": x}
    if tuple(x.shape[-2:]) != p.extra.get("size"):
        latent.pop("noise_mask", None)
    flat = x if x.ndim == 4 else x.movedim(2, 1).flatten(0, 1)
    view = flat[:, :3] if flat.shape[1] >= 3 else flat[:, :1].expand(-1, 3, -1, -1)
    lo, hi = view.amin((1, 2, 3), keepdim=True), view.amax((1, 2, 3), keepdim=True)
    return ((view - lo) / (hi - lo).clamp_min(1e-8)).movedim(1, -1).contiguous(), latent


class PyraPyramidSplit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidSplit",
            **search_aliases("laplacian pyramid", "wavelet", "frequency split"),
            display_name="Pyramid Split (Pyra)",
            category="Pyra/decoding",
            description="Splits an image or a latent into frequency levels (finest first, then a low-pass "
                        "residual); Pyramid Merge puts them back exactly.",
            inputs=[
                io.Combo.Input("kind", options=list(KINDS), default="laplacian", tooltip=KIND_TOOLTIP),
                io.Int.Input("levels", default=3, min=1, max=12, tooltip="Band-pass levels, each half the size "
                             "of the one before; the residual is 1/2^levels of the input."),
                io.Image.Input("image", optional=True, tooltip="An image to split (or connect a latent)."),
                io.Latent.Input("latent", optional=True, tooltip="A latent to split (or connect an image)."),
            ],
            outputs=[PyramidType.Output(display_name="pyramid", tooltip="The levels, for Pyramid Level / "
                                        "Edit / Mix / Merge.")],
        )

    @classmethod
    def execute(cls, kind, levels, image=None, latent=None) -> io.NodeOutput:
        x, extra = _split(image, latent)
        limit = max_levels(*x.shape[-2:])
        if levels > limit:
            raise ValueError(f"{levels} levels do not fit a {x.shape[-1]}x{x.shape[-2]} input: use at most {limit}")
        p = decompose(x, levels, kind)
        p.extra = {**extra, "size": tuple(x.shape[-2:])}
        return io.NodeOutput(p)


class PyraPyramidLevel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidLevel",
            display_name="Pyramid Level (Pyra)",
            category="Pyra/decoding",
            description="One level of a pyramid as an image or latent, at its own size or upscaled to the input's.",
            inputs=[
                PyramidType.Input("pyramid", tooltip="From Pyramid Split."),
                io.Int.Input("level", default=0, min=0, max=12, tooltip=LEVEL_TOOLTIP),
                io.Boolean.Input("full_size", default=True,
                                 tooltip="Upscale (nearest) to the input's size, to view levels side by side."),
                io.Float.Input("offset", default=0.5, min=-1.0, max=1.0, step=0.05,
                               tooltip="Added to band-pass image levels so that zero shows as grey (images only; "
                                       "the residual gets none)."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The level (latents: first channels, "
                                     "normalised for viewing)."),
                     io.Latent.Output(display_name="latent", tooltip="The level as a latent (raw values).")],
        )

    @classmethod
    def execute(cls, pyramid: Pyramid, level, full_size, offset) -> io.NodeOutput:
        x = pyramid.band(level)
        if full_size:
            x = upsample(x, pyramid.extra["size"], "nearest")
        image, latent = _outputs(pyramid, x)
        if pyramid.extra.get("source") == "image" and level < pyramid.levels:
            image = image + offset
        return io.NodeOutput(image, latent)


class PyraPyramidEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidEdit",
            display_name="Pyramid Edit (Pyra)",
            category="Pyra/decoding",
            description="Scales pyramid levels (e.g. '1, 1.5, 1' boosts the middle detail) and optionally "
                        "replaces one level with an image or latent of that level's size.",
            inputs=[
                PyramidType.Input("pyramid", tooltip="From Pyramid Split."),
                io.String.Input("weights", default="1, 1, 1",
                                tooltip="One multiplier per level, finest first, the residual last; missing "
                                        "levels keep 1."),
                io.Int.Input("level", default=0, min=0, max=12, tooltip="The level a replacement goes into."),
                io.Float.Input("offset", default=0.5, min=-1.0, max=1.0, step=0.05,
                               tooltip="Subtracted from a replacement image for a band-pass level: the offset "
                                       "Pyramid Level added for viewing."),
                io.Image.Input("image", optional=True, tooltip="Replacement for `level` (its size)."),
                io.Latent.Input("latent", optional=True, tooltip="Replacement for `level` (its size)."),
            ],
            outputs=[PyramidType.Output(display_name="pyramid", tooltip="The edited pyramid.")],
        )

    @classmethod
    def execute(cls, pyramid: Pyramid, weights, level, offset, image=None, latent=None) -> io.NodeOutput:
        scales = _weights(weights)
        out = pyramid
        if image is not None or latent is not None:
            value, _ = _split(image, latent)
            if image is not None and level < pyramid.levels:
                value = value - offset
            out = out.with_band(level, value)
        return io.NodeOutput(out.scaled(scales))


class PyraPyramidMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidMix",
            display_name="Pyramid Mix (Pyra)",
            category="Pyra/decoding",
            description="Blends two pyramids level by level: e.g. weights '0, 0, 1' keep A's detail and take B's "
                        "coarse structure (a hybrid).",
            inputs=[
                PyramidType.Input("a", tooltip="Pyramid A (weight 0 keeps A)."),
                PyramidType.Input("b", tooltip="Pyramid B (weight 1 takes B); same kind, levels and size."),
                io.String.Input("weights", default="0, 0, 1",
                                tooltip="Per level, finest first, residual last: 0 = A, 1 = B; the last repeats."),
            ],
            outputs=[PyramidType.Output(display_name="pyramid", tooltip="The blend, shaped like A.")],
        )

    @classmethod
    def execute(cls, a: Pyramid, b: Pyramid, weights) -> io.NodeOutput:
        return io.NodeOutput(mix(a, b, _weights(weights)))


class PyraPyramidMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PyraPyramidMerge",
            display_name="Pyramid Merge (Pyra)",
            category="Pyra/decoding",
            description="Rebuilds the image or latent from its levels; exact for an unedited pyramid.",
            inputs=[PyramidType.Input("pyramid", tooltip="From Pyramid Split, Edit or Mix.")],
            outputs=[io.Image.Output(display_name="image", tooltip="The rebuilt image (for image pyramids)."),
                     io.Latent.Output(display_name="latent", tooltip="The rebuilt latent (for latent pyramids).")],
        )

    @classmethod
    def execute(cls, pyramid: Pyramid) -> io.NodeOutput:
        x = reconstruct(pyramid)
        image, latent = _outputs(pyramid, x)
        if pyramid.extra.get("source") == "image":
            image = image.clamp(0, 1)
        return io.NodeOutput(image, latent)


def _weights(text: str) -> list[float]:
    """The per-level weights of Pyramid Edit and Pyramid Mix (finite numbers, finest level first)."""
    return parse_numbers(text, "weights", example="1, 1.5, 1")
