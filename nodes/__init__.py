"""Thin V3 ComfyNode classes, one file per capability: the only part of the pack that imports the host.

Each capability's module is imported on its own: where a host lacks something one of them needs, that
capability's nodes are left out with one log line naming the host version and the missing piece, and the
other nodes still load.
"""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from .host_features import comfyui_version

log = logging.getLogger("pyra")

# (capability, module, node class names): one entry per file of nodes.
CAPABILITIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("analytic model", "analytic", ("PyraAnalyticModel",)),
    ("demo conditioning", "demo_conditioning", ("PyraDemoConditioning",)),
    ("pyramid sampling", "pyramid", ("PyraPyramidGuider", "PyraPyramidSampler")),
    ("DiffuseHigh", "highres", ("PyraDiffuseHigh",)),
    ("exact VAE decode", "vae_decode", ("PyraExactVAEDecode",)),
    ("exact VAE encode", "vae_encode", ("PyraExactVAEEncode",)),
    ("multi-level previews", "previews", ("PyraMultiLevelDecode", "PyraCoarsePreviewGuider")),
    ("pyramid decomposition", "multilevel",
     ("PyraPyramidSplit", "PyraPyramidLevel", "PyraPyramidEdit", "PyraPyramidMix", "PyraPyramidMerge")),
    ("LoRA tools", "lora_tools", ("PyraExtractLoRA", "PyraResizeLoRA", "PyraMergeLoRA")),
    ("2:4 sparsity", "sparsify", ("PyraSparsify",)),
    ("feature slicing", "feature_slicing", ("PyraFeatureSlicing",)),
    ("adapter training", "adapter_train", ("PyraTrainSparseAdapter",)),
    ("SaRA conversion", "sara_convert", ("PyraConvertSaRA",)),
    ("searched schedules", "schedules", ("PyraSearchedSigmas",)),
    ("DFM", "dfm", ("PyraDFMConvert", "PyraDFMSave", "PyraDFMLoader", "PyraDFMSampler")),
    ("DFM training", "dfm_train", ("PyraDFMTrain",)),
    ("step cache", "step_cache", ("PyraStepCache",)),
    ("block-sparse attention", "sparse_attention", ("PyraSparseAttention",)),
)


def load_capabilities(table=CAPABILITIES) -> tuple[list[type[io.ComfyNode]], list[str]]:
    """The node classes of every capability whose module imports on this host, and one message per one that does not."""
    nodes, disabled = [], []
    for capability, module, names in table:
        try:
            mod = importlib.import_module(f".{module}", __name__)
            nodes += [getattr(mod, name) for name in names]
        except Exception as err:  # a host without a symbol this capability needs: leave out its nodes only
            disabled.append(f"Pyra: the {capability} nodes ({', '.join(names)}) are disabled on ComfyUI "
                            f"{comfyui_version()}: {type(err).__name__}: {err}")
    return nodes, disabled


def register_adapter_types() -> None:
    """The stock LoRA loaders read Pyra's sparse and Householder adapter files once these are registered."""
    try:
        from . import adapter_types
    except Exception as err:
        log.warning("Pyra: sparse and Householder adapter files cannot be loaded by the stock LoRA loaders on "
                    "ComfyUI %s: %s: %s", comfyui_version(), type(err).__name__, err)
        return
    adapter_types.register()


class PyraExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        nodes, disabled = load_capabilities()
        for message in disabled:
            log.warning(message)
        return nodes
