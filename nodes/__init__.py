"""The node layer: V3 ComfyNode classes, one module per UI category, and the extension that lists them.

Node classes import comfy_api and nothing else of the host: what they do to a model goes through host/. Each
category's module is imported on its own: where a host lacks something one of them needs, that module's nodes
are left out with one log line per capability naming the host version and the missing piece, and the other
categories still load.
"""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from ..host.features import comfyui_version

log = logging.getLogger("pyra")

# (capability, module, node class names): the nodes of each UI category live in one module of nodes/.
CAPABILITIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("analytic model", "demo", ("PyraAnalyticModel",)),
    ("demo conditioning", "demo", ("PyraDemoConditioning",)),
    ("pyramid sampling", "sampling", ("PyraPyramidGuider", "PyraPyramidSampler")),
    ("DiffuseHigh", "sampling", ("PyraDiffuseHigh",)),
    ("searched schedules", "sampling", ("PyraSearchedSigmas",)),
    ("exact VAE decode", "decoding", ("PyraExactVAEDecode",)),
    ("exact VAE encode", "decoding", ("PyraExactVAEEncode",)),
    ("multi-level previews", "decoding", ("PyraMultiLevelDecode", "PyraCoarsePreviewGuider")),
    ("pyramid decomposition", "decoding",
     ("PyraPyramidSplit", "PyraPyramidLevel", "PyraPyramidEdit", "PyraPyramidMix", "PyraPyramidMerge")),
    ("LoRA tools", "adapters", ("PyraExtractLoRA", "PyraResizeLoRA", "PyraMergeLoRA")),
    ("adapter training", "adapters", ("PyraTrainSparseAdapter",)),
    ("SaRA conversion", "adapters", ("PyraConvertSaRA",)),
    ("2:4 sparsity", "sparse", ("PyraSparsify",)),
    ("feature slicing", "sparse", ("PyraFeatureSlicing",)),
    ("step cache", "sparse", ("PyraStepCache",)),
    ("block-sparse attention", "sparse", ("PyraSparseAttention",)),
    ("DFM", "dfm", ("PyraDFMConvert", "PyraDFMSave", "PyraDFMLoader", "PyraDFMSampler")),
    ("DFM training", "dfm", ("PyraDFMTrain",)),
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


def register_with_host() -> None:
    """What the pack registers with the host, once, from the entrypoint: the DFM model folders (models/dfm and
    output/dfm), and the sparse and Householder adapter types that let the stock LoRA loaders read Pyra's files."""
    from ..host import dfm

    dfm.register_folder()
    try:
        from ..host import adapter_types
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
