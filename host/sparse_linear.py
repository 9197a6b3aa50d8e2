"""The per-clone replacement for one Linear: a subclass of the host's Linear op holding the 2:4-masked weight.

HOST.md section 3 ("Replacing nn.Linear safely"): a subclass of `comfy.ops.disable_weight_init.Linear` keeps the
parameter names (LoRA keys still match), stays castable (low-VRAM loading and runtime LoRA keep working), and its
`set_weight` re-applies the mask to every patched weight the host writes (full load) or computes (low VRAM).

GPU memory: the host loads a module by moving its parameters (`module.to(load_device)`), so `weight` arrives on
the GPU in dense format. Once the cuSPARSELt op has compressed it, `weight.data` is pointed back at its copy on
the offload device (`_home`: the tensor the module was made with, or a copy of a weight the host wrote), so for
a layer on the fast op the GPU holds only the compressed weight, the bias and the low-rank factors. The mask
never stays on the GPU: it is kept bit-packed on the offload device and unpacked only while a weight is masked.
When the module leaves the op's device (unload, partial unload), the op and its compressed weight are dropped.

Dynamic VRAM (0.16+, `ModelPatcherDynamic`): the host sets `comfy_cast_weights` on every module and would cast the
dense weight into a VRAM buffer at every call. Where the 2:4 kernel applies, `streamed` (set at each load) makes
the layer build its compressed op once instead, from the weight as the host would cast it (its cast-time LoRA
applied, then masked): the compressed weight replaces the streamed dense one; it is dropped when the model is
detached. Elsewhere the host streams the masked dense weight, and any weight a cast-time function changed is
masked again before use.
"""

from __future__ import annotations

import logging

import comfy.ops
import torch
import torch.nn.functional as F

from ..core.sparse import ActivationNorms, PackedMask, lowrank_compensation, prune_nm
from ..kernels.sparse24_linear import Sparse24Linear, cusparselt, dense_is_faster
from .features import cast_time_patches

log = logging.getLogger("pyra.sparsify")
_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info("PyraSparsify: %s", message)


def fast_kernel_reason(shape: tuple[int, int], device: torch.device, dtype: torch.dtype) -> str | None:
    """Why a (out, in) weight cannot run on the 2:4 kernel on `device` in `dtype`, or None when it can."""
    return cusparselt.unavailable_reason(device, dtype) or cusparselt.shape_reason(*shape)


def _version(t: torch.Tensor | None) -> int | None:
    """The in-place version counter; None where untracked (inference tensors: the ON_LOAD callback covers them)."""
    return None if t is None or t.is_inference() else t._version


class PyraSparseLinear(comfy.ops.disable_weight_init.Linear):
    """y = x S^T + b (+ (x A) B): S = W * mask, 2:4 along the input dim; A, B the optional low-rank correction."""

    @classmethod
    def from_linear(cls, src: torch.nn.Linear, sparse: torch.Tensor, mask: torch.Tensor,
                    lowrank: tuple[torch.Tensor, torch.Tensor] | None,
                    home: torch.device | str = "cpu") -> PyraSparseLinear:
        """A new module beside `src` (which is left untouched), all its tensors on `home` (the offload device)."""
        mod = cls.__new__(cls)
        torch.nn.Module.__init__(mod)
        mod.in_features, mod.out_features = src.in_features, src.out_features
        mod.home = torch.device(home)
        mod.weight = torch.nn.Parameter(sparse.to(mod.home), requires_grad=False)
        bias = None if src.bias is None else torch.nn.Parameter(src.bias.detach().to(mod.home, copy=True),
                                                                 requires_grad=False)
        mod.bias = bias
        mod.mask = PackedMask(mask, mod.home)
        lowrank = None if lowrank is None else tuple(t.to(mod.home) for t in lowrank)
        mod.register_buffer("lowrank_a", None if lowrank is None else lowrank[0], persistent=False)
        mod.register_buffer("lowrank_b", None if lowrank is None else lowrank[1], persistent=False)
        mod.comfy_cast_weights = getattr(src, "comfy_cast_weights", False)
        mod.weight_function, mod.bias_function = [], []
        mod._op, mod._op_source = None, (None, None, None)
        mod._home = (mod.weight, _version(mod.weight), mod.weight.data)  # kept when the host moves the weight
        mod.norms, mod.rank = None, 0
        mod.streamed = False  # dynamic VRAM: set by PyraSparsify's ON_LOAD callback from the patcher
        mod._stream_key = None
        return mod

    @classmethod
    def calibrating(cls, src: torch.nn.Linear, rank: int, home: torch.device | str = "cpu") -> PyraSparseLinear:
        """A dense copy of `src` that records its inputs' channel norms until `finalize_wanda()` prunes it."""
        w = src.weight.detach().to(home, copy=True)
        mod = cls.from_linear(src, w, torch.ones_like(w, dtype=torch.bool), None, home)
        mod.norms, mod.rank = ActivationNorms(src.in_features), rank
        return mod

    @property
    def sparse_mask(self) -> torch.Tensor:
        """The bool 2:4 mask, unpacked on the offload device."""
        return self.mask.unpack()

    @torch.no_grad()
    def finalize_wanda(self) -> str:
        """Prune by Wanda score from the recorded norms (magnitude if the layer never ran); returns a note."""
        w = self.weight.detach()
        used = self.norms.tokens > 0
        sparse, mask = prune_nm(w, 2, 4, "wanda" if used else "magnitude", self.norms.norm if used else None)
        if self.rank:
            a, b = lowrank_compensation(w, sparse, self.rank)
            self.lowrank_a, self.lowrank_b = a, b
        self.mask = PackedMask(mask, self.home)
        self.weight = torch.nn.Parameter(sparse, requires_grad=False)
        self.norms = None
        self.invalidate()
        return "wanda" if used else "magnitude (layer did not run during calibration)"

    def _lowrank_for(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.lowrank_a is None:
            return None
        return self.lowrank_a.to(ref.device, ref.dtype), self.lowrank_b.to(ref.device, ref.dtype)

    def invalidate(self) -> None:
        """Forget the prepared op (the host may have rewritten the weight in place, e.g. `.data.copy_`)."""
        self._op, self._op_source = None, (None, None, None)
        self._stream_key = None

    def _new_op(self, work: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> Sparse24Linear:
        """The op for the weight `work` on x's device, chosen at x's token count: compressed on the 2:4 kernel, or,
        where the dense matmul is faster there (one-token modulation layers, short text streams), the masked
        weight kept dense on that device. Either way the layer computes x S^T with the same 2:4 matrix S."""
        masked, lowrank = self._masked(work), self._lowrank_for(work)
        tokens = x.numel() // max(x.shape[-1], 1)
        if dense_is_faster(*masked.shape, tokens, masked.device, masked.dtype):
            _log_once(f"a {masked.shape[0]}x{masked.shape[1]} layer at {tokens} tokens keeps its 2:4 weight dense: "
                      "the dense matmul is faster than the sparse kernel there on this GPU")
            return Sparse24Linear(masked.contiguous(), bias, lowrank, backend="reference")
        return Sparse24Linear(masked, bias, lowrank, keep_dense=False)

    def _sparse_op(self, x: torch.Tensor) -> Sparse24Linear:
        """The prepared op on x's device for the current weight; rebuilt when the host swaps or patches the weight.
        The weight may sit on the offload device (a model the host counts as loaded does not move modules swapped
        in later): it is then masked and compressed on x's device, one layer at a time."""
        w, b = self.weight, self.bias
        device = x.device
        seen = self._op_source
        version = (_version(w), _version(b))
        if (self._op is None or self._op.device != device or seen[0] is not w or seen[1] is not b
                or seen[2] != version):
            work = w.detach().to(device)
            bias = None if b is None else b.detach().to(device)
            self._op = self._new_op(work, bias, x)
            self._op_source, self._stream_key = (w, b, version), None
            if self._op.weight is None:  # compressed: the dense format goes back to the offload device
                self._release_dense()
        return self._op

    def _release_dense(self) -> None:
        """Point `weight.data` at its copy on the offload device (copied once per weight the host writes)."""
        w = self.weight
        home = self._home
        if home is None or home[0] is not w or home[1] != _version(w) or home[2].shape != w.shape:
            home = (w, _version(w), w.detach().to(self.home, copy=w.device != self.home))
        w.data = home[2]
        self._home = home

    def _apply(self, fn, recurse=True):
        """The host moves modules with `.to()`: an op left behind on another device (or dtype) is dropped, so an
        unloaded model frees its compressed weights too."""
        op = self._op
        if op is not None:
            moved = fn(torch.empty(0, device=op.device, dtype=op.dtype))
            if (moved.device, moved.dtype) != (op.device, op.dtype):
                self.invalidate()
        return super()._apply(fn, recurse)

    def _masked(self, w: torch.Tensor) -> torch.Tensor:
        """w itself when it keeps the mask (the normal case), else a masked copy: whatever wrote the weight,
        the sparse kernel only ever sees a 2:4 matrix."""
        mask = self.mask.unpack(w.device)
        return w if not w.masked_select(~mask).any() else w * mask

    def path(self, x: torch.Tensor) -> str:
        """How a call with input x runs: "calibrate" (Wanda, dense), "streamed" (dynamic VRAM: the compressed op
        built from the cast weight), "cast" (the host casts the weight: low VRAM, manual cast, cast-time LoRA;
        masked dense matmul) or "op" (the prepared op on the stored weight)."""
        if self.norms is not None:
            return "calibrate"
        if self.streamed:
            reason = fast_kernel_reason(tuple(self.weight.shape), x.device, x.dtype)
            if reason is None:
                return "streamed"
            _log_once(f"dynamic VRAM: the host streams the masked dense weights ({reason})")
        if self.comfy_cast_weights or cast_time_patches(self) or cast_time_patches(self, "bias"):
            return "cast"
        return "op"

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        path = self.path(x)
        if path == "calibrate":  # Wanda calibration: record the input, compute densely
            self.norms.update(x)
            return super().forward(x, *args, **kwargs)
        if path == "streamed":
            return self._streamed_op(x)(x)
        if path == "cast":
            return self._forward_cast(x)
        return self._sparse_op(x)(x, dense=self.weight)

    def _streamed_op(self, x: torch.Tensor) -> Sparse24Linear:
        """Dynamic VRAM: the compressed op in x's device and dtype, built once per weight and set of cast-time
        functions from the weight as the host would cast it (comfy.ops resolve_cast_module_with_vbar: cast to the
        compute dtype, `*_lowvram_function`, then `*_function`), masked. The host's vbar copy is never made."""
        w, b = self.weight, self.bias
        fw, fb = cast_time_patches(self), cast_time_patches(self, "bias")
        key = (x.device, x.dtype, w, _version(w), b, _version(b), *map(_cast_source, fw), None, *map(_cast_source, fb))
        if self._op is None or self._stream_key is None or not _same_key(self._stream_key, key):
            self._op = None  # the previous compressed weight goes before the next is made
            with torch.no_grad():
                work = w.detach().to(x.device, x.dtype, copy=True)
                for f in fw:
                    work = f(work)
                bias = None if b is None else b.detach().to(x.device, x.dtype, copy=True)
                for f in fb if bias is not None else ():
                    bias = f(bias)
                self._op = self._new_op(work, bias, x)
            self._stream_key, self._op_source = key, (None, None, None)
        return self._op

    def _forward_cast(self, x: torch.Tensor) -> torch.Tensor:
        """Low-VRAM / manual-cast / runtime-LoRA path: the host casts the weight; when a cast-time function (LoRA
        through LowVramPatch, which since 0.8.1 no longer calls set_weight, or a dynamic-VRAM
        `weight_lowvram_function`) changed it, the mask is applied to the cast copy. Then the correction is added."""
        weight, bias, offload_stream = comfy.ops.cast_bias_weight(self, x, offloadable=True)
        masked = weight * self.mask.unpack(weight.device) if cast_time_patches(self) else weight
        y = F.linear(x, masked, bias)
        comfy.ops.uncast_bias_weight(self, weight, bias, offload_stream)
        lowrank = self._lowrank_for(y)
        return y if lowrank is None else y + (x.to(y.dtype) @ lowrank[0]) @ lowrank[1]

    def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed=None, return_weight: bool = False,
                   **kwargs):
        """Called by the host with a patched weight (e.g. W + LoRA delta): keep the 2:4 mask on it."""
        masked = weight * self.mask.unpack(weight.device)
        if return_weight:
            return masked
        masked = masked.to(self.weight.dtype)
        if inplace_update:
            with torch.no_grad():
                self.weight.copy_(masked)  # bumps the version, so the prepared op is rebuilt
        else:
            self.weight = torch.nn.Parameter(masked, requires_grad=False)
        return None


def _cast_source(f) -> tuple:
    """What a cast-time function computes from. The host makes a new LowVramPatch at every dynamic-VRAM load (every
    prompt) over the same patch entries: it is known by its key's entries, so an unchanged LoRA keeps its compressed
    op across prompts and a changed one (new entries) rebuilds it. Any other function is known by itself."""
    patches, key = getattr(f, "patches", None), getattr(f, "key", None)
    if getattr(f, "is_lowvram_patch", False) or type(f).__name__ == "LowVramPatch":
        if isinstance(patches, dict) and key in patches:
            return (type(f), key, *patches[key])
    return (f,)


def _same_key(a: tuple, b: tuple) -> bool:
    """Element-wise equality of two _streamed_op keys: devices, dtypes and versions by value, every other object
    (tensors, patch entries, functions) by identity (nested one level, as _cast_source returns them)."""
    if len(a) != len(b):
        return False
    return all(_same_item(x, y) for x, y in zip(a, b, strict=True))


def _same_item(x, y) -> bool:
    if isinstance(x, tuple) and isinstance(y, tuple):
        return len(x) == len(y) and all(u is v for u, v in zip(x, y, strict=True))
    if isinstance(x, (int, float, str, torch.device, torch.dtype, type(None))):
        return type(x) is type(y) and x == y
    return x is y
