"""2:4 sparse linear: y = x S^T + bias (+ (x A) B). Backends: `cusparselt` (sm80+ GPUs, bf16) and
`reference` (masked dense matmul, everywhere). `Sparse24Linear` picks the fast one where its constraints hold
and falls back per call (unsupported token count or alignment) to the reference; every fallback reason is
logged once.
"""

from __future__ import annotations

import torch

from ..bounded import BoundedCache
from ..fallback import fall_back
from ..timing import cuda_median_ms
from . import cusparselt
from .reference import sparse24_linear

OP = "2:4 sparse linear"
BACKENDS = ("cusparselt", "reference")
REQUESTED = "reference backend requested"  # the reason of an op made with backend="reference" (not logged)


def fast_backend_reason(weight: torch.Tensor) -> str | None:
    """Why `weight` (out, in) cannot use the cuSPARSELt backend, or None when it can."""
    return cusparselt.unavailable_reason(weight.device, weight.dtype) or cusparselt.shape_reason(*weight.shape)


_dense_faster = BoundedCache(256)  # (shape, token rows, device, dtype) -> the dense matmul is faster


def dense_is_faster(out_features: int, in_features: int, tokens: int, device: torch.device,
                    dtype: torch.dtype) -> bool:
    """Whether the dense matmul beats the cuSPARSELt kernel for (tokens, in) x (in, out) on this GPU. Timed once
    per shape on random operands (CUDA events, after the kernel's algorithm search) and remembered. The kernel
    has a floor of about 80 us on an H200 (benchmarks/results/sparse24-layers-h200.md): a Flux modulation layer,
    one token, runs 2.4-3.4x slower on it than dense. False where the kernel cannot run, and while a CUDA graph
    is being captured (no timing is possible there)."""
    rows = -(-tokens // 8) * 8  # the kernel runs ragged counts padded to a multiple of 8
    key = (out_features, in_features, rows, device, dtype)
    if key in _dense_faster:
        return _dense_faster.get(key, bool)
    if (device.type != "cuda" or cusparselt.unavailable_reason(device, dtype)
            or cusparselt.shape_reason(out_features, in_features) or torch.cuda.is_current_stream_capturing()):
        return False
    with torch.no_grad():
        w = torch.randn(out_features, in_features, device=device, dtype=dtype)
        w.view(-1, 4)[:, :2] = 0  # any 2:4 pattern: the kernel's time does not depend on the values
        x = torch.randn(rows, in_features, device=device, dtype=dtype)
        try:
            fast = cusparselt.CusparseLtLinear(w)
            sparse_ms = cuda_median_ms(lambda: fast(x))
        except cusparselt.CusparseLtError:
            return False
        dense_ms = cuda_median_ms(lambda: torch.nn.functional.linear(x, w))
    return _dense_faster.get(key, lambda: dense_ms < sparse_ms)


class Sparse24Linear:
    """A prepared 2:4 layer. weight: (out, in), already masked 2:4 along `in`; bias (out,); lowrank (A, B).

    backend "auto" uses cuSPARSELt where it can, "reference" forces the masked dense matmul; order: see
    cusparselt.py.
    Call with x (..., in) in the weight's dtype and device; returns (..., out).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 lowrank: tuple[torch.Tensor, torch.Tensor] | None = None, backend: str = "auto", order: str = "row",
                 keep_dense: bool = True):
        """keep_dense=False: once the weight is compressed, drop this op's reference to the dense one (it is
        then the caller's to free); a call that must fall back to the reference passes it as `dense`."""
        if backend not in ("auto", *BACKENDS):
            raise ValueError(f"unknown backend {backend!r}: use auto or one of {BACKENDS}")
        self.weight, self.bias, self.lowrank = weight, bias, lowrank
        self.reason = REQUESTED if backend == "reference" else fast_backend_reason(weight)
        self.fast = None
        if self.reason is None:
            try:
                self.fast = cusparselt.CusparseLtLinear(weight, bias, lowrank, order)
            except cusparselt.CusparseLtError as err:
                self.reason = str(err)
        self.backend = "reference" if self.fast is None else "cusparselt"
        if self.fast is None and backend == "cusparselt":
            raise cusparselt.CusparseLtError(self.reason)
        self.device, self.dtype = weight.device, weight.dtype
        if self.fast is not None and not keep_dense:
            self.weight = None

    def __call__(self, x: torch.Tensor, dense: torch.Tensor | None = None) -> torch.Tensor:
        """dense: the 2:4 weight in dense format (any device), used only for a reference fallback of an op made
        with keep_dense=False."""
        if self.fast is not None and x.device == self.device and x.dtype == self.dtype:
            flat = x.reshape(-1, x.shape[-1])
            tokens = flat.shape[0]
            if not self.fast.supports_tokens(flat) and tokens not in self.fast._rejected:
                flat = _padded(flat)  # ragged token count or misaligned input: a padded copy fits the kernel
            if self.fast.supports_tokens(flat):
                try:
                    return self.fast(flat)[:tokens].reshape(*x.shape[:-1], -1)
                except cusparselt.CusparseLtError as err:
                    fall_back(OP, str(err))
            else:
                fall_back(OP, f"{tokens} tokens: the library rejected this token count")
        elif self.fast is not None:
            fall_back(OP, f"input is {x.dtype} on {x.device}, the sparse weight {self.dtype} on {self.device}")
        elif self.reason != REQUESTED:
            fall_back(OP, self.reason)
        weight = self.weight if self.weight is not None else dense
        if weight is None:
            raise ValueError("this 2:4 op dropped its dense weight (keep_dense=False): pass it as `dense` so "
                             "the reference path can run")
        bias = None if self.bias is None else self.bias.to(x.device, x.dtype)
        lowrank = None if self.lowrank is None else tuple(t.to(x.device, x.dtype) for t in self.lowrank)
        return sparse24_linear(x, weight.to(x.device, x.dtype), bias, lowrank)


def _padded(flat: torch.Tensor) -> torch.Tensor:
    """flat (T, K) copied into a fresh (T rounded up to 8, K) buffer, zero rows at the end."""
    out = flat.new_zeros(-(-flat.shape[0] // 8) * 8, flat.shape[1])
    out[:flat.shape[0]] = flat
    return out


__all__ = ["BACKENDS", "Sparse24Linear", "dense_is_faster", "fast_backend_reason", "sparse24_linear"]
