"""The arm as the ROS side sees it: joint names in command order, limits and the home pose.

Defaults are the Franka Panda's (7 arm joints + one gripper finger command); a real deployment
overrides them with the `joints`, `joint_lower` and `joint_upper` parameters.
"""

from __future__ import annotations

from hilserl.policies.config import PANDA_JOINTS

JOINTS: tuple[str, ...] = PANDA_JOINTS
JOINT_LOWER: tuple[float, ...] = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973, 0.0)
JOINT_UPPER: tuple[float, ...] = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973, 0.04)
HOME: tuple[float, ...] = (0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785, 0.04)
# Per-step position change at action = +-1: ~3 degrees per arm joint, 5 mm of finger travel.
ACTION_SCALE: tuple[float, ...] = (0.05,) * 7 + (0.005,)

# Topic names shared by nodes, tools and tests. They are a contract; extend, don't rename.
WEIGHTS_TOPIC = "/policy_weights"
COMMAND_TOPIC = "/forward_position_controller/commands"
JOINT_STATES_TOPIC = "/joint_states"
CAMERA_TOPIC = "camera/image_raw"
CAMERA_INFO_TOPIC = "camera/camera_info"
