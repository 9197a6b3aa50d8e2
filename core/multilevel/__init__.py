"""Multi-level representations: Laplacian and wavelet pyramids of images and latents, exact both ways."""
