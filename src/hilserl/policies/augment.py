"""Image augmentation for training on pixels.

DrQ random-shift augmentation: pad by replication, then crop back at a random integer offset.

DrQ-v2 writes this as a bilinear `grid_sample` whose sampling points fall exactly on pixel centres, so
every shift is a whole number of pixels. Reading the shifted pixels directly gives the same images without
interpolation, works on uint8 (4x less memory traffic than float) and costs milliseconds per batch.

Colour jitter: every RGB frame of one sample (all its stacked frames and cameras, which one cell's light
lit) through the same random colour transform, so a policy does not tie itself to one light and one set of
paint colours.
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


def sample_colour_transforms(n: int, strength: float, generator: torch.Generator | None = None,
                             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 3, 3] colour matrices and [n] contrasts for `colour_jitter`; strength 0 is the identity.

    Each matrix is brightness x (a gain per channel on the diagonal, mixing between channels off it):
    brightness and contrast in [1 - s, 1 + s], gains in [1 - s/2, 1 + s/2], mixing in [-s, s]. At s = 0.3 a
    red cube can come out orange (green gains a quarter of red) and a light a third dimmer."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"colour jitter strength must be in [0, 1), got {strength}")

    def uniform(*shape, low, high):
        return low + (high - low) * torch.rand(*shape, generator=generator, device=device)
    s = strength
    eye = torch.eye(3, device=device)
    mixing = uniform(n, 3, 3, low=-s, high=s) * (1 - eye)
    gains = torch.diag_embed(uniform(n, 3, low=1 - s / 2, high=1 + s / 2))
    brightness = uniform(n, 1, 1, low=1 - s, high=1 + s)
    return brightness * (gains + mixing), uniform(n, low=1 - s, high=1 + s)


def transform_colours(pixels: torch.Tensor, matrices: torch.Tensor, contrasts: torch.Tensor) -> torch.Tensor:
    """pixels [n, 3k, h, w] in 0..255 (k RGB frames per sample) -> float, each sample's frames mapped by its
    matrix, their contrast scaled about the sample's mean grey, clamped to 0..255."""
    n, c, h, w = pixels.shape
    if c % 3:
        raise ValueError(f"colour jitter needs RGB frames: {c} channels is not a multiple of 3")
    rgb = pixels.float().reshape(n, c // 3, 3, h * w)
    rgb = torch.einsum("nij,nkjp->nkip", matrices.to(rgb.dtype), rgb)
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = mean + contrasts.to(rgb.dtype).view(n, 1, 1, 1) * (rgb - mean)
    return rgb.clamp_(0.0, 255.0).reshape(n, c, h, w)


def colour_jitter(pixels: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random colour transform per sample (see sample_colour_transforms); float out, 0..255."""
    if strength == 0.0:
        return pixels.float()
    matrices, contrasts = sample_colour_transforms(pixels.shape[0], strength, generator, pixels.device)
    return transform_colours(pixels, matrices, contrasts)
