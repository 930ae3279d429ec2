"""The arm as the ROS side sees it: joint names in command order, limits and the home pose.

Defaults are the Franka Panda's (7 arm joints + one gripper finger command); a real deployment
overrides them with the `joints`, `joint_lower` and `joint_upper` parameters.
"""

from __future__ import annotations

import math

import numpy as np

from hilserl.names import (CAMERA_INFO_TOPIC, CAMERA_TOPIC, COMMAND_TOPIC, JOINT_STATES_TOPIC,  # noqa: F401
                           PANDA_JOINTS, WEIGHTS_TOPIC)

JOINTS: tuple[str, ...] = PANDA_JOINTS
JOINT_LOWER: tuple[float, ...] = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973, 0.0)
JOINT_UPPER: tuple[float, ...] = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973, 0.04)
HOME: tuple[float, ...] = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785, 0.04)
FINGER_OPEN, FINGER_CLOSED = 0.04, 0.0  # m, panda_finger_joint1
FINGER_INDEX = JOINTS.index("panda_finger_joint1")  # the finger opening among joint positions, targets, actions
# Per-step position change at action = +-1: ~3 degrees per arm joint, 5 mm of finger travel.
ACTION_SCALE: tuple[float, ...] = (0.05,) * 7 + (0.005,)
# End-effector actions (hilserl.kinematics). The TCP is the centre between the fingertips, TCP_OFFSET along the
# hand's z from panda_hand (the sim's `ee_position`); the URDF's panda_grasptarget sits 1.6 mm further out.
TCP_FRAME = "panda_hand"
TCP_OFFSET = 0.1034  # m
# The TCP's box in the base frame (panda_link0): the table area the tasks use, from just above the floor.
WORKSPACE_LOWER: tuple[float, ...] = (0.25, -0.40, 0.01)
WORKSPACE_UPPER: tuple[float, ...] = (0.80, 0.40, 0.60)
# Orientation limits: roll, pitch, yaw (about the base axes) away from fingers-down (roll pi), in rad.
ORIENTATION_REFERENCE: tuple[float, ...] = (math.pi, 0.0, 0.0)
ORIENTATION_LOWER: tuple[float, ...] = (-0.5, -0.5, -1.7)
ORIENTATION_UPPER: tuple[float, ...] = (0.5, 0.5, 1.7)

# The topic names above are imported from hilserl.names (re-exported here for older callers).


def action_to_targets(q: np.ndarray, action: np.ndarray, scale=ACTION_SCALE, lower=JOINT_LOWER,
                      upper=JOINT_UPPER) -> np.ndarray:
    """Joint position targets for a forward position controller: clip(q + action * scale, lower, upper)."""
    q, action = np.asarray(q, dtype=np.float64), np.asarray(action, dtype=np.float64)
    if q.shape != action.shape:
        raise ValueError(f"{action.shape[0]} actions for {q.shape[0]} joints: the policy's action_dim must match `joints`")
    return np.clip(q + action * np.asarray(scale, dtype=np.float64), lower, upper)
