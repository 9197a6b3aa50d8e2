"""Decomposable Flow Matching (ALGORITHMS.md section 1): per-level layers around a host flow DiT, the stage-wise
sampler, the DFM training step and checkpoints."""
