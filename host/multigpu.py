"""Pyra's model patches and the host's MultiGPU CFG split: refused with a message, before any work.

The split (in ComfyUI 0.33.0, not in 0.8.1: the MultiGPU Work Units node, `comfy/multigpu.py`,
`samplers._calc_cond_batch_multigpu`) deep-copies the model onto each extra GPU and runs cond and uncond in
threads, one per GPU. Each copy gets the main model's wrappers and patches: Pyra's step cache and sparse-attention
statistics would then be updated from several threads at once, and Pyra's compressed 2:4 ops, DFM layers, feature-
sliced blocks and captured CUDA graphs hold tensors of the main GPU. None of this is supported yet, so a patched
model refuses the split rather than give wrong results or a device error from deep inside a thread (the pyramid
sampler's CUDA graphs are the exception: they fall back to eager, logged).

`guard(patcher, node)` refuses at once when the model given to the node already carries the split, and adds an
OUTER_SAMPLE wrapper that refuses when the split is added after the node (the wrapper sees the sampler's model).
On hosts without the split nothing is ever refused.
"""

from __future__ import annotations

import comfy.patcher_extension

WRAPPER_KEY = "pyra_multigpu_guard"


class MultiGPUSplitUnsupported(ValueError):
    """A Pyra-patched model sampled with the host's MultiGPU CFG split."""


def has_split(patcher) -> bool:
    """True when `patcher` carries MultiGPU clones (the host's split runs on it)."""
    return bool(patcher.get_additional_models_with_key("multigpu"))


def refusal(node: str) -> str:
    return (f"{node} does not support the MultiGPU CFG split yet (the model carries MultiGPU clones, e.g. from "
            "MultiGPU Work Units): its per-run state and GPU tensors would be shared by the GPU threads. Sample this "
            "model on one GPU: remove the MultiGPU node from this model's path.")


def guard(patcher, node: str) -> None:
    """Refuse now if `patcher` (the node's clone) carries the split; else refuse at sampling time if it gets one."""
    if has_split(patcher):
        raise MultiGPUSplitUnsupported(refusal(node))

    def outer_sample(executor, *args, **kwargs):
        if has_split(executor.class_obj.model_patcher):
            raise MultiGPUSplitUnsupported(refusal(node))
        return executor(*args, **kwargs)

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"{WRAPPER_KEY}:{node}",
                                 outer_sample)
