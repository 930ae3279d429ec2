"""How the learner's update runs fast: every speed setting in one place, and the helpers that apply them.

What the settings change, and what they leave alone:
- master weights, gradients and optimiser state stay float32, so checkpoints and the weights message are
  float32 whatever is set here; `bf16` only makes convs and linears compute in bfloat16 under autocast,
  while losses, Q values and targets stay float32;
- the learner's encoder pass (`encode`) folds DrQ-v2's input scaling into the first conv, so uint8 pixels
  go in as they are (integers up to 256 are exact in bfloat16) and no float copy of the batch is made;
- with `bf16=False` the fast update computes the plain DrQ-v2 / SAC losses to float32 rounding.

The settings hold on any device (see device.py); `bf16=None` (the default) means "where the device has
native bfloat16": a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it.

Each setting can be overridden from the environment (HILSERL_BF16=0, HILSERL_COMPILE=1, ...), so a
learner can be switched without code changes; `bench/learner_update.py --ablate` measures what each gives.

One process-level setting cannot live here, since OpenMP reads it when torch is imported: on a CPU shared
with other processes, run the learner with OMP_WAIT_POLICY=PASSIVE. Idle OpenMP threads then sleep instead
of spinning; with spinning threads, 2 threads ran 3x slower than 1 under load (and no faster when idle).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.device import supports_bf16
from hilserl.policies.inference import Encoder


@dataclass(frozen=True)
class SpeedSettings:
    bf16: bool | None = None  # autocast convs and linears to bfloat16; None: where the device supports it
    # NHWC activations: on the CPU convs 2-4 run ~25% faster, and the first conv's forward 4x faster (its
    # weight gradient still reads NCHW pixels: oneDNN's NHWC kernel for 9 input channels is ~30x slower).
    channels_last: bool = True
    fused_adam: bool = True  # one fused kernel per optimiser step instead of a loop over parameters
    # torch.compile the update's forward phases: 25-40 s of compiling on 2 cores (again for each new batch
    # shape) for ~+10% measured before `encode` avoided the slow layout paths. Opt-in: tests and short runs
    # would pay the compile time, and a compile failure must not stop a learner.
    compile: bool = False
    threads: int = 0  # intra-op threads; 0 leaves torch's default (one per usable core, right for 2 cores)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SpeedSettings:
        """Defaults, overridden by HILSERL_<SETTING> variables (booleans as 0/1, threads as an integer)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            text = environ.get(f"HILSERL_{f.name.upper()}")
            if text is None:
                continue
            if f.name == "threads":
                if not text.strip().isdigit():
                    raise ValueError(f"HILSERL_THREADS must be a non-negative integer, got {text!r}")
                values[f.name] = int(text)
            elif text.strip() in ("0", "1"):
                values[f.name] = text.strip() == "1"
            else:
                raise ValueError(f"HILSERL_{f.name.upper()} must be 0 or 1, got {text!r}")
        return cls(**values)

    def apply_threads(self) -> None:
        if self.threads > 0 and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def use_bf16(self, device: torch.device) -> bool:
        return supports_bf16(device) if self.bf16 is None else self.bf16

    def autocast(self, device: torch.device) -> torch.autocast:
        """One context per forward phase: leaving it drops autocast's cache of bf16 weight copies, which
        would otherwise be stale after an optimiser step."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_bf16(device))

    def adam(self, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, fused=True) if self.fused_adam else torch.optim.Adam(params, lr=lr)


def fused_conv_relu_available(dtype: torch.dtype) -> bool:
    """oneDNN's conv with a ReLU post-op, for this dtype on this CPU (its bfloat16 path needs AVX512 or
    AVX-NE-CONVERT)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


# oneDNN's two weight-gradient kernels for the first conv (9 input channels, stride 2) rank differently by CPU:
# from NCHW pixels ~30x faster on an AVX512-BF16 CPU, from NHWC pixels ~4x faster on an AVX2 one. Each process
# times both once per (pixel shape, dtype) and keeps the faster: {key: "nchw" | "nhwc"}.
_FIRST_CONV_WGRAD_LAYOUT: dict[tuple, str] = {}
TUNE_REPEATS = 2  # the best of two runs each: the first call of a kernel also builds it


def _first_conv_weight_grad(layout: str, grad: torch.Tensor, pixels: torch.Tensor, nhwc: torch.Tensor,
                            weight: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    if layout == "nhwc":
        grad_in, pixels_in = grad.contiguous(memory_format=torch.channels_last), nhwc
    else:
        grad_in, pixels_in = grad.contiguous(), pixels.to(weight.dtype)
    _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_in, pixels_in, weight, [weight.shape[0]], [stride] * 2, [0, 0], [1, 1], False, [0, 0], 1,
        [False, True, True])
    return grad_weight, grad_bias


def _faster_weight_grad_layout(grad: torch.Tensor, pixels: torch.Tensor, nhwc: torch.Tensor, weight: torch.Tensor,
                               stride: int) -> str:
    args = (grad, pixels, nhwc, weight, stride)
    key = (tuple(pixels.shape), weight.dtype)
    if key not in _FIRST_CONV_WGRAD_LAYOUT:
        seconds = {}
        for layout in ("nchw", "nhwc"):
            runs = []
            for _ in range(TUNE_REPEATS):
                started = time.perf_counter()
                _first_conv_weight_grad(layout, *args)
                runs.append(time.perf_counter() - started)
            seconds[layout] = min(runs)
        _FIRST_CONV_WGRAD_LAYOUT[key] = min(seconds, key=seconds.get)
    return _FIRST_CONV_WGRAD_LAYOUT[key]


class _FirstConvReLU(torch.autograd.Function):
    """The first conv and its ReLU on the CPU: forward from NHWC pixels (4x faster than NCHW for 9 input
    channels), the ReLU fused into the conv where oneDNN offers it; the weight gradient from whichever
    pixel layout this CPU computes it faster (see _FIRST_CONV_WGRAD_LAYOUT). Pixels get no gradient."""

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int) -> torch.Tensor:
        # uint8 transposed, then widened: 2x faster than widening and transposing in one copy
        nhwc = pixels.contiguous(memory_format=torch.channels_last).to(weight.dtype)
        if fused_conv_relu_available(nhwc.dtype):
            y = torch.ops.mkldnn._convolution_pointwise(nhwc, weight, bias, [0, 0], [stride] * 2, [1, 1], 1,
                                                        "relu", [], "")
        else:
            y = F.relu(F.conv2d(nhwc, weight, bias, stride))
        ctx.save_for_backward(pixels, nhwc, weight, y)
        ctx.stride = stride
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pixels, nhwc, weight, y = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.contiguous(memory_format=torch.channels_last), y, 0)
        args = (grad, pixels, nhwc, weight, ctx.stride)
        grad_weight, grad_bias = _first_conv_weight_grad(_faster_weight_grad_layout(*args), *args)
        return None, grad_weight, grad_bias, None


class _ConvReLU(torch.autograd.Function):
    """An unpadded stride-1 conv and the ReLU after it as one oneDNN kernel (the ReLU as the conv's post-op),
    CPU only: the output is written once instead of written, read and written again (~25% of a 32-channel
    3x3 conv's time at batch 256 in float32, measured on an AVX2 CPU). Backward as autograd's own: the ReLU
    mask from the output, then the conv's input, weight and bias gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, y = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad.contiguous(memory_format=torch.channels_last), y, 0)
        return torch.ops.aten.convolution_backward(grad, x, weight, [weight.shape[0]], [1, 1], [0, 0], [1, 1],
                                                   False, [0, 0], 1, list(ctx.needs_input_grad))


def _conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    # Under autocast the activations are bfloat16 and the parameters float32: the kernel takes one dtype.
    return _ConvReLU.apply(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype))


def encode(encoder: Encoder, pixels: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """`encoder(pixels)` for uint8 pixels, with the scaling folded into the first (unpadded) conv:
    conv(x / 255 - 0.5; W, b) = conv(x; W / 255, b - 0.5 * sum(W))."""
    first, rest = encoder.convnet[0], encoder.convnet[1:]
    if pixels.dtype != torch.uint8:
        raise ValueError(f"encode expects uint8 pixels, got {pixels.dtype}; the encoder scales them itself")
    if first.padding != (0, 0):
        raise ValueError("folding the input scaling into the first conv needs an unpadded conv")
    device = pixels.device.type
    weight = first.weight / 255.0
    bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        weight, bias = weight.to(dtype), bias.to(dtype)
    # The last ReLU runs after the flatten's NCHW copy, not before: its backward then reads gradient and
    # output in one layout (with NHWC output and NCHW gradient, the CPU kernel is ~10x slower).
    if channels_last and device == "cpu":
        x = _FirstConvReLU.apply(pixels, weight, bias, first.stride[0])
        _, conv2, _, conv3, _, conv4 = rest[:-1]
        if fused_conv_relu_available(x.dtype):
            x = conv4(_conv_relu(conv3, _conv_relu(conv2, x)))
        else:
            x = rest[1:-1](x)
        return rest[-1](x.contiguous()).flatten(1)
    x = F.conv2d(pixels.to(weight.dtype), weight, bias, first.stride)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = rest[:-1](x)
    return rest[-1](x.contiguous()).flatten(1)


@contextmanager
def read_only(module: nn.Module) -> Iterator[None]:
    """Build graphs that do not differentiate `module`'s parameters (the actor loss reads the critic, and
    needs no gradient for its weights, nor any backward through its trunk)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
