"""The safetensors format: a strict reader shared by the weights and the transitions messages, and a writer.

Reading is our own, so that
  * tensors are views into the received buffer (no copy of a 12 MB weights message on the actor's path), and
  * every way a payload can be wrong (truncated, corrupted, pickled, lying about its shapes) ends in one
    exception of the caller's type that says what was wrong, never in a half-read state.
Writing a weights message uses `write_safetensors`: the tensors' bytes go straight into the message in one
copy (the library's writer takes two, and its output is read back by ours and by the library alike). Files
and transitions are written with the library.
"""

from __future__ import annotations

import json
import struct

import torch

MAX_HEADER_BYTES = 16 << 20

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
    """Bytes that are not a well-formed safetensors payload."""


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes, viewed in place when it is a contiguous CPU tensor."""
    t = tensor.detach().cpu().contiguous()
    return memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else memoryview(b"")


def write_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of CPU, contiguous `tensors` plus string `metadata`, in one copy of their data.

    As the library lays them out: the header padded with spaces to 8 bytes, tensors by falling element size
    then name, so every tensor starts at a multiple of its element size and readers may view it in place.
    """
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    parts: list[bytes | memoryview] = []
    offset = 0
    for name in order:
        t = tensors[name]
        if t.device.type != "cpu" or not t.is_contiguous() or t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: write_safetensors takes contiguous CPU tensors of "
                             f"{sorted(DTYPES)}, got {t.dtype} on {t.device}")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        if size:
            parts.append(tensor_bytes(t))
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return b"".join([struct.pack("<Q", len(head)), head, *parts])


def looks_pickled(head: bytes) -> bool:
    """The zip archive torch.save writes, or a pickle protocol 2-5 opcode that is not a safetensors header length.

    `head` = the first 9 bytes. A safetensors header of 640, 896, 1152 or 1408 bytes begins with the same two
    bytes as a pickle (0x80, 2..5); its JSON header starts at byte 8, which tells them apart.
    """
    pickled = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[8:9] != b"{"
    return pickled or head[:4] == b"PK\x03\x04"


def read_safetensors(payload: bytes | bytearray | memoryview, error: type[Exception] = SafetensorsError
                     ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Parse safetensors bytes into (metadata, tensors viewing the payload). Raises `error(reason)`."""
    buf = memoryview(payload).cast("B")
    if buf.readonly:  # torch.frombuffer needs a writable buffer; one copy, on the non-ROS paths only
        buf = memoryview(bytearray(buf))
    total = len(buf)
    if looks_pickled(bytes(buf[:9])):
        raise error("payload is a pickle / torch.save archive; hilserl accepts only safetensors payloads "
                    "(no pickle). Publish with hilserl's learner or actor, or its encode functions.")
    if total < 8:
        raise error(f"payload is {total} bytes, shorter than the 8-byte safetensors header length; "
                    "it was truncated or is not a hilserl message")
    (header_len,) = struct.unpack("<Q", buf[:8])
    if header_len > min(total - 8, MAX_HEADER_BYTES):
        raise error(f"safetensors header claims {header_len} bytes but the payload holds {total - 8} after "
                    "the length field: truncated or corrupted payload")
    try:
        header = json.loads(bytes(buf[8:8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise error(f"safetensors header is not valid UTF-8 JSON ({err}): corrupted payload") from err
    if not isinstance(header, dict):
        raise error("safetensors header is not a JSON object: corrupted payload")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise error("safetensors __metadata__ must map strings to strings")

    data_start = 8 + header_len
    data_len = total - data_start
    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise error(f"tensor {name!r}: header entry must have exactly dtype, shape, data_offsets")
        dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise error(f"tensor {name!r}: unsupported dtype {entry['dtype']!r}; allowed {sorted(DTYPES)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
            raise error(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise error(f"tensor {name!r}: data_offsets {offsets!r} fall outside the {data_len} data bytes "
                        "(truncated or corrupted payload)")
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offsets[1] - offsets[0] != numel * itemsize:
            raise error(f"tensor {name!r}: shape {shape} of {entry['dtype']} needs {numel * itemsize} bytes, "
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
            raise error(f"tensor {name!r}: data overlaps another tensor or leaves a gap at byte {cursor}")
        cursor = end
    if cursor != data_len:
        raise error(f"payload has {data_len - cursor} bytes after the last tensor: corrupted payload")
    return metadata, tensors
