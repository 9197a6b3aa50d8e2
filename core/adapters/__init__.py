"""Low-rank adapters (host-free): randomized SVD, per-layer rank rules, LoRA extraction, resize and merge."""
