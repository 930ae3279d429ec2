"""DrQ random-shift augmentation: pad by replication, then crop back at a random sub-pixel offset."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(pixels: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of the batch by up to `pad` pixels, bilinearly; float in, float out."""
    n, _, h, w = pixels.shape
    assert h == w, "random_shift expects square images"
    x = F.pad(pixels, (pad, pad, pad, pad), mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=pixels.device, dtype=pixels.dtype)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    shift = torch.randint(0, 2 * pad + 1, size=(n, 1, 1, 2), device=pixels.device, generator=generator)
    grid = base_grid + shift.to(pixels.dtype) * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
