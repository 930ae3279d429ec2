"""DrQ random-shift augmentation: pad by replication, then crop back at a random integer offset.

DrQ-v2 writes this as a bilinear `grid_sample` whose sampling points fall exactly on pixel centres, so
every shift is a whole number of pixels. Reading the shifted pixels directly gives the same images without
interpolation, works on uint8 (4x less memory traffic than float) and costs milliseconds per batch.
"""

from __future__ import annotations

import torch


def sample_shifts(n: int, pad: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, 2] int64 offsets (x, y), each in [0, 2 * pad]; (pad, pad) is the identity."""
    return torch.randint(0, 2 * pad + 1, size=(n, 2), generator=generator, device=device)


def shift_images(pixels: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """out[i, :, r, c] = pixels[i, :, clamp(r + y_i - pad), clamp(c + x_i - pad)]; same dtype and shape."""
    n, c, h, w = pixels.shape
    if shifts.shape != (n, 2):
        raise ValueError(f"shifts must be [{n}, 2] (x, y) offsets for {n} images, got {tuple(shifts.shape)}")
    if shifts.numel() and (int(shifts.min()) < 0 or int(shifts.max()) > 2 * pad):
        raise ValueError(f"shifts must lie in [0, {2 * pad}] for pad {pad}, "
                         f"got [{int(shifts.min())}, {int(shifts.max())}]")
    if pad == 0:
        return pixels
    # Replicate padding is index clamping, so pad and crop become one gather over each flattened image:
    # a single kernel, where a per-image slice-and-stack would be n small copies.
    x, y = shifts[:, :1] - pad, shifts[:, 1:] - pad
    rows = (torch.arange(h, device=pixels.device) + y).clamp(0, h - 1)  # [n, h]
    cols = (torch.arange(w, device=pixels.device) + x).clamp(0, w - 1)  # [n, w]
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return pixels.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def random_shift(pixels: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of the batch by up to `pad` whole pixels (any dtype in, the same dtype out)."""
    n, _, h, w = pixels.shape
    if h != w:
        raise ValueError(f"random_shift expects square images, got {h}x{w}")
    return shift_images(pixels, sample_shifts(n, pad, generator, pixels.device), pad)
