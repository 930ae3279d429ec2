"""Demonstrations shipped with a checkpoint: CHECKPOINT/demos.safetensors.

The file is one transitions payload (replay/wire.py's format: each frame once, uint8 at the policy's image
size, plus every episode's final frame), so the learner reads it with the same strict decoder it applies to
an actor's batches. Every transition is flagged as an intervention: a demonstrator chose the action, which
is what the learner's demonstration buffer and its behaviour-cloning term look for.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hilserl.control.episode import Transition
from hilserl.policies.config import PolicyConfig
from hilserl.replay.wire import TransitionsError, decode_transitions, encode_transitions

DEMOS_FILE = "demos.safetensors"
DEMOS_STREAM = "demonstrations"


def write_demos(path: str | Path, transitions: list[Transition], config: PolicyConfig) -> Path:
    path = Path(path)
    payload = encode_transitions([replace(t, intervention=True, weights_version=0) for t in transitions],
                                 actor_id=DEMOS_STREAM, seq=1, config_fingerprint=config.fingerprint())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


def read_demos(path: str | Path, config: PolicyConfig) -> list[Transition]:
    """The demonstrations in `path`; refuses a file recorded for another policy config or image size."""
    meta, transitions = decode_transitions(Path(path).read_bytes())
    if meta["config_fingerprint"] != config.fingerprint():
        raise TransitionsError(f"{path} holds demonstrations for policy config {meta['config_fingerprint']}, "
                               f"the learner runs {config.fingerprint()}")
    frame_shape = (3 * config.num_cameras, config.image_size, config.image_size)
    if transitions[0].frames.shape != frame_shape:
        raise TransitionsError(f"{path}: frames of shape {transitions[0].frames.shape}, the policy reads {frame_shape}")
    return transitions
