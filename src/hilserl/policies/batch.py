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
    demo: torch.Tensor | None = None  # bool [B]: the action was a demonstration's or a person's (for BC terms)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device` (itself when already there); pinned CPU memory copies asynchronously."""
        if self.pixels.device == device:
            return self
        return Batch(**{f.name: None if getattr(self, f.name) is None else
                        getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def concat_batches(*batches: Batch) -> Batch:
    """One batch of the rows of all; a field absent from any part is absent from the result (a `demo` flag
    missing from some parts counts their rows as not demonstrations)."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    if len(batches) == 1:
        return batches[0]

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(b, name) for b in batches]
        if name == "demo" and any(p is not None for p in parts):
            parts = [torch.zeros(len(b), dtype=torch.bool) if p is None else p for b, p in zip(batches, parts)]
        return None if any(p is None for p in parts) else torch.cat(parts)
    return Batch(**{f.name: cat(f.name) for f in fields(Batch)})
