"""2:4 sparse linear on sparse tensor cores through cuSPARSELt, called directly (ctypes), sm80+.

Why direct calls (benchmarks/results/sparse24-h200.md has the figures): torch's `_cslt_sparse_mm` builds the
descriptors and the plan on every call, hundreds of microseconds of CPU that at DiT shapes cost more than the
kernel; replaying it from a CUDA graph hides that, but a graph needs static buffers, i.e. a copy of x in and of
y out on every call. Here the compressed weight is made once per layer, and the plan with its searched
algorithm once per layer and token count; a call is one `cusparseLtMatmul` on the current stream with the
caller's own pointers.

Layout, y (T, N) = x (T, K) W^T: cuSPARSELt computes D = alpha op(A) op(B) + bias with A = W (N x K, 2:4
along K), B = x, and D = y seen as an N x T column-major matrix (the same bytes as y row-major). `order="row"`
declares A and B row-major with op(B) = T (torch's choice); `order="col"` declares the same bytes column-major
with op(A) = T (cuBLAS's "TN"); the benchmark measures both.
Low-rank compensation: y += (x A_r) B_r by cuBLAS after the sparse kernel. Passing it as the epilogue's C
matrix (beta = 1) was measured slower on the H200 (benchmarks/results/sparse24-h200-run1.md: cuSPARSELt's
beta != 0 kernels lose more than the separate pass costs).
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from ctypes import c_float, c_int, c_int32, c_int64, c_size_t, c_uint32, c_void_p
from pathlib import Path

import torch

_OPAQUE_BYTES = 1024  # the library's opaque structs are 512 bytes (cusparseLt.h 0.8); keep room to spare
_ORDER_COL, _ORDER_ROW = 1, 2  # cusparseOrder_t
_OP_N, _OP_T = 0, 1  # cusparseOperation_t
_COMPUTE_32F = 2  # cusparseComputeType
# cudaDataType. bf16 only: fp16 through this path faulted ("illegal instruction") on the H200 in the GPU tests
# (benchmarks/results/sparse24-gpu-tests-run2.txt) and is not used until that is understood.
_CUDA_TYPE = {torch.bfloat16: 14}
_SPARSITY_50 = 0
_ALG_DEFAULT = 0
_ATTR_BIAS_POINTER = 8  # cusparseLtMatmulDescAttribute_t
_ALIGN = 16  # bytes
P = c_void_p
_SIGNATURES = {
    "cusparseLtInit": [P],
    "cusparseLtDenseDescriptorInit": [P, P, c_int64, c_int64, c_int64, c_uint32, c_int, c_int],
    "cusparseLtStructuredDescriptorInit": [P, P, c_int64, c_int64, c_int64, c_uint32, c_int, c_int, c_int],
    "cusparseLtMatDescriptorDestroy": [P],
    "cusparseLtMatmulDescriptorInit": [P, P, c_int, c_int, P, P, P, P, c_int],
    "cusparseLtMatmulDescSetAttribute": [P, P, c_int, P, c_size_t],
    "cusparseLtMatmulAlgSelectionInit": [P, P, P, c_int],
    "cusparseLtMatmulAlgSelectionDestroy": [P],
    "cusparseLtMatmulPlanInit": [P, P, P, P],
    "cusparseLtMatmulPlanDestroy": [P],
    "cusparseLtMatmulGetWorkspace": [P, P, P],
    "cusparseLtMatmulSearch": [P, P, P, P, P, P, P, P, P, P, c_int32],
    "cusparseLtMatmul": [P, P, P, P, P, P, P, P, P, P, c_int32],
    "cusparseLtSpMMACompressedSize2": [P, P, P, P],
    "cusparseLtSpMMACompress2": [P, P, c_int, c_int, P, P, P, P],
}
_lock = threading.Lock()
_state: dict = {"lib": None, "reason": None, "handles": {}}


class CusparseLtError(RuntimeError):
    """A cuSPARSELt call returned an error status."""


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libcusparseLt.so.0")  # already loaded by torch on CUDA builds that link it
    except OSError:
        spec = importlib.util.find_spec("nvidia")
        paths = [Path(p) / "cusparselt" / "lib" / "libcusparseLt.so.0" for p in (spec.submodule_search_locations
                                                                                 if spec else [])]
        found = [p for p in paths if p.is_file()]
        if not found:
            raise OSError("libcusparseLt.so.0 not found: install the nvidia-cusparselt wheel for your CUDA "
                          "(e.g. pip install nvidia-cusparselt-cu12)") from None
        lib = ctypes.CDLL(str(found[0]))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, c_int
    lib.cusparseLtGetErrorString.argtypes, lib.cusparseLtGetErrorString.restype = [c_int], ctypes.c_char_p
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, or None (then `load_error()` says why)."""
    with _lock:
        if _state["lib"] is None and _state["reason"] is None:
            try:
                _state["lib"] = _load()
            except (OSError, AttributeError) as err:
                _state["reason"] = f"cuSPARSELt unavailable: {err}"
    return _state["lib"]


def load_error() -> str | None:
    library()
    return _state["reason"]


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why this backend cannot run on `device` with `dtype`, or None when it can."""
    if device.type != "cuda":
        return f"tensors are on {device.type}: the 2:4 sparse kernel needs a CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"{torch.cuda.get_device_name(device)} is sm{major}{minor}: sparse tensor cores need sm80 or newer"
    if dtype not in _CUDA_TYPE:
        return f"weights are {dtype}: the 2:4 kernel takes bf16 (load the model with weight dtype bf16)"
    return load_error()


def shape_reason(out_features: int, in_features: int) -> str | None:
    """Why a weight shape cannot use the kernel (the library's minimums and alignment), or None."""
    if in_features % 64 or out_features % 32:
        return (f"shape {out_features}x{in_features}: the 2:4 kernel needs in_features % 64 == 0 and "
                "out_features % 32 == 0")
    return None


def _check(status: int, what: str) -> None:
    if status:
        raise CusparseLtError(f"{what}: {_state['lib'].cusparseLtGetErrorString(status).decode()} ({status})")


def _opaque() -> ctypes.Array:
    return ctypes.create_string_buffer(_OPAQUE_BYTES)  # malloc'd, 16-byte aligned


def _handle(device: torch.device) -> ctypes.Array:
    index = device.index if device.index is not None else torch.cuda.current_device()
    with _lock:
        if index not in _state["handles"]:
            handle = _opaque()
            with torch.cuda.device(index):
                _check(_state["lib"].cusparseLtInit(ctypes.addressof(handle)), "cusparseLtInit")
            _state["handles"][index] = handle
    return _state["handles"][index]


def _addr(buf: ctypes.Array) -> int:
    return ctypes.addressof(buf)


class _Plan:
    """Descriptors, plan and workspace for one token count T (the algorithm searched on the first call)."""

    def __init__(self, layer: CusparseLtLinear, tokens: int):
        # keep what the calls need, not the layer itself (no reference cycle: plans die with their layer)
        lib, h = _state["lib"], _addr(layer.handle)
        self.handle, self.compressed, self.a_desc = layer.handle, layer.compressed, layer.a_desc
        self.b, self.c, self.mm, self.sel, self.plan = (_opaque() for _ in range(5))
        self._live: list[ctypes.Array] = []
        self._has_sel = self._has_plan = False
        dtype = _CUDA_TYPE[layer.dtype]
        rows, cols, order = (tokens, layer.k, _ORDER_ROW) if layer.order == "row" else (layer.k, tokens, _ORDER_COL)
        _check(lib.cusparseLtDenseDescriptorInit(h, _addr(self.b), rows, cols, layer.k, _ALIGN, dtype, order),
               "dense descriptor for x")
        self._live.append(self.b)
        _check(lib.cusparseLtDenseDescriptorInit(h, _addr(self.c), layer.n, tokens, layer.n, _ALIGN, dtype,
                                                 _ORDER_COL), "dense descriptor for y")
        self._live.append(self.c)
        op_a, op_b = (_OP_N, _OP_T) if layer.order == "row" else (_OP_T, _OP_N)
        _check(lib.cusparseLtMatmulDescriptorInit(h, _addr(self.mm), op_a, op_b, _addr(layer.a_desc),
                                                  _addr(self.b), _addr(self.c), _addr(self.c), _COMPUTE_32F),
               "matmul descriptor")
        if layer.bias is not None:
            self._bias_ptr = c_void_p(layer.bias.data_ptr())
            _check(lib.cusparseLtMatmulDescSetAttribute(h, _addr(self.mm), _ATTR_BIAS_POINTER,
                                                        ctypes.addressof(self._bias_ptr), 8), "bias pointer")
        _check(lib.cusparseLtMatmulAlgSelectionInit(h, _addr(self.sel), _addr(self.mm), _ALG_DEFAULT),
               "algorithm selection")
        self._has_sel = True
        _check(lib.cusparseLtMatmulPlanInit(h, _addr(self.plan), _addr(self.mm), _addr(self.sel)), "plan")
        self._has_plan = True
        self.workspace: torch.Tensor | None = None

    def run(self, x: torch.Tensor, y: torch.Tensor) -> None:
        lib, h = _state["lib"], _addr(self.handle)
        streams = (c_void_p * 1)(torch.cuda.current_stream(x.device).cuda_stream)
        alpha, beta = c_float(1.0), c_float(0.0)
        args = (ctypes.addressof(alpha), self.compressed.data_ptr(), x.data_ptr(), ctypes.addressof(beta),
                y.data_ptr(), y.data_ptr())
        if self.workspace is None:  # first call: search the best algorithm / split-k on these very inputs
            _check(lib.cusparseLtMatmulSearch(h, _addr(self.plan), *args, None, streams, 1), "algorithm search")
            size = c_size_t(0)
            _check(lib.cusparseLtMatmulGetWorkspace(h, _addr(self.plan), ctypes.addressof(size)), "workspace")
            self.workspace = torch.empty(max(size.value, 1), dtype=torch.uint8, device=x.device)
        _check(lib.cusparseLtMatmul(h, _addr(self.plan), *args, self.workspace.data_ptr(), streams, 1), "matmul")

    def __del__(self):
        lib = _state["lib"]
        if lib is None:
            return
        if self._has_plan:
            lib.cusparseLtMatmulPlanDestroy(_addr(self.plan))
        if self._has_sel:
            lib.cusparseLtMatmulAlgSelectionDestroy(_addr(self.sel))
        for desc in self._live:
            lib.cusparseLtMatDescriptorDestroy(_addr(desc))


class CusparseLtLinear:
    """One layer: y = x S^T + bias (+ (x A) B), S compressed once, a plan per token count made on first use.


    weight: (N, K) CUDA bf16, already 2:4 along K (this is not checked here: pass the masked weight);
    bias: (N,) or None; lowrank: (A (K, r), B (r, N)) or None. Call with x (T, K) contiguous, same device and
    dtype; returns y (T, N). Raises CusparseLtError if the library rejects a shape (callers fall back).
    order: "row" or "col", how the operands are declared to the library (same bytes, see the module docstring).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 lowrank: tuple[torch.Tensor, torch.Tensor] | None = None, order: str = "row"):
        if order not in ("row", "col"):
            raise ValueError(f"order must be 'row' or 'col', got {order!r}")
        reason = unavailable_reason(weight.device, weight.dtype) or shape_reason(*weight.shape)
        if reason:
            raise CusparseLtError(reason)
        self.n, self.k = weight.shape
        self.dtype, self.device, self.order = weight.dtype, weight.device, order
        self.handle = _handle(weight.device)
        self.bias = None if bias is None else bias.detach().to(self.dtype).contiguous()
        self.lowrank = None if lowrank is None else tuple(t.detach().to(self.dtype).contiguous() for t in lowrank)
        lib, h = _state["lib"], _addr(self.handle)
        self.a_desc = _opaque()
        rows, cols, layout = (self.n, self.k, _ORDER_ROW) if order == "row" else (self.k, self.n, _ORDER_COL)
        _check(lib.cusparseLtStructuredDescriptorInit(h, _addr(self.a_desc), rows, cols, self.k, _ALIGN,
                                                      _CUDA_TYPE[self.dtype], layout, _SPARSITY_50),
               "structured descriptor for the weight")
        size, buf_size = c_size_t(0), c_size_t(0)
        _check(lib.cusparseLtSpMMACompressedSize2(h, _addr(self.a_desc), ctypes.addressof(size),
                                                  ctypes.addressof(buf_size)), "compressed size")
        self.compressed = torch.empty(size.value, dtype=torch.uint8, device=self.device)
        scratch = torch.empty(max(buf_size.value, 1), dtype=torch.uint8, device=self.device)
        dense = weight.detach().contiguous()
        stream = torch.cuda.current_stream(self.device).cuda_stream
        op_a = _OP_N if order == "row" else _OP_T
        _check(lib.cusparseLtSpMMACompress2(h, _addr(self.a_desc), 1, op_a, dense.data_ptr(),
                                            self.compressed.data_ptr(), scratch.data_ptr(), stream), "compress")
        self._plans: dict[int, _Plan] = {}
        self._rejected: set[int] = set()  # token counts the library refused (callers fall back)

    def supports_tokens(self, x: torch.Tensor) -> bool:
        return (x.shape[0] % 8 == 0 and x.shape[0] not in self._rejected and x.data_ptr() % _ALIGN == 0
                and x.is_contiguous())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        y = torch.empty(tokens, self.n, dtype=self.dtype, device=x.device)
        plan = self._plans.get(tokens)
        if plan is None:
            try:
                plan = _Plan(self, tokens)
                plan.run(x, y)  # searches the algorithm
            except CusparseLtError:
                self._rejected.add(tokens)
                raise
            self._plans[tokens] = plan
        else:
            plan.run(x, y)
        if self.lowrank is not None:
            a, b = self.lowrank
            y.addmm_(x @ a, b)  # (T, r) @ (r, N), accumulated into y by cuBLAS
        return y

    def __del__(self):
        lib = _state["lib"]
        if lib is not None:
            lib.cusparseLtMatDescriptorDestroy(_addr(self.a_desc))
