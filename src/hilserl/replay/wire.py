"""A batch of transitions on the wire: safetensors bytes (no pickle), with actor id and sequence number.

Tensors: frames [N, C, P, P] uint8, state [N, S] f32, action [N, A] f32, reward [N] f32, flags [N, 4] uint8
(terminated, truncated, intervention, success), episode [N] i64, step [N] i64, weights_version [N] i64 (the
weights that chose each action; optional on reading, 0 when absent), and for transitions that
ended an episode final_index [M] i64 + final_frames [M, C, P, P] uint8 + final_state [M, S] f32.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save as safetensors_save

from hilserl.control.episode import Transition
from hilserl.weights.codec import WeightsError, read_safetensors

FORMAT = "hilserl-transitions/1"
FIELDS = ("frames", "state", "action", "reward", "flags", "episode", "step")


class TransitionsError(ValueError):
    """A transitions payload that must not be stored; the message says why."""


def encode_transitions(transitions: list[Transition], *, actor_id: str, seq: int, config_fingerprint: str) -> bytes:
    if not transitions:
        raise ValueError("a transitions batch needs at least one transition")
    ended = [i for i, t in enumerate(transitions) if t.final_frames is not None]
    tensors = {
        "frames": torch.from_numpy(np.stack([t.frames for t in transitions]).astype(np.uint8)),
        "state": torch.from_numpy(np.stack([t.state for t in transitions]).astype(np.float32)),
        "action": torch.from_numpy(np.stack([t.action for t in transitions]).astype(np.float32)),
        "reward": torch.tensor([t.reward for t in transitions], dtype=torch.float32),
        "flags": torch.tensor([[t.terminated, t.truncated, t.intervention, t.success] for t in transitions],
                              dtype=torch.uint8),
        "episode": torch.tensor([t.episode for t in transitions], dtype=torch.int64),
        "step": torch.tensor([t.step for t in transitions], dtype=torch.int64),
        "weights_version": torch.tensor([t.weights_version for t in transitions], dtype=torch.int64),
        "final_index": torch.tensor(ended, dtype=torch.int64),
        "final_frames": torch.from_numpy(np.stack([transitions[i].final_frames for i in ended]).astype(np.uint8)
                                         if ended else np.zeros((0, *transitions[0].frames.shape), np.uint8)),
        "final_state": torch.from_numpy(np.stack([transitions[i].final_state if transitions[i].final_state is not None
                                                  else transitions[i].state for i in ended]).astype(np.float32)
                                        if ended else np.zeros((0, len(transitions[0].state)), np.float32)),
    }
    meta = {"format": FORMAT, "actor_id": actor_id, "seq": str(seq), "count": str(len(transitions)),
            "config_fingerprint": config_fingerprint}
    return safetensors_save(tensors, metadata=meta)


def decode_transitions(payload) -> tuple[dict, list[Transition]]:
    """(metadata with int seq/count, transitions). Raises TransitionsError on anything malformed."""
    try:
        meta, t = read_safetensors(payload)
    except WeightsError as err:
        raise TransitionsError(str(err)) from err
    if meta.get("format") != FORMAT:
        raise TransitionsError(f"transitions format {meta.get('format')!r} is not {FORMAT!r}")
    try:
        seq, count = int(meta["seq"]), int(meta["count"])
        actor_id = meta["actor_id"]
    except (KeyError, ValueError) as err:
        raise TransitionsError(f"transitions metadata is malformed: {err}") from err
    missing = [f for f in FIELDS + ("final_index", "final_frames", "final_state") if f not in t]
    if missing:
        raise TransitionsError(f"transitions payload lacks {missing}")
    if any(t[f].shape[0] != count for f in FIELDS) or count < 1:
        raise TransitionsError(f"transitions fields disagree with count {count}: "
                               f"{ {f: tuple(t[f].shape) for f in FIELDS} }")
    ended = t["final_index"].tolist()
    if len(ended) != t["final_frames"].shape[0] or len(ended) != t["final_state"].shape[0] \
            or any(not 0 <= i < count for i in ended):
        raise TransitionsError("transitions final_index/final_frames/final_state disagree")
    expected = {"frames": torch.uint8, "state": torch.float32, "action": torch.float32, "reward": torch.float32,
                "flags": torch.uint8, "episode": torch.int64, "step": torch.int64}
    wrong = {f: str(t[f].dtype) for f, d in expected.items() if t[f].dtype != d}
    if wrong or t["flags"].ndim != 2 or t["flags"].shape[1] != 4 or t["frames"].ndim != 4:
        raise TransitionsError(f"transitions tensors have wrong dtypes or shapes: {wrong or 'flags/frames'}")
    versions = t.get("weights_version", torch.zeros(count, dtype=torch.int64))
    if versions.dtype != torch.int64 or tuple(versions.shape) != (count,):
        raise TransitionsError(f"transitions weights_version must be int64 [{count}], got {versions.dtype} "
                               f"{tuple(versions.shape)}")
    finals = {i: k for k, i in enumerate(ended)}
    out = []
    for i in range(count):
        terminated, truncated, intervention, success = (bool(v) for v in t["flags"][i].tolist())
        k = finals.get(i)
        out.append(Transition(episode=int(t["episode"][i]), step=int(t["step"][i]), frames=t["frames"][i].numpy().copy(),
                              state=t["state"][i].numpy().copy(), action=t["action"][i].numpy().copy(),
                              reward=float(t["reward"][i]), terminated=terminated, truncated=truncated,
                              intervention=intervention, success=success,
                              final_frames=None if k is None else t["final_frames"][k].numpy().copy(),
                              final_state=None if k is None else t["final_state"][k].numpy().copy(),
                              weights_version=int(versions[i])))
    return {"actor_id": actor_id, "seq": seq, "count": count, "config_fingerprint": meta.get("config_fingerprint", "")}, out


def ack_message(actor_id: str, stored_through: int) -> str:
    return json.dumps({"actor_id": actor_id, "stored_through": stored_through})
