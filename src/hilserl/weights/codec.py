"""The weights message: safetensors bytes holding a whole inference state plus its metadata.

Encoding uses the safetensors library. Decoding is our own strict reader of the same format, so that
  * tensors are views into the received buffer (no copy of 12 MB on the actor's path), and
  * every way a payload can be wrong (truncated, corrupted, pickled, lying about its shapes or its
    digest) ends in one `WeightsError` that says what was wrong, never in a half-read state.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from safetensors.torch import save as safetensors_save

from hilserl.policies.config import PolicyConfig

FORMAT = "hilserl-weights/1"
MAX_HEADER_BYTES = 16 << 20

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
METADATA_KEYS = ("format", "policy", "config", "config_fingerprint", "weights_version", "learner_step",
                 "run_id", "digest")


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

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": self.format, "policy": self.policy, "config": self.config.to_json(),
            "config_fingerprint": self.config_fingerprint, "weights_version": str(self.weights_version),
            "learner_step": str(self.learner_step), "run_id": self.run_id, "digest": self.digest,
        }


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    t = tensor.detach().cpu().contiguous()
    return memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else memoryview(b"")


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 tree digest over names, dtypes, shapes and bytes, in name order: equal digests, equal weights.

    Each tensor's bytes are hashed in fixed 1 MiB chunks on a thread pool (hashlib releases the GIL), and
    the chunk hashes are hashed together with the tensor descriptions. The chunk size is part of the
    format, so the digest is the same on every machine whatever its core count.
    """
    parts: list[bytes | memoryview] = []
    chunk_slots: list[int] = []
    for name in sorted(tensors):
        t = tensors[name]
        parts.append(f"{name}|{DTYPE_NAMES.get(t.dtype, str(t.dtype))}|{tuple(t.shape)}\n".encode())
        data = tensor_bytes(t)
        for start in range(0, len(data), DIGEST_CHUNK):
            chunk_slots.append(len(parts))
            parts.append(data[start:start + DIGEST_CHUNK])
    for slot, digest in zip(chunk_slots, _hash_pool().map(_sha256, [parts[i] for i in chunk_slots])):
        parts[slot] = digest
    return hashlib.sha256(b"".join(parts)).hexdigest()


DIGEST_CHUNK = 1 << 20


def _sha256(data: memoryview) -> bytes:
    return hashlib.sha256(data).digest()


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="digest")


def encode_weights(tensors: Mapping[str, torch.Tensor], *, config: PolicyConfig, weights_version: int,
                   learner_step: int, run_id: str) -> tuple[bytes, WeightsMeta]:
    if weights_version < 1:
        raise ValueError(f"weights_version must be >= 1, got {weights_version}")
    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    meta = WeightsMeta(policy=config.policy, config=config, config_fingerprint=config.fingerprint(),
                       weights_version=weights_version, learner_step=learner_step, run_id=run_id,
                       digest=tensor_digest(plain))
    return safetensors_save(plain, metadata=meta.to_metadata()), meta


def _looks_pickled(head: bytes) -> bool:
    # Pickle protocol 2-5 opcode, or the zip archive torch.save writes.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


def read_safetensors(payload: bytes | bytearray | memoryview) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Parse safetensors bytes into (metadata, tensors viewing the payload). Raises WeightsError."""
    buf = memoryview(payload).cast("B")
    if buf.readonly:  # torch.frombuffer needs a writable buffer; one copy, on the non-ROS paths only
        buf = memoryview(bytearray(buf))
    total = len(buf)
    # A safetensors header is JSON from byte 8 on; without that check, a header 0x280-0x5ff bytes long whose
    # length's low byte is 0x80 would read as a pickle opcode.
    if _looks_pickled(bytes(buf[:4])) and not (total > 8 and buf[8] == ord("{")):
        raise WeightsError("payload is a pickle / torch.save archive; hilserl accepts only safetensors "
                           "weights (no pickle). Publish with hilserl's learner or encode_weights().")
    if total < 8:
        raise WeightsError(f"payload is {total} bytes, shorter than the 8-byte safetensors header length; "
                           "it was truncated or is not a weights message")
    (header_len,) = struct.unpack("<Q", buf[:8])
    if header_len > min(total - 8, MAX_HEADER_BYTES):
        raise WeightsError(f"safetensors header claims {header_len} bytes but the payload holds {total - 8} after "
                           "the length field: truncated or corrupted payload")
    try:
        header = json.loads(bytes(buf[8:8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"safetensors header is not valid UTF-8 JSON ({err}): corrupted payload") from err
    if not isinstance(header, dict):
        raise WeightsError("safetensors header is not a JSON object: corrupted payload")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError("safetensors __metadata__ must map strings to strings")

    data_start = 8 + header_len
    data_len = total - data_start
    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"tensor {name!r}: header entry must have exactly dtype, shape, data_offsets")
        dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise WeightsError(f"tensor {name!r}: unsupported dtype {entry['dtype']!r}; allowed {sorted(DTYPES)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
            raise WeightsError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise WeightsError(f"tensor {name!r}: data_offsets {offsets!r} fall outside the {data_len} data bytes "
                               "(truncated or corrupted payload)")
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offsets[1] - offsets[0] != numel * itemsize:
            raise WeightsError(f"tensor {name!r}: shape {shape} of {entry['dtype']} needs {numel * itemsize} bytes, "
                               f"the header gives {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            flat = torch.frombuffer(buf, dtype=dtype, count=numel, offset=data_start + offsets[0])
            tensors[name] = flat.view(shape)
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise WeightsError(f"tensor {name!r}: data overlaps another tensor or leaves a gap at byte {cursor}")
        cursor = end
    if cursor != data_len:
        raise WeightsError(f"payload has {data_len - cursor} bytes after the last tensor: corrupted payload")
    return metadata, tensors


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
    except (ValueError, TypeError) as err:
        raise WeightsError(f"weights metadata is malformed: {err}") from err
    if version < 1 or step < 0:
        raise WeightsError(f"weights_version must be >= 1 and learner_step >= 0, got {version} and {step}")
    if config.policy != metadata["policy"]:
        raise WeightsError(f"metadata says policy {metadata['policy']!r} but its config says {config.policy!r}")
    if config.fingerprint() != metadata["config_fingerprint"]:
        raise WeightsError(f"config fingerprint {metadata['config_fingerprint']!r} does not match the config it "
                           f"carries ({config.fingerprint()!r}): corrupted metadata")
    return WeightsMeta(policy=config.policy, config=config, config_fingerprint=metadata["config_fingerprint"],
                       weights_version=version, learner_step=step, run_id=metadata["run_id"],
                       digest=metadata["digest"], format=metadata["format"])


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
