"""Loading torch files (.pt, .pth, .bin) as plain tensors only, with messages a user can act on.

torch.load(weights_only=True) refuses a pickle that holds code or foreign objects, but its message suggests loading
again with weights_only=False, which would run that code. Here such a file is refused in our words, and a damaged
one is told apart from it; both name the file only (no server paths).
"""

from __future__ import annotations

from pathlib import Path

import torch

_REFUSED = "Weights only load failed"  # torch's prefix when its safe unpickler stops
_FOREIGN = "Unsupported global"  # ... at a global: a function or class, i.e. code or a foreign object


def load_plain(path: str | Path, error: type[Exception] = ValueError):
    """torch.load(path, weights_only=True) on the CPU; `error` (the caller's error class) says what went wrong."""
    name = Path(path).name
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling and zip errors have many types (KeyError on junk bytes); all mean unusable
        text = str(err)
        if _FOREIGN in text:
            raise error(f"{name} holds Python code or objects besides tensors, so it was not loaded (loading it "
                        "could run that code): use a .safetensors file, or a torch file of plain tensors") from None
        if _REFUSED in text:
            raise error(f"{name} is not a torch file of plain tensors (or it is damaged), so it was not loaded: use "
                        "a .safetensors file, or a torch file of plain tensors") from None
        raise error(f"{name} is corrupt or truncated, or not a torch file: re-download or re-export it") from None

def refuse_non_finite_tensors(tensors: dict, name: str, error: type[Exception] = ValueError) -> None:
    """Raise `error` naming the file and the first floating tensor that holds NaN or inf values."""
    for key, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise error(f"{name}: tensor {key} holds {bad} non-finite values (NaN or inf) of {t.numel()}: the "
                            "file is damaged or its training diverged, so it was not used")
