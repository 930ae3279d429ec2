"""The weights message: safetensors bytes holding a whole inference state plus its metadata.

Encoding writes the tensors' bytes into the message in one copy (`safetensors_io.write_safetensors`).
Decoding is our own strict reader of the same format, so that
  * tensors are views into the received buffer (no copy of 12 MB on the actor's path), and
  * every way a payload can be wrong (truncated, corrupted, pickled, lying about its shapes or its
    digest) ends in one `WeightsError` that says what was wrong, never in a half-read state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import xxhash

from hilserl.policies.config import PolicyConfig
from hilserl.safetensors_io import DTYPE_NAMES, DTYPES, MAX_HEADER_BYTES  # noqa: F401  (part of this module's API)
from hilserl.safetensors_io import read_safetensors as read_strict
from hilserl.safetensors_io import tensor_bytes, write_safetensors

FORMAT = "hilserl-weights/2"  # /2: the tensor digest is XXH3-128 (it was a SHA-256 tree in /1)
METADATA_KEYS = ("format", "policy", "config", "config_fingerprint", "weights_version", "learner_step",
                 "run_id", "digest")
# Optional: present (and > 0) only for a fresh policy, which acts uniformly at random while the learner step
# is below it (DrQ-v2's num_expl_steps). Readers that do not know it ignore it.
EXPLORATION_KEY = "uniform_exploration_steps"


class WeightsError(ValueError):
    """A weights payload or checkpoint that must not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class WeightsMeta:
    policy: str
    config: PolicyConfig
    config_fingerprint: str
    weights_version: int
    learner_step: int
    run_id: str
    digest: str
    format: str = FORMAT
    uniform_exploration_steps: int = 0

    def to_metadata(self) -> dict[str, str]:
        metadata = {
            "format": self.format, "policy": self.policy, "config": self.config.to_json(),
            "config_fingerprint": self.config_fingerprint, "weights_version": str(self.weights_version),
            "learner_step": str(self.learner_step), "run_id": self.run_id, "digest": self.digest,
        }
        if self.uniform_exploration_steps > 0:
            metadata[EXPLORATION_KEY] = str(self.uniform_exploration_steps)
        return metadata


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """XXH3-128 over names, dtypes, shapes and bytes, in name order: equal digests, equal weights.

    What the digest guards against is accident: a payload damaged in transit or by its sender, a module left
    out or loaded wrongly on the actor. A 128-bit hash makes an accidental match impossible in practice. It
    cannot stop someone who may publish on the DDS domain, whatever the hash: such a sender computes the
    digest of whatever it sends (authenticating publishers is DDS Security's job). So the hash is chosen for
    speed: XXH3 reads ~10 GB/s on one core where SHA-256 reads ~1.5 GB/s, and the digest is computed twice
    per weights version (learner and actor), ~16 ms of a 12 MB sync with SHA-256 against ~1 ms.
    """
    h = xxhash.xxh3_128()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{DTYPE_NAMES.get(t.dtype, str(t.dtype))}|{tuple(t.shape)}\n".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def encode_weights(tensors: Mapping[str, torch.Tensor], *, config: PolicyConfig, weights_version: int,
                   learner_step: int, run_id: str, uniform_exploration_steps: int = 0) -> tuple[bytes, WeightsMeta]:
    """The message for `tensors` (on any device: they are copied to the CPU first, so the bytes are the same
    whichever device the learner trains on)."""
    if weights_version < 1:
        raise ValueError(f"weights_version must be >= 1, got {weights_version}")
    if uniform_exploration_steps < 0:
        raise ValueError(f"uniform_exploration_steps must be >= 0, got {uniform_exploration_steps}")
    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    meta = WeightsMeta(policy=config.policy, config=config, config_fingerprint=config.fingerprint(),
                       weights_version=weights_version, learner_step=learner_step, run_id=run_id,
                       digest=tensor_digest(plain), uniform_exploration_steps=uniform_exploration_steps)
    return write_safetensors(plain, meta.to_metadata()), meta


def read_safetensors(payload: bytes | bytearray | memoryview) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Parse safetensors bytes into (metadata, tensors viewing the payload). Raises WeightsError."""
    return read_strict(payload, WeightsError)


def parse_metadata(metadata: Mapping[str, str]) -> WeightsMeta:
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise WeightsError(f"weights metadata lacks {missing}: not a hilserl weights message (format {FORMAT})")
    if metadata["format"] != FORMAT:
        raise WeightsError(f"weights format {metadata['format']!r} is not {FORMAT!r}; run learner and actor "
                           "from the same hilserl version")
    try:
        config = PolicyConfig.from_json(metadata["config"])
        version, step = int(metadata["weights_version"]), int(metadata["learner_step"])
        exploration = int(metadata.get(EXPLORATION_KEY, "0"))
    except (ValueError, TypeError) as err:
        raise WeightsError(f"weights metadata is malformed: {err}") from err
    if version < 1 or step < 0 or exploration < 0:
        raise WeightsError(f"weights_version must be >= 1, learner_step and {EXPLORATION_KEY} >= 0, got {version}, "
                           f"{step} and {exploration}")
    if config.policy != metadata["policy"]:
        raise WeightsError(f"metadata says policy {metadata['policy']!r} but its config says {config.policy!r}")
    if config.fingerprint() != metadata["config_fingerprint"]:
        raise WeightsError(f"config fingerprint {metadata['config_fingerprint']!r} does not match the config it "
                           f"carries ({config.fingerprint()!r}): corrupted metadata")
    return WeightsMeta(policy=config.policy, config=config, config_fingerprint=metadata["config_fingerprint"],
                       weights_version=version, learner_step=step, run_id=metadata["run_id"],
                       digest=metadata["digest"], format=metadata["format"], uniform_exploration_steps=exploration)


def decode_weights(payload: bytes | bytearray | memoryview, *, verify_digest: bool = True
                   ) -> tuple[WeightsMeta, dict[str, torch.Tensor]]:
    """Decode and verify a weights message. The tensors view the payload's memory."""
    metadata, tensors = read_safetensors(payload)
    meta = parse_metadata(metadata)
    if verify_digest:
        actual = tensor_digest(tensors)
        if actual != meta.digest:
            raise WeightsError(f"tensor digest {actual[:16]} does not match the digest sent {meta.digest[:16]}: "
                               "the payload was corrupted in transit or by its sender")
    return meta, tensors
