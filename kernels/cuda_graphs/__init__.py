"""CUDA-graph replay of a forward that is bound by kernel launches (the small pyramid levels).

`capture.py`: signature, capture and replay; `store.py`: where graphs live between calls and runs, and when they
are released; `reference.py`: the eager forward, which a replay must equal. README.md: semantics, constraints,
tolerance. The host's side (the DIFFUSION_MODEL wrapper, the model-level checks) is host/cuda_graphs.py.
"""
