"""The host's progress bar and interruption for long work, as one callback that core loops call."""

from __future__ import annotations

import comfy.model_management
import comfy.utils


def progress(total: int):
    """A callback (done, total, *extra): the host's progress bar, and a raised interruption when the user has
    pressed Cancel (core loops call it between layers or steps)."""
    bar = comfy.utils.ProgressBar(total)

    def on_step(done: int, total: int, *_) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    return on_step
