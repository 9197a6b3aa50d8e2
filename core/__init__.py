"""Host-free algorithms (torch, einops, numpy, safetensors only): never imports ComfyUI."""
