"""The region the TCP may be commanded into: a box in the base frame plus orientation limits.

Orientation limits are roll/pitch/yaw bounds on the rotation D that takes `orientation_reference` to the
TCP's orientation, about the base frame's axes: R = D R_ref with D = Rz(yaw) Ry(pitch) Rx(roll). Measured
from a reference (for the Panda: fingers pointing down), the angles stay far from the +-pi wrap that
absolute roll/pitch/yaw of a downward gripper would sit on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pinocchio as pin


def _triple(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (3,) or not np.isfinite(array).all():
        raise ValueError(f"{name} must be 3 finite numbers, got {values}")
    return array


class Workspace:
    def __init__(self, lower: Sequence[float], upper: Sequence[float],
                 orientation_reference: Sequence[float] = (math.pi, 0.0, 0.0),
                 orientation_lower: Sequence[float] = (-math.pi, -math.pi / 2, -math.pi),
                 orientation_upper: Sequence[float] = (math.pi, math.pi / 2, math.pi)):
        """`lower`/`upper`: m, xyz of the TCP in the base frame. `orientation_reference`: roll, pitch, yaw of R_ref
        in the base frame. `orientation_lower`/`orientation_upper`: rad, roll, pitch, yaw of D (module doc)."""
        self.lower, self.upper = _triple(lower, "workspace_lower"), _triple(upper, "workspace_upper")
        if (self.lower >= self.upper).any():
            raise ValueError(f"workspace_lower {self.lower.tolist()} must be below workspace_upper "
                             f"{self.upper.tolist()} on every axis")
        self.orientation_lower = _triple(orientation_lower, "orientation_lower")
        self.orientation_upper = _triple(orientation_upper, "orientation_upper")
        if (self.orientation_lower > self.orientation_upper).any():
            raise ValueError(f"orientation_lower {self.orientation_lower.tolist()} must not exceed "
                             f"orientation_upper {self.orientation_upper.tolist()}")
        self.reference = pin.rpy.rpyToMatrix(*_triple(orientation_reference, "orientation_reference"))

    def clip_position(self, position: np.ndarray) -> np.ndarray:
        return np.clip(position, self.lower, self.upper)

    def clip_rotation(self, rotation: np.ndarray) -> np.ndarray:
        deviation = pin.rpy.matrixToRpy(rotation @ self.reference.T)
        clipped = np.clip(deviation, self.orientation_lower, self.orientation_upper)
        if np.array_equal(clipped, deviation):
            return rotation
        return pin.rpy.rpyToMatrix(*clipped) @ self.reference

    def clip(self, pose: pin.SE3) -> pin.SE3:
        """The pose with its position in the box and its orientation within the limits."""
        return pin.SE3(self.clip_rotation(pose.rotation), self.clip_position(pose.translation))

    def contains(self, pose: pin.SE3, tolerance: float = 1e-9) -> bool:
        clipped = self.clip(pose)
        return bool(np.abs(clipped.translation - pose.translation).max() <= tolerance
                    and np.abs(clipped.rotation - pose.rotation).max() <= tolerance)
