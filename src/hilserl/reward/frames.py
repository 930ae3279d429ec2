"""Camera frames labelled success / not success, on disk: what a reward classifier learns from.

One format for both sources, `python -m hilserl record-frames` (the Genesis task, labelled by the sim's own
success) and the actor's `record_frames_dir` (labelled by a person holding the success button):

  DIR/frames-00000.safetensors, frames-00001.safetensors, ...   shards, each self-describing:
    frames   uint8 [n, 3*cams, S, S]   the newest frame of each camera, as the policy sees it (RGB, channels
                                       first, cameras concatenated in the policy's camera order, S = image size)
    success  uint8 [n]                 1 = the frame shows success, 0 = it does not
    episode  int64 [n]                 episode id, unique within DIR (held-out splits are made by episode)
    step     int64 [n]                 the frame's index within its episode
    metadata {"format": "hilserl-frames/1", "image_size": "S", "num_cameras": "cams", "source": "..."}

Shards are written whole and renamed into place (fsync'd), so a crash loses at most the frames not yet
flushed, never a shard. A writer opened on a folder that has shards appends: new episode ids start after the
largest there, and its frames must have the same size and camera count.

    writer = FrameWriter(DIR, source="sim lift")
    writer.add(frames, success=True)    # frames: uint8 [3*cams, S, S]
    writer.end_episode()                # flushes; the next frames belong to a new episode
    writer.close()
    data = read_frames(DIR)             # FrameSet: frames, success (bool), episode, step, in write order
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from hilserl.durable import write_durably
from hilserl.safetensors_io import read_safetensors

FRAMES_FORMAT = "hilserl-frames/1"
SHARD_FRAMES = 512  # frames per shard: 3.6 MB at 84 px, one camera
SHARD_PATTERN = re.compile(r"^frames-(\d{5,})\.safetensors$")


class FramesError(ValueError):
    """Frames or a frames folder that cannot be used; the message says why."""


@dataclass
class FrameSet:
    frames: np.ndarray  # uint8 [N, 3*cams, S, S]
    success: np.ndarray  # bool [N]
    episode: np.ndarray  # int64 [N]
    step: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> int:
        return int(self.frames.shape[-1])

    @property
    def num_cameras(self) -> int:
        return int(self.frames.shape[1]) // 3

    def select(self, rows: np.ndarray) -> FrameSet:
        return FrameSet(self.frames[rows], self.success[rows], self.episode[rows], self.step[rows])

    def digest(self) -> str:
        """A digest of these frames, labels, episode ids and steps: the same rows read from any path (or from a
        folder that has had episodes appended since) give the same one."""
        h = hashlib.sha256()
        for array in (self.frames, self.success, self.episode, self.step):
            h.update(str(array.shape).encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:32]


def shard_paths(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if SHARD_PATTERN.match(p.name)), key=lambda p: p.name) \
        if folder.is_dir() else []


def check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 3 \
            or frames.shape[0] % 3 or frames.shape[0] == 0 or frames.shape[1] != frames.shape[2]:
        shape = getattr(frames, "shape", None)
        raise FramesError(f"a frame is uint8 [3*cameras, S, S], got {getattr(frames, 'dtype', type(frames))} {shape}")


def read_shard(path: Path) -> FrameSet:
    try:
        metadata, tensors = read_safetensors(path.read_bytes(), FramesError)
    except OSError as err:
        raise FramesError(f"cannot read {path}: {err}") from err
    if metadata.get("format") != FRAMES_FORMAT:
        raise FramesError(f"{path} is not a frames shard (format {metadata.get('format')!r}, expected {FRAMES_FORMAT!r})")
    expected = {"frames": (4, "uint8"), "success": (1, "uint8"), "episode": (1, "int64"), "step": (1, "int64")}
    arrays = {}
    for name, (rank, dtype) in expected.items():
        tensor = tensors.get(name)
        if tensor is None or tensor.dim() != rank or str(tensor.dtype) != f"torch.{dtype}":
            raise FramesError(f"{path}: '{name}' must be {dtype} of rank {rank}, got "
                              f"{None if tensor is None else (tensor.dtype, tuple(tensor.shape))}")
        arrays[name] = tensor.numpy().copy()
    n = len(arrays["frames"])
    if any(len(a) != n for a in arrays.values()) or arrays["success"].max(initial=0) > 1:
        raise FramesError(f"{path}: frames, success, episode and step must have one row per frame, success 0 or 1")
    frames = arrays["frames"]
    if frames.shape[1] % 3 or frames.shape[2] != frames.shape[3] \
            or str(frames.shape[-1]) != metadata.get("image_size") or str(frames.shape[1] // 3) != metadata.get("num_cameras"):
        raise FramesError(f"{path}: frames of shape {frames.shape[1:]} do not match the shard's metadata {metadata}")
    return FrameSet(frames, arrays["success"].astype(bool), arrays["episode"], arrays["step"])


def read_frames(folder: str | Path) -> FrameSet:
    """Every shard of `folder`, in write order. FramesError when there are none or they disagree in shape."""
    folder = Path(folder)
    paths = shard_paths(folder)
    if not paths:
        raise FramesError(f"no frame shards (frames-NNNNN.safetensors) in {folder}; record some with "
                          "`python -m hilserl record-frames` or the actor's record_frames_dir")
    shards = [read_shard(p) for p in paths]
    shapes = {s.frames.shape[1:] for s in shards}
    if len(shapes) > 1:
        raise FramesError(f"{folder}: shards hold frames of different shapes {sorted(shapes)}")
    return FrameSet(*(np.concatenate([getattr(s, name) for s in shards])
                      for name in ("frames", "success", "episode", "step")))


class FrameWriter:
    def __init__(self, folder: str | Path, source: str = "", shard_frames: int = SHARD_FRAMES):
        self.folder, self.source, self.shard_frames = Path(folder), source, shard_frames
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = shard_paths(self.folder)
        self.shape: tuple[int, ...] | None = None  # [3*cams, S, S], from existing shards or the first frame
        self.episode, self.next_shard = 0, 0
        if existing:
            last = read_shard(existing[-1])  # episode ids only grow, so the last shard holds the largest
            self.shape = last.frames.shape[1:]
            self.episode = 1 + int(last.episode.max(initial=-1))
            self.next_shard = 1 + int(SHARD_PATTERN.match(existing[-1].name).group(1))
        self.step = 0
        self.frames_written = 0
        self.buffer: list[tuple[np.ndarray, bool, int, int]] = []

    @property
    def frames_added(self) -> int:
        """Frames added by this writer, written or still buffered."""
        return self.frames_written + len(self.buffer)

    def add(self, frames: np.ndarray, success: bool) -> None:
        """One observation's newest frames (uint8 [3*cams, S, S]) and whether they show success."""
        check_frames(frames)
        if self.shape is None:
            self.shape = frames.shape
        elif frames.shape != self.shape:
            raise FramesError(f"frames of shape {frames.shape} do not fit {self.folder}, which holds {self.shape}")
        self.buffer.append((frames.copy(), bool(success), self.episode, self.step))
        self.step += 1
        if len(self.buffer) >= self.shard_frames:
            self.flush()

    def end_episode(self) -> None:
        """The frames added from here on belong to a new episode; those so far are written."""
        if self.step:
            self.episode, self.step = self.episode + 1, 0
        self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        frames, success, episode, step = zip(*self.buffer)
        tensors = {"frames": np.stack(frames), "success": np.asarray(success, dtype=np.uint8),
                   "episode": np.asarray(episode, dtype=np.int64), "step": np.asarray(step, dtype=np.int64)}
        metadata = {"format": FRAMES_FORMAT, "image_size": str(self.shape[-1]),
                    "num_cameras": str(self.shape[0] // 3), "source": self.source}
        write_durably(self.folder / f"frames-{self.next_shard:05d}.safetensors", save(tensors, metadata=metadata))
        self.next_shard += 1
        self.frames_written += len(self.buffer)
        self.buffer = []

    def close(self) -> None:
        self.flush()
