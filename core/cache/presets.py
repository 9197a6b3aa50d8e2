"""Per-family presets: which blocks are computed on a reused evaluation, and the reuse threshold.

Where the thresholds come from: they are the operating points that First Block Cache publishes for trained
weights with the same feature (the first block's residual) and the same relative L1 change (WaveSpeed README:
0.12 for Flux, 0.2 for SDXL, 0.1 for the video DiTs), our accumulated change being an upper bound of the change
since the last full computation, so at a given threshold we reuse no more often than they do. SD1.5 takes SDXL's
value (same UNet, same feature) and SD3 Flux's (same MM-DiT block design, image model); of the DiTs of 2026 the
image models (Chroma, Qwen-Image, Z-Image) take Flux's and the video models (HunyuanVideo, LTX-Video, LTX-2)
Wan's. They were not re-measured on trained weights here: the pack has none, and random weights make the change
between steps meaningless (benchmarks/step_cache.py searches its thresholds instead: the most reuse at no more
deviation than the host's EasyCache on the same run).

UNets: the first `shallow` input blocks and the output blocks that take their skip connections are computed, the
deep part between them is reused. `shallow` 0 puts the boundary at the first downsampling (Step Rehash's deep/
shallow split: for SDXL the input convolution and both full-resolution ResBlocks). The presets use 2, the input
convolution and the first ResBlock, whose output is also the decision feature: DeepCache's default branch
(cache_block_id 0: the first block of the first down stage and the matching up-stage blocks), which leaves
fewer blocks to compute on a reused step. DiTs: `head` first blocks and `tail` last blocks are computed, the
middle ones skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CachePreset:
    kind: str  # "unet" or "dit"
    threshold: float
    head: int = 1
    tail: int = 1
    shallow: int = 0  # UNets: input blocks computed on a reused evaluation (0: up to the first downsampling)
    extrapolate: bool = False  # reuse the cached value moved along its last two computed values (StepCache)


PRESETS: dict[str, CachePreset] = {
    "sd15": CachePreset("unet", 0.2, shallow=2),
    "sdxl": CachePreset("unet", 0.2, shallow=2),
    "sd3": CachePreset("dit", 0.12),
    "flux": CachePreset("dit", 0.12),
    "wan21": CachePreset("dit", 0.1),
    # the DiTs of 2026, by kind (WaveSpeed's image and video values; not tuned on their trained weights)
    "chroma": CachePreset("dit", 0.12),
    "qwen_image": CachePreset("dit", 0.12),
    "hunyuan_video": CachePreset("dit", 0.1),
    "ltxv": CachePreset("dit", 0.1),
    "ltx2": CachePreset("dit", 0.1),
    "lumina2": CachePreset("dit", 0.12),  # Z-Image: an image model (Flux's value)
}
