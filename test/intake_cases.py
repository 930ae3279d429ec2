"""Valid and malformed transitions payloads for the intake tests (unit and live learner) and bench/intake_fuzz.py.

Every malformed payload is built the way a sender could build it: structural mutations are re-encoded with a
correct digest (so the check that catches them is the one named, not the digest), wire-level ones damage
the bytes of a valid payload.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

from hilserl.control.episode import Transition
from hilserl.policies.config import PolicyConfig
from hilserl.replay.wire import encode_batch, encode_transitions, read_transitions

IMAGE = 16


def transitions(episode: int, length: int, config: PolicyConfig, start: int = 0, ends: bool = True,
                seed: int = 0) -> list[Transition]:
    rng = np.random.default_rng(seed)
    width, channels = config.action_dim, 3 * config.num_cameras
    out = []
    for step in range(start, start + length):
        last = ends and step == start + length - 1
        out.append(Transition(episode=episode, step=step,
                              frames=rng.integers(0, 256, (channels, config.image_size, config.image_size), np.uint8),
                              state=rng.normal(size=width).astype(np.float32),
                              action=rng.uniform(-1, 1, width).astype(np.float32), reward=float(rng.normal()),
                              terminated=False, truncated=last, intervention=bool(step % 2), success=False,
                              final_frames=rng.integers(0, 256, (channels, config.image_size, config.image_size),
                                                        np.uint8) if last else None,
                              final_state=rng.normal(size=width).astype(np.float32) if last else None))
    return out


def valid_payload(stream: str, seq: int, config: PolicyConfig, length: int = 3, seed: int = 0) -> bytes:
    return encode_transitions(transitions(seq, length, config, seed=seed), actor_id=stream, seq=seq,
                              config_fingerprint=config.fingerprint())


def _parts(payload: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    meta, tensors = read_transitions(payload)
    return {k: v for k, v in meta.items() if k != "digest"}, {k: v.clone() for k, v in tensors.items()}


def rebuilt(payload: bytes, meta_changes: dict[str, str] | None = None, **tensor_changes) -> bytes:
    """The payload with metadata entries / tensors replaced (None drops a tensor), digest recomputed."""
    meta, tensors = _parts(payload)
    meta |= meta_changes or {}
    for name, value in tensor_changes.items():
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value(tensors[name]) if callable(value) else value
    return encode_batch(tensors, meta)


def _with(index, value):
    def change(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[index] = value
        return t
    return change


# name -> (kind the intake must name, mutation of a valid payload). Each keeps stream id and sequence number.
CONTENT_MUTATIONS = {
    "frames_bigger": ("shape", lambda p: rebuilt(p, frames=lambda t: torch.zeros(t.shape[0], 3, IMAGE + 4, IMAGE + 4,
                                                                                dtype=torch.uint8))),
    "frames_channels": ("shape", lambda p: rebuilt(p, frames=lambda t: torch.cat([t, t], 1))),
    "frames_rank": ("shape", lambda p: rebuilt(p, frames=lambda t: t[:, 0])),
    "frames_float": ("dtype", lambda p: rebuilt(p, frames=lambda t: t.float())),
    "state_width_1": ("shape", lambda p: rebuilt(p, state=lambda t: t[:, :1].contiguous())),
    "action_width": ("shape", lambda p: rebuilt(p, action=lambda t: t[:, :-1].contiguous())),
    "state_f64": ("dtype", lambda p: rebuilt(p, state=lambda t: t.double())),
    "reward_extra_dim": ("shape", lambda p: rebuilt(p, reward=lambda t: t[:, None])),
    "episode_extra_dim": ("shape", lambda p: rebuilt(p, episode=lambda t: t[:, None])),
    "step_int32": ("dtype", lambda p: rebuilt(p, step=lambda t: t.int())),
    "flags_width": ("shape", lambda p: rebuilt(p, flags=lambda t: t[:, :3].contiguous())),
    "flags_value": ("range", lambda p: rebuilt(p, flags=_with((0, 2), 7))),
    "state_nan": ("nonfinite", lambda p: rebuilt(p, state=_with((0, 0), float("nan")))),
    "action_inf": ("nonfinite", lambda p: rebuilt(p, action=_with((-1, 2), float("inf")))),
    "reward_nan": ("nonfinite", lambda p: rebuilt(p, reward=_with(0, float("nan")))),
    "final_state_inf": ("nonfinite", lambda p: rebuilt(p, final_state=_with((0, 0), float("-inf")))),
    "action_out_of_range": ("range", lambda p: rebuilt(p, action=_with((0, 0), 3.0))),
    "episode_negative": ("range", lambda p: rebuilt(p, episode=_with(0, -5))),
    "final_frames_size": ("shape", lambda p: rebuilt(p, final_frames=lambda t: t[:, :, :8, :8].contiguous())),
    "final_state_dtype": ("dtype", lambda p: rebuilt(p, final_state=lambda t: t.half())),
    "final_index_range": ("final", lambda p: rebuilt(p, final_index=lambda t: t + 100)),
    "final_on_running_step": ("final", lambda p: rebuilt(p, final_index=lambda t: t * 0)),
    "count_disagrees": ("shape", lambda p: rebuilt(p, {"count": "7"})),
    "missing_field": ("fields", lambda p: rebuilt(p, step=None)),
    "extra_field": ("fields", lambda p: rebuilt(p, secret=torch.zeros(3))),
    "other_config": ("config", lambda p: rebuilt(p, {"config_fingerprint": "0123456789abcdef"})),
}


def _flip(p: bytes, bit: int) -> bytes:
    b = bytearray(p)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def _huge_header(p: bytes) -> bytes:
    return struct.pack("<Q", 1 << 62) + p[8:]


def _huge_shape(p: bytes) -> bytes:
    (n,) = struct.unpack("<Q", p[:8])
    header = json.loads(p[8:8 + n])
    header["frames"]["shape"] = [2**39, 3, 16, 16]
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + p[8 + n:]


# Damage to the bytes: what the stream id / sequence number say cannot be believed. `arg` picks the spot.
WIRE_MUTATIONS = {
    "truncated": lambda p, arg: p[:arg % len(p)],
    "bit_flip": lambda p, arg: _flip(p, arg),
    "huge_header_length": lambda p, arg: _huge_header(p),
    "huge_declared_shape": lambda p, arg: _huge_shape(p),
    "garbage": lambda p, arg: bytes((arg * 7919 + i * 31) % 256 for i in range(64 + arg % 500)),
    "pickle": lambda p, arg: b"\x80\x04\x95" + p[3:],
    "old_format": lambda p, arg: rebuilt(p, {"format": "hilserl-transitions/1"}),
    "forged_digest": lambda p, arg: p.replace(read_transitions(p)[0]["digest"].encode(), b"0" * 64),
}

# A payload whose stream id or sequence number is itself unusable.
HOSTILE_STREAMS = ["x" * 5000, "../../etc/passwd", "a\x00b", "actor\u00e9", "", "/a b", "a" * 201]
BAD_SEQUENCES = ["0", "-3", str(10**12), "1e3", "", "99999999999999999999999"]
