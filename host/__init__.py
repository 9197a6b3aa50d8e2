"""The host layer: everything that touches ComfyUI's internals (model patchers, samplers, VAEs, folders, progress),
one module per feature, never comfy_api. `models.py` is the one vocabulary of families, parametrisation, patch
grid and step window; `features.py` probes what this host version has."""
