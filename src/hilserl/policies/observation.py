"""Turning camera frames and joint positions into policy inputs, the same way everywhere.

The actor node, `infer --image`, the Genesis task, pretraining and the learner all call these, so a
checkpoint sees identical inputs in simulation, on the robot and in the reference computation.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image

from hilserl.policies.config import PolicyConfig


def preprocess_frame(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xPxP uint8 (bilinear resize only when the size differs)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got shape {rgb.shape} dtype {rgb.dtype}")
    if rgb.shape[0] != image_size or rgb.shape[1] != image_size:
        rgb = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


class FrameStacker:
    """Keeps the last `frame_stack` frames of each camera; on the first frame of an episode the stack is
    filled with copies of it (as DrQ-v2 does at reset)."""

    def __init__(self, config: PolicyConfig):
        self.config = config
        self.frames: deque[np.ndarray] = deque(maxlen=config.frame_stack)

    def reset(self) -> None:
        self.frames.clear()

    def push(self, camera_frames: list[np.ndarray]) -> np.ndarray:
        """One RGB frame per camera in, the stacked uint8 [3*F*cams, P, P] observation out."""
        if len(camera_frames) != self.config.num_cameras:
            raise ValueError(f"policy expects {self.config.num_cameras} camera(s), got {len(camera_frames)}")
        frame = np.concatenate([preprocess_frame(f, self.config.image_size) for f in camera_frames], axis=0)
        if not self.frames:
            self.frames.extend([frame] * self.config.frame_stack)
        else:
            self.frames.append(frame)
        return np.concatenate(list(self.frames), axis=0)


def first_observation(config: PolicyConfig, camera_frames: list[np.ndarray]) -> np.ndarray:
    """The stacked observation an actor builds from the first frame(s) of an episode."""
    return FrameStacker(config).push(camera_frames)


def joint_state_vector(config: PolicyConfig, joint_positions: np.ndarray | None) -> np.ndarray | None:
    """The proprioceptive input: joint positions in `joints` order, or None for a pixels-only policy."""
    if config.state_dim == 0:
        return None
    if joint_positions is None or len(joint_positions) != config.state_dim:
        got = None if joint_positions is None else len(joint_positions)
        raise ValueError(f"policy reads {config.state_dim} joint positions, got {got}")
    return np.asarray(joint_positions, dtype=np.float32)
