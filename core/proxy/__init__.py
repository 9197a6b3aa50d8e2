"""Trained proxy models: image data with crops, flips and scales, a fixed linear latent codec, the flow-matching
objective and image metrics. Host-free; benchmarks/proxy_train.py and benchmarks/proxies.py use them."""

from .codec import PatchPCACodec
from .data import ImageBank, multires_batches
from .flow import flow_targets, flux_mu, sample_timesteps
from .metrics import patch_sliced_wasserstein, psnr, ssim

__all__ = ["ImageBank", "PatchPCACodec", "flow_targets", "flux_mu", "multires_batches", "patch_sliced_wasserstein",
           "psnr", "sample_timesteps", "ssim"]
