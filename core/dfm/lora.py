"""A small LoRA on the Linear layers of a frozen core, attached with forward hooks (the base weights are never
written), saved in the host's LoRA key layout so the host's weight patches apply it at load time."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CoreLoRA(nn.Module):
    """Rank-r factors for every nn.Linear under `root` whose name contains one of `scopes`.

    y = W x + up(down(x)); up starts at zero, so attaching changes nothing until trained.
    """

    def __init__(self, root: nn.Module, rank: int, scopes: tuple[str, ...] = ("joint_blocks",), seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.rank, self.names, self._root, self._handles = rank, [], [root], []
        self.down, self.up = nn.ParameterList(), nn.ParameterList()
        for name, mod in root.named_modules():
            if isinstance(mod, nn.Linear) and any(s in name for s in scopes):
                self.names.append(name)
                down = torch.randn(rank, mod.in_features, generator=g) / mod.in_features**0.5
                self.down.append(nn.Parameter(down))
                self.up.append(nn.Parameter(torch.zeros(mod.out_features, rank)))
        if not self.names:
            raise ValueError(f"no Linear layer under {scopes} to adapt")

    @staticmethod
    def parameter_count(root: nn.Module, rank: int, scopes: tuple[str, ...] = ("joint_blocks",)) -> int:
        """How many values a CoreLoRA(root, rank, scopes) would train, without making it."""
        return sum(rank * (mod.in_features + mod.out_features) for name, mod in root.named_modules()
                   if isinstance(mod, nn.Linear) and any(s in name for s in scopes))

    def attach(self) -> CoreLoRA:
        modules = dict(self._root[0].named_modules())
        for k, name in enumerate(self.names):
            self._handles.append(modules[name].register_forward_hook(self._hook(k)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, k: int):
        def hook(_module, args, out: Tensor) -> Tensor:
            x = args[0]
            return out + (x @ self.down[k].to(x).T) @ self.up[k].to(x).T
        return hook

    def host_tensors(self, prefix: str = "diffusion_model.") -> dict[str, Tensor]:
        """Keys the host's LoRA loader reads; alpha = rank, so its alpha / rank scale is 1 as here."""
        out = {}
        for name, down, up in zip(self.names, self.down, self.up, strict=True):
            out[f"{prefix}{name}.lora_up.weight"] = up.detach().float().cpu().contiguous()
            out[f"{prefix}{name}.lora_down.weight"] = down.detach().float().cpu().contiguous()
            out[f"{prefix}{name}.alpha"] = torch.tensor(float(self.rank))
        return out

    def load_host_tensors(self, tensors: dict[str, Tensor], prefix: str = "diffusion_model.") -> None:
        with torch.no_grad():
            for name, down, up in zip(self.names, self.down, self.up, strict=True):
                up.copy_(tensors[f"{prefix}{name}.lora_up.weight"])
                down.copy_(tensors[f"{prefix}{name}.lora_down.weight"])
