"""Which torch device a learner, an actor or a tool runs on, from one user-facing word.

`auto` takes the GPU when torch sees one, else the CPU. Everything that crosses a process boundary
(checkpoints, the weights message, transitions) is written from CPU copies and read onto the CPU first,
so a checkpoint written on a GPU loads on a CPU machine and back.
"""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; a clear ValueError for anything else."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"device {name!r} is not one of {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU here (torch {torch.__version__}); "
                         "use device 'cpu' or 'auto'")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index)


def supports_bf16(device: torch.device) -> bool:
    """bfloat16 pays only with native support: a CUDA GPU that has it, or a CPU with AVX512-BF16 or AMX
    (elsewhere it is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False
