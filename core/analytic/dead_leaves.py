"""Dead-leaves images: a synthetic dataset with natural-image statistics, generated on the fly.

Discs with radii of density ~ r^-3 between r_min and r_max (scaled by size / 64), uniform centres and uniform
random colours in [-1, 1] are stacked, disc 0 on top, over a background of one more colour; their power
spectrum falls like a natural image's (Lee, Mumford & Huang 2001). `dead_leaves` finds each pixel's top disc
from a bool coverage tensor with a byte argmax (no float copy of the n x discs x size^2 tensor) and draws on
the generator's device; `dead_leaves_reference` is the plain float formulation it is tested against (they
agree but for pixels within float rounding of a disc edge).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _discs(n: int, size: int, generator: torch.Generator, discs: int, r_min: float, r_max: float, device
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(r, cy, cx (n, discs), colour (n, discs + 1, 3)) on `device`; radii by inverse CDF of density ~ r^-3."""
    on = generator.device
    u = torch.rand(n, discs, generator=generator, device=on)
    r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5 * size / 64
    cy, cx = (torch.rand(n, discs, generator=generator, device=on) * size for _ in range(2))
    colour = torch.rand(n, discs + 1, 3, generator=generator, device=on) * 2 - 1
    return tuple(t.to(device) for t in (r, cy, cx, colour))


def _paint(top: Tensor, colour: Tensor, size: int) -> Tensor:
    """Per-pixel disc index (n, size, size) -> (n, 3, size, size) colours."""
    img = torch.gather(colour, 1, top.flatten(1)[..., None].expand(-1, -1, 3))
    return img.reshape(top.shape[0], size, size, 3).permute(0, 3, 1, 2).contiguous()


def dead_leaves(n: int, size: int, generator: torch.Generator, device=None, discs: int = 120,
                r_min: float = 1.0, r_max: float = 24.0) -> Tensor:
    """(n, 3, size, size) in [-1, 1] on `device` (default: the generator's)."""
    device = generator.device if device is None else torch.device(device)
    r, cy, cx, colour = _discs(n, size, generator, discs, r_min, r_max, device)
    grid = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    dy2 = (grid - cy[..., None]) ** 2  # (n, discs, size)
    room = r[..., None] ** 2 - (grid - cx[..., None]) ** 2  # (n, discs, size): what dy^2 must stay under
    inside = dy2[..., :, None] < room[..., None, :]  # (n, discs, size, size) bool, no float intermediate
    top = inside.view(torch.uint8).argmax(1)  # the first covering disc (0 where none covers)
    covered = inside.gather(1, top[:, None]).squeeze(1)
    return _paint(torch.where(covered, top, discs), colour, size)


def dead_leaves_reference(n: int, size: int, generator: torch.Generator, device=None, discs: int = 120,
                          r_min: float = 1.0, r_max: float = 24.0) -> Tensor:
    """The plain formulation: a float (n, discs, size, size) coverage tensor and its argmax."""
    device = generator.device if device is None else torch.device(device)
    r, cy, cx, colour = _discs(n, size, generator, discs, r_min, r_max, device)
    grid = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    inside = ((grid[None, None, :, None] - cy[..., None, None]) ** 2
              + (grid[None, None, None, :] - cx[..., None, None]) ** 2) < r[..., None, None] ** 2
    top = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(inside[:, 0], discs, dtype=torch.long))
    return _paint(top, colour, size)
