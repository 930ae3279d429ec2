"""A training batch, as the replay buffer hands it to an agent's update."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    pixels: torch.Tensor  # uint8 [B, C, H, W], frames stacked on channels
    action: torch.Tensor  # float32 [B, A] in [-1, 1]
    reward: torch.Tensor  # float32 [B, 1]: n-step discounted sum of rewards
    discount: torch.Tensor  # float32 [B, 1]: gamma^n, zero where the episode terminated within n steps
    next_pixels: torch.Tensor  # uint8 [B, C, H, W], the observation n steps later
    state: torch.Tensor | None = None  # float32 [B, S] proprioception, when the policy reads it
    next_state: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device` (itself when already there); pinned CPU memory copies asynchronously."""
        if self.pixels.device == device:
            return self
        return Batch(**{f.name: None if getattr(self, f.name) is None else
                        getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})
