"""The analytic natural-image model: a Gaussian image prior with an exact denoiser, the oracle for sampler claims."""

from .bands import band_power, band_ratio, band_standard_error, expected_eps_ratio, radial_bands
from .dead_leaves import dead_leaves, dead_leaves_reference
from .prior import NaturalImagePrior, pool

__all__ = [
    "NaturalImagePrior",
    "band_power",
    "band_ratio",
    "band_standard_error",
    "dead_leaves",
    "dead_leaves_reference",
    "expected_eps_ratio",
    "pool",
    "radial_bands",
]
