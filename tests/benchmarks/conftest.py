"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def newest_host():
    """Skip unless the host under test is the newest of the matrix: the benchmarks of the 2026 families and of the
    trained proxy measure on it (issues 18 and 19), and older hosts lack those families' classes or detect their
    files otherwise (0.3.76-dev fixes a Flux file's heads at 24, has another HunyuanVideo 1.5 VAE)."""
    from host import default_host, selected_host

    if selected_host().name != default_host():
        pytest.skip(f"measured on ComfyUI {default_host()}, the newest host of the matrix; this is "
                    f"{selected_host().name}")
