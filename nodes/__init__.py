"""Thin V3 ComfyNode classes, one file per capability: the only part of the pack that imports the host."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import adapter_types
from .adapter_train import PyraTrainSparseAdapter
from .analytic import PyraAnalyticModel
from .demo_conditioning import PyraDemoConditioning
from .dfm import PyraDFMConvert, PyraDFMLoader, PyraDFMSampler, PyraDFMSave
from .dfm_train import PyraDFMTrain
from .feature_slicing import PyraFeatureSlicing
from .highres import PyraDiffuseHigh
from .lora_tools import PyraExtractLoRA, PyraMergeLoRA, PyraResizeLoRA
from .multilevel import PyraPyramidEdit, PyraPyramidLevel, PyraPyramidMerge, PyraPyramidMix, PyraPyramidSplit
from .previews import PyraCoarsePreviewGuider, PyraMultiLevelDecode
from .pyramid import PyraPyramidGuider, PyraPyramidSampler
from .sara_convert import PyraConvertSaRA
from .schedules import PyraSearchedSigmas
from .sparse_attention import PyraSparseAttention
from .sparsify import PyraSparsify
from .step_cache import PyraStepCache
from .vae_decode import PyraExactVAEDecode
from .vae_encode import PyraExactVAEEncode

NODES: list[type[io.ComfyNode]] = [
    PyraAnalyticModel,
    PyraDemoConditioning,
    PyraPyramidGuider,
    PyraPyramidSampler,
    PyraDiffuseHigh,
    PyraExactVAEDecode,
    PyraExactVAEEncode,
    PyraMultiLevelDecode,
    PyraCoarsePreviewGuider,
    PyraPyramidSplit,
    PyraPyramidLevel,
    PyraPyramidEdit,
    PyraPyramidMix,
    PyraPyramidMerge,
    PyraExtractLoRA,
    PyraResizeLoRA,
    PyraMergeLoRA,
    PyraSparsify,
    PyraFeatureSlicing,
    PyraTrainSparseAdapter,
    PyraConvertSaRA,
    PyraSearchedSigmas,
    PyraDFMConvert,
    PyraDFMSave,
    PyraDFMLoader,
    PyraDFMSampler,
    PyraDFMTrain,
    PyraStepCache,
    PyraSparseAttention,
]

adapter_types.register()  # the stock LoRA loaders read sparse and Householder adapter files from here on


class PyraExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
