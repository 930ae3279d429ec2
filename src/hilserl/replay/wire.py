"""A batch of transitions on the wire: safetensors bytes (no pickle), with stream id, sequence number and digest.

Per-step tensors, N rows (`STEP_FIELDS`): frames [N, 3*cams, P, P] uint8, state [N, S] f32, action [N, A] f32,
reward [N] f32, flags [N, 4] uint8 (terminated, truncated, intervention, success), episode [N] i64, step [N] i64,
weights_version [N] i64 (the weights version that chose each action).
For the transitions that ended an episode (`FINAL_FIELDS`, M rows): final_index [M] i64 + final_frames
[M, 3*cams, P, P] uint8 + final_state [M, S] f32.

Metadata: format, actor_id (the sender's stream), seq, count, config_fingerprint, and digest: a SHA-256 over
every other metadata entry and every tensor's name, dtype, shape and bytes, so a bit flip anywhere in a
payload is refused. `read_transitions` checks the format and the digest; what the tensors must hold for a
given policy is checked by `validate`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save as safetensors_save

from hilserl.control.episode import Transition
from hilserl.policies.config import PolicyConfig
from hilserl.safetensors_io import DTYPE_NAMES, read_safetensors

FORMAT = "hilserl-transitions/2"
FLAGS = ("terminated", "truncated", "intervention", "success")  # the columns of the `flags` tensor
METADATA_KEYS = ("format", "actor_id", "seq", "count", "config_fingerprint", "digest")


@dataclass(frozen=True)
class Field:
    """One tensor of the batch: its dtype and the shape of one row for a policy config."""

    dtype: torch.dtype
    row_shape: Callable[[PolicyConfig], tuple[int, ...]]


def _frames(c: PolicyConfig) -> tuple[int, ...]:
    return (3 * c.num_cameras, c.image_size, c.image_size)  # the newest frame of each camera


ANY_WIDTH = -1  # a row width the config does not fix (checked for consistency and MAX_JOINTS instead)
MAX_JOINTS = 64


def _actions(c: PolicyConfig) -> tuple[int, ...]:
    return (c.action_dim,)


def _joints(c: PolicyConfig) -> tuple[int, ...]:
    """Joint positions, one value per commanded joint: the policy's state input when it reads one, else as many
    as a joint-delta policy has actions; a pixels-only end-effector policy does not fix the arm's joint count."""
    if c.state_dim:
        return (c.state_dim,)
    return (c.action_dim,) if c.action_space == "joint_delta" else (ANY_WIDTH,)


# One row per transition. A new per-step Transition attribute is one line here (`flags` packs the booleans).
STEP_FIELDS: dict[str, Field] = {
    "frames": Field(torch.uint8, _frames),
    "state": Field(torch.float32, _joints),
    "action": Field(torch.float32, _actions),
    "reward": Field(torch.float32, lambda c: ()),
    "flags": Field(torch.uint8, lambda c: (len(FLAGS),)),
    "episode": Field(torch.int64, lambda c: ()),
    "step": Field(torch.int64, lambda c: ()),
    "weights_version": Field(torch.int64, lambda c: ()),  # the weights that chose the action (guarded publishing)
}
# One row per transition that ended its episode, in the order of `final_index`.
FINAL_FIELDS: dict[str, Field] = {
    "final_index": Field(torch.int64, lambda c: ()),
    "final_frames": Field(torch.uint8, _frames),
    "final_state": Field(torch.float32, _joints),
}
FIELDS = {**STEP_FIELDS, **FINAL_FIELDS}


class TransitionsError(ValueError):
    """A transitions payload that must not be stored; the message says why, `kind` names the check."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind


def _column(transitions: list[Transition], name: str) -> np.ndarray:
    rows = [[getattr(t, f) for f in FLAGS] if name == "flags" else getattr(t, name) for t in transitions]
    return np.asarray(rows, dtype=torch.empty((), dtype=STEP_FIELDS[name].dtype).numpy().dtype)


def encode_transitions(transitions: list[Transition], *, actor_id: str, seq: int, config_fingerprint: str) -> bytes:
    if not transitions:
        raise ValueError("a transitions batch needs at least one transition")
    ended = [i for i, t in enumerate(transitions) if t.final_frames is not None]
    first = transitions[0]
    tensors = {name: torch.from_numpy(_column(transitions, name)) for name in STEP_FIELDS}
    tensors |= {
        "final_index": torch.tensor(ended, dtype=torch.int64),
        "final_frames": torch.from_numpy(np.stack([transitions[i].final_frames for i in ended]).astype(np.uint8)
                                         if ended else np.zeros((0, *first.frames.shape), np.uint8)),
        "final_state": torch.from_numpy(np.stack([transitions[i].final_state if transitions[i].final_state is not None
                                                  else transitions[i].state for i in ended]).astype(np.float32)
                                        if ended else np.zeros((0, len(first.state)), np.float32)),
    }
    meta = {"format": FORMAT, "actor_id": actor_id, "seq": str(seq), "count": str(len(transitions)),
            "config_fingerprint": config_fingerprint}
    return encode_batch(tensors, meta)


def encode_batch(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """Tensors + metadata (without digest) -> payload, with the digest over both added."""
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    return safetensors_save(tensors, metadata=meta | {"digest": batch_digest(meta, tensors)})


def batch_digest(meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata (but the digest itself) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\n{name}|{DTYPE_NAMES.get(t.dtype, str(t.dtype))}|{list(t.shape)}\n".encode())
        if t.numel():
            h.update(memoryview(t.contiguous().view(torch.uint8).reshape(-1).numpy()))
    return h.hexdigest()


def payload_id(payload) -> str:
    """Names one exact payload in a rejection, so its sender can tell it was its own copy that was refused."""
    return hashlib.sha256(memoryview(payload).cast("B")).hexdigest()[:32]


def read_transitions(payload) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors viewing the payload) of an intact payload of this format. Raises TransitionsError.

    Intact means: well-formed safetensors, this format, every metadata key, and the digest matches, so the
    stream id and sequence number can be believed. Whether the tensors suit a policy is `validate`'s.
    """
    meta, tensors = read_safetensors(payload, error=TransitionsError)
    if meta.get("format") != FORMAT:
        raise TransitionsError(f"transitions format {meta.get('format')!r} is not {FORMAT!r}; run learner and "
                               "actors from the same hilserl version", kind="format")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise TransitionsError(f"transitions metadata lacks {missing}", kind="format")
    if batch_digest(meta, tensors) != meta["digest"]:
        raise TransitionsError("transitions digest does not match the payload: corrupted in transit or by its "
                               "sender", kind="digest")
    return meta, tensors


def to_transitions(tensors: dict[str, torch.Tensor]) -> list[Transition]:
    """The Transition objects of a batch that passed `validate` (copies, not views of the payload)."""
    arrays = {name: t.numpy() for name, t in tensors.items()}
    finals = {int(i): k for k, i in enumerate(arrays["final_index"])}
    out = []
    for i in range(len(arrays["reward"])):
        values = {name: arrays[name][i] for name in STEP_FIELDS if name != "flags"}
        values = {name: v.copy() if v.ndim else v.item() for name, v in values.items()}
        k = finals.get(i)
        out.append(Transition(**values, **{f: bool(v) for f, v in zip(FLAGS, arrays["flags"][i])},
                              final_frames=None if k is None else arrays["final_frames"][k].copy(),
                              final_state=None if k is None else arrays["final_state"][k].copy()))
    return out


def decode_transitions(payload, config: PolicyConfig | None = None) -> tuple[dict, list[Transition]]:
    """(metadata with int seq/count, transitions) of a payload that passes every check for `config` (or, with
    no config, for the shapes the batch itself declares). Raises TransitionsError on anything malformed."""
    meta, tensors = read_transitions(payload)
    batch = validate(meta, tensors, config)
    return ({"actor_id": batch.stream, "seq": batch.seq, "count": batch.count,
             "config_fingerprint": meta["config_fingerprint"]}, to_transitions(tensors))


# -- what a batch must hold ------------------------------------------------------------------------
MAX_STREAM_CHARS = 200  # an actor's fully qualified node name plus "#<session>"
STREAM_CHARS = re.compile(r"[A-Za-z0-9_/#~-]+")  # a ROS node name, "#", a session
MAX_SEQ = 10**12 - 1  # journal file names hold 12 digits
MAX_BATCH = 4096


@dataclass(frozen=True)
class Batch:
    stream: str
    seq: int
    count: int


def _number(meta: dict[str, str], key: str, limit: int, kind: str) -> int:
    text = meta[key]
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(limit)) and 1 <= int(text) <= limit):
        raise TransitionsError(f"transitions {key} {text[:40]!r} is not an integer within [1, {limit}]", kind=kind)
    return int(text)


def validate(meta: dict[str, str], tensors: dict[str, torch.Tensor], config: PolicyConfig | None,
             stored_joints: int | None = None) -> Batch:
    """Raise TransitionsError unless the batch would be stored exactly as sent by a buffer for `config`.

    Checks the stream id (length, characters), the sequence number and count, the policy config fingerprint,
    every tensor's dtype, rank and shape (frames against image_size and cameras, state and action widths
    against the joints, one row per transition), finite values, actions within [-1, 1], 0/1 flags,
    non-negative episode and step numbers, and final_* rows only for transitions that ended their episode.
    `config=None` checks the batch against the frame size and joint count its own tensors declare.
    `stored_joints`: the joint count the receiver already stores, for a policy whose config does not fix it
    (pixels-only `ee_delta`).
    """
    stream = meta["actor_id"]
    if not 1 <= len(stream) <= MAX_STREAM_CHARS or not STREAM_CHARS.fullmatch(stream):
        raise TransitionsError(f"stream id {stream[:60]!r}{'...' if len(stream) > 60 else ''} must be 1 to "
                               f"{MAX_STREAM_CHARS} characters from [A-Za-z0-9_/#~-]", kind="stream_id")
    batch = Batch(stream, _number(meta, "seq", MAX_SEQ, "sequence"), _number(meta, "count", MAX_BATCH, "count"))
    if config is not None and meta["config_fingerprint"] != config.fingerprint():
        raise TransitionsError(f"recorded with policy config {meta['config_fingerprint'][:16]!r}, the learner trains "
                               f"{config.fingerprint()!r}: run the actor with the learner's weights", kind="config")
    missing, unexpected = sorted(set(FIELDS) - set(tensors)), sorted(set(tensors) - set(FIELDS))
    if missing or unexpected:
        raise TransitionsError(f"transitions tensors: missing {missing}, unexpected {unexpected}", kind="fields")
    wrong = {n: str(tensors[n].dtype) for n, f in FIELDS.items() if tensors[n].dtype != f.dtype}
    if wrong:
        raise TransitionsError(f"transitions tensors have wrong dtypes {wrong}", kind="dtype")
    config = config or _declared_config(tensors)
    joints = tensors["state"].shape[-1] if tensors["state"].dim() == 2 else 0  # fills an ANY_WIDTH
    if not 1 <= joints <= MAX_JOINTS:
        raise TransitionsError(f"transitions state has shape {list(tensors['state'].shape)}: one row of 1 to "
                               f"{MAX_JOINTS} joint positions per transition", kind="shape")
    if stored_joints is not None and ANY_WIDTH in FIELDS["state"].row_shape(config) and joints != stored_joints:
        raise TransitionsError(f"transitions state has {joints} joint positions per row, the learner's buffers "
                               f"hold {stored_joints} (the arm of its first transitions): one learner trains one arm",
                               kind="shape")
    for name, f in FIELDS.items():
        rows = batch.count if name in STEP_FIELDS else tensors["final_index"].shape[0]
        expected = (rows, *(joints if width == ANY_WIDTH else width for width in f.row_shape(config)))
        if tuple(tensors[name].shape) != expected:
            raise TransitionsError(f"transitions {name} has shape {list(tensors[name].shape)}, the policy needs "
                                   f"{list(expected)}", kind="shape")
    for name in ("state", "action", "reward", "final_state"):
        if not torch.isfinite(tensors[name]).all():
            raise TransitionsError(f"transitions {name} holds NaN or infinite values", kind="nonfinite")
    if tensors["action"].abs().max() > 1.0:
        raise TransitionsError("transitions action outside [-1, 1]", kind="range")
    if tensors["flags"].max() > 1 or min(int(tensors[n].min()) for n in ("episode", "step", "weights_version")) < 0:
        raise TransitionsError("transitions flags must be 0/1, episode, step and weights_version numbers >= 0",
                               kind="range")
    ended = (tensors["flags"][:, 0] | tensors["flags"][:, 1]).bool()
    index = tensors["final_index"]
    if len(index) and not (bool((index[1:] > index[:-1]).all()) and 0 <= int(index[0]) and int(index[-1]) < batch.count
                           and bool(ended[index].all())):
        raise TransitionsError("transitions final_index must name distinct transitions that ended their episode, "
                               "in order", kind="final")
    return batch


def _declared_config(tensors: dict[str, torch.Tensor]) -> PolicyConfig:
    """The frame size and joint count a batch declares itself, as a config to check its tensors against."""
    frames, action, state = tensors["frames"].shape, tensors["action"].shape, tensors["state"].shape
    try:
        if len(frames) != 4 or len(action) != 2 or len(state) != 2 or frames[1] % 3 or frames[2] != frames[3]:
            raise ValueError(f"frames {list(frames)}, action {list(action)}, state {list(state)}")
        return PolicyConfig(image_size=frames[2], num_cameras=frames[1] // 3, action_dim=action[1], state_dim=state[1])
    except ValueError as err:
        raise TransitionsError(f"transitions frames must be [N, 3*cameras, P, P], action [N, A], state [N, S]: {err}",
                               kind="shape") from err


def ack_message(actor_id: str, stored_through: int, **rejection: object) -> str:
    """The ack JSON: {"actor_id", "stored_through"}, plus {"rejected", "reason", "kind", "payload"} when refused."""
    return json.dumps({"actor_id": actor_id, "stored_through": stored_through} | rejection)
