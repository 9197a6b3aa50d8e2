"""Memory a job will need, checked against what the device has free before the job allocates it.

A request the schema allows can still need more memory than the machine has (a sparse adapter at threshold 1.0
trains every weight of the model: about 29 bytes per weight). Without a check the server process grows until the
kernel kills it, losing every queued prompt. `refuse_over` compares an estimate with the free memory of the device
the job runs on (RAM for the CPU, VRAM for a GPU, as the host counts them) and refuses with the figures and what to
lower. The estimates leave activations out, so they sit at or below what a job takes
(benchmarks/train_memory.py measures the trainer's against the real peak).
"""

from __future__ import annotations

import comfy.model_management
import torch

GIB = 1024**3


class NotEnoughMemory(MemoryError):
    """A job whose estimated memory exceeds what its device has free; the message says what to lower."""


def free_bytes(device: torch.device) -> int:
    """What the host counts as free on `device` (for CUDA: free VRAM plus torch's unused cache; CPU: available)."""
    return int(comfy.model_management.get_free_memory(device))


def refuse_over(parts: dict[str, int], device: torch.device, node: str, lower: str) -> None:
    """Raise NotEnoughMemory when sum(parts) (bytes by what needs them) exceeds the free memory of `device`."""
    need, free = sum(parts.values()), free_bytes(device)
    if need <= free:
        return
    detail = ", ".join(f"{what} {size / GIB:.2f} GiB" for what, size in parts.items())
    raise NotEnoughMemory(f"{node} needs at least {need / GIB:.2f} GiB on {device} ({detail}), but "
                          f"{free / GIB:.2f} GiB are free: {lower}")
