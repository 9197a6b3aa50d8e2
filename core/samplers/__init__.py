"""Progressive samplers (host-free math): one algorithm per file."""
