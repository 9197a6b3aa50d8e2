"""Row-local operators for sliced decoding: each maps a band of input rows to a band of output rows.

A decoder is flattened into a list of these operators (a program). A band is a tensor (B, C, rows, W) plus the
index of its first row in the full-height tensor. `need(a, b, h_in)` says which input rows [a', b') the
operator reads to produce output rows [a, b) of a tensor whose input height is `h_in`; `__call__` then turns
exactly those input rows into exactly those output rows. Zero padding is added only at the true image border,
so a band computes the same numbers as the whole tensor would.

GroupNorm is the one operator that is not row-local: its statistics cover the whole tensor. `GroupNormAct`
normalises with statistics the executor measured beforehand over every row (`stream.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...kernels.group_norm import group_norm_batch_norm, group_norm_reference, per_channel


def conv_weights(op, conv: nn.Module, device, dtype) -> tuple[Tensor, Tensor | None]:
    """`conv`'s weight and bias in `dtype` on `device`, made once per op, device and dtype (kept on `op`).

    A program is built for one decode, so the copy lives as long as the decode. Under the host's dynamic VRAM
    (ComfyUI 0.16+) a module's own weight stays on the offload device and the host casts it per call; reading it
    per band would copy it over the bus once per band and frame, so it is copied once. Where the weight already
    lies on `device` in `dtype`, the cache holds the weight itself (no copy).
    """
    key = (device, dtype)
    cached = getattr(op, "_weights", None)
    if cached is None or cached[0] != key:
        bias = None if conv.bias is None else conv.bias.to(device=device, dtype=dtype)
        cached = (key, conv.weight.to(device=device, dtype=dtype), bias)
        op._weights = cached
    return cached[1], cached[2]


class RowOp:
    """Identity on rows: elementwise operators use this geometry."""

    def out_height(self, h_in: int) -> int:
        return h_in

    def need(self, a: int, b: int, h_in: int) -> tuple[int, int]:
        return a, b

    def __call__(self, x: Tensor, r0: int, a: int, b: int, h_in: int, stack: list) -> Tensor:
        raise NotImplementedError


class Elementwise(RowOp):
    """Any pointwise function (ReLU, TAESD's clamp, the final affine map)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        self.fn = fn

    def __call__(self, x, r0, a, b, h_in, stack):
        return self.fn(x)


class Conv(RowOp):
    """A stride-1 Conv2d with symmetric zero padding (kernel k, padding p), applied to a band of rows."""

    def __init__(self, conv: nn.Conv2d):
        k, p = conv.kernel_size[0], conv.padding[0]
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"row slicing supports stride-1, undilated, ungrouped zero-padded convs, got {conv}")
        if conv.kernel_size != (k, k) or conv.padding != (p, p):
            raise ValueError(f"row slicing supports square kernels with equal padding, got {conv}")
        self.conv, self.k, self.p = conv, k, p

    def out_height(self, h_in):
        return h_in + 2 * self.p - self.k + 1

    def need(self, a, b, h_in):
        lo = a - self.p
        return max(lo, 0), min(b - self.p + self.k - 1, h_in)

    def __call__(self, x, r0, a, b, h_in, stack):
        top = r0 - (a - self.p)
        bottom = (b - self.p + self.k - 1) - (r0 + x.shape[-2])
        if top or bottom:
            x = F.pad(x, (0, 0, top, bottom))
        w, bias = conv_weights(self, self.conv, x.device, x.dtype)
        return F.conv2d(x, w, bias, padding=(0, self.p))


class Upsample2x(RowOp):
    """Nearest-neighbour upsampling by 2 in both directions."""

    def out_height(self, h_in):
        return 2 * h_in

    def need(self, a, b, h_in):
        return a // 2, (b + 1) // 2

    def __call__(self, x, r0, a, b, h_in, stack):
        y = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return y[..., a - 2 * r0: b - 2 * r0, :]


class UpConv2x(RowOp):
    """Nearest 2x upsampling followed by a 3x3 convolution (padding 1), computed at the input resolution.

    The fast path of `Upsample2x` + `Conv` (their reference): output row 2i + p reads only input rows i - 1 + p and
    i + p (likewise for columns), so each of the four output phases (p, q) is a 2x2 convolution of the input whose
    taps are sums of the 3x3 taps: (w0, w1 + w2) for phase 0, (w0 + w1, w2) for phase 1. That is 4 x 4 = 16 taps
    per input pixel instead of 4 x 9 = 36 per output quad (4/9 of the FLOPs), and the upsampled tensor never
    exists. The tap sums are formed in fp32 and rounded once to the input dtype, so the result equals the
    reference up to that rounding and summation order.
    """

    def __init__(self, conv: nn.Conv2d):
        Conv(conv)   # the same constraints as a plain row conv
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1):
            raise ValueError(f"UpConv2x needs a 3x3 convolution with padding 1, got {conv}")
        self.conv = conv
        self._cache: tuple[tuple, list[Tensor], Tensor | None] | None = None

    def out_height(self, h_in):
        return 2 * h_in

    def need(self, a, b, h_in):
        return max(a // 2 - 1, 0), min((b + 1) // 2 + 1, h_in)

    def phase_weights(self, device, dtype) -> tuple[list[Tensor], Tensor | None]:
        """The four 2x2 kernels, phases (0, 0), (0, 1), (1, 0), (1, 1), and the bias, in `dtype` on `device`.

        Cached per device and dtype only: a program (and so this op) is built for one decode, during which the
        weights do not change. (No version counter: the server decodes under `torch.inference_mode()`, where
        weights are inference tensors that have none.)
        """
        key = (device, dtype)
        if self._cache is None or self._cache[0] != key:
            w = self.conv.weight.to(device=device, dtype=torch.float32)
            rows = [torch.stack((w[:, :, 0], w[:, :, 1] + w[:, :, 2]), 2),
                    torch.stack((w[:, :, 0] + w[:, :, 1], w[:, :, 2]), 2)]
            kernels = [torch.stack((r[..., 0], r[..., 1] + r[..., 2]), -1) if q == 0 else
                       torch.stack((r[..., 0] + r[..., 1], r[..., 2]), -1) for r in rows for q in (0, 1)]
            bias = None if self.conv.bias is None else self.conv.bias.to(device=device, dtype=dtype)
            self._cache = (key, [k.to(dtype) for k in kernels], bias)
        return self._cache[1], self._cache[2]

    def __call__(self, x, r0, a, b, h_in, stack):
        i0, i1 = a // 2, (b + 1) // 2   # input rows whose two output rows cover [a, b)
        top, bottom = r0 - (i0 - 1), (i1 + 1) - (r0 + x.shape[-2])
        xp = F.pad(x, (1, 1, top, bottom))   # rows i0 - 1 .. i1, zero outside the image and the band
        kernels, bias = self.phase_weights(x.device, x.dtype)
        n, w = i1 - i0, x.shape[-1]
        out = x.new_empty((x.shape[0], kernels[0].shape[0], n, 2, w, 2))
        for k, kernel in enumerate(kernels):
            p, q = divmod(k, 2)
            out[:, :, :, p, :, q] = F.conv2d(xp[..., p:p + n + 1, q:q + w + 1], kernel, bias)
        return out.reshape(*out.shape[:2], 2 * n, 2 * w)[..., a - 2 * i0: b - 2 * i0, :]


class Save(RowOp):
    """Pushes the band onto the skip stack (the input of a residual block)."""

    def __call__(self, x, r0, a, b, h_in, stack):
        stack.append((x, r0))
        return x


class AddSkip(RowOp):
    """Pops the saved block input and returns `shortcut(saved) + x` on rows [a, b) (host order: skip first)."""

    def __init__(self, shortcut: nn.Conv2d | None):
        self.shortcut = None if shortcut is None else Conv(shortcut)
        if self.shortcut is not None and self.shortcut.k != 1:
            raise ValueError("a residual shortcut must be a 1x1 convolution to be sliced by rows")

    def __call__(self, x, r0, a, b, h_in, stack):
        s, s0 = stack.pop()
        s = s[..., a - s0: b - s0, :]
        if self.shortcut is not None:
            s = self.shortcut(s, a, a, b, h_in, stack)
        return s + x


class GroupNormAct(RowOp):
    """GroupNorm with whole-tensor statistics (set in `stats` before use), then an optional SiLU.

    The affine normalisation runs in fp32 and is rounded to the input dtype before the activation, as the host's
    `GroupNorm` followed by `SiLU` does. `fused=True` runs the kernel kernels/group_norm/batch_norm.py,
    `fused=False` its reference.
    """

    def __init__(self, norm: nn.GroupNorm, silu: bool, fused: bool = True):
        self.norm, self.silu, self.fused = norm, silu, fused
        self.stats: tuple[Tensor, Tensor] | None = None   # mean, rstd: (B, G) fp32
        self._bn: tuple | None = None   # (stats, device, batch_norm's per-channel tensors)

    def __call__(self, x, r0, a, b, h_in, stack):
        if self.stats is None:
            raise RuntimeError("GroupNormAct used before its whole-tensor statistics were measured")
        if self.fused:
            out = group_norm_batch_norm(x, self._per_channel(x.shape[1], x.device), self.norm.eps)
        else:
            out = group_norm_reference(x, *self.stats, self.norm.weight, self.norm.bias, self.norm.num_groups)
        return F.silu(out, inplace=True) if self.silu else out

    def _per_channel(self, c: int, device) -> tuple[Tensor, ...]:
        """batch_norm's per-channel tensors, made once per measured `stats` and device."""
        if self._bn is None or self._bn[0] is not self.stats or self._bn[1] != device:
            mean, rstd = self.stats
            self._bn = (self.stats, device, per_channel(mean, rstd, self.norm.weight, self.norm.bias, self.norm.eps,
                                                        c, device))
        return self._bn[2]


class GroupStats:
    """Per-(batch, group) mean and variance over many row bands, merged in fp64 (law of total variance).

    Each band's mean and variance come from fp32 `var_mean`; the merge over all bands runs once, in `result`, so a
    band costs three kernels (upcast, var_mean, stack) instead of a chain of small fp64 updates.
    """

    def __init__(self, groups: int):
        self.groups = groups
        self.parts: list[tuple[int, Tensor]] = []   # (values per group, (2, B, G) fp32 mean and variance)

    def add(self, x: Tensor) -> None:
        xg = x.reshape(x.shape[0], self.groups, -1).float()
        var, mean = torch.var_mean(xg, dim=-1, correction=0)
        self.parts.append((xg.shape[-1], torch.stack((mean, var))))

    def result(self, eps: float) -> tuple[Tensor, Tensor]:
        """(mean, 1 / sqrt(var + eps)) as (B, G) fp32."""
        counts = torch.tensor([n for n, _ in self.parts], dtype=torch.float64, device=self.parts[0][1].device)
        mean_b, var_b = torch.stack([p for _, p in self.parts]).double().unbind(1)   # (bands, B, G) each
        w = counts[:, None, None] / counts.sum()
        mean = (w * mean_b).sum(0)
        var = (w * (var_b + (mean_b - mean).square())).sum(0)
        return mean.float(), torch.rsqrt(var + eps).float()
