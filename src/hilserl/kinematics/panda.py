"""The Panda's end-effector set-up with the project's defaults (hilserl.robot): what the sim, the scripted
expert, `pretrain` and `infer --sim` use, and what the actor's parameters default to.

Its URDF is the one the sim's robot description comes from (Genesis's panda_bullet URDF); Pinocchio reads
only the kinematic tree, so the mesh paths need no rewriting here.
"""

from __future__ import annotations

from pathlib import Path

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.arm import ArmKinematics
from hilserl.kinematics.ee_control import EeController
from hilserl.kinematics.workspace import Workspace
from hilserl.nodes.robot_description import genesis_urdf_path
from hilserl.robot import (ACTION_SCALE, FINGER_INDEX, JOINT_LOWER, JOINT_UPPER, JOINTS, ORIENTATION_LOWER,
                           ORIENTATION_REFERENCE, ORIENTATION_UPPER, TCP_FRAME, TCP_OFFSET, WORKSPACE_LOWER,
                           WORKSPACE_UPPER)


def panda_arm(urdf_path: str | Path | None = None) -> ArmKinematics:
    path = Path(urdf_path) if urdf_path else genesis_urdf_path()
    return ArmKinematics.from_file(path, joints=JOINTS, tcp_frame=TCP_FRAME, tcp_offset=(0.0, 0.0, TCP_OFFSET),
                                   joint_lower=JOINT_LOWER, joint_upper=JOINT_UPPER)


def panda_workspace() -> Workspace:
    return Workspace(WORKSPACE_LOWER, WORKSPACE_UPPER, ORIENTATION_REFERENCE, ORIENTATION_LOWER, ORIENTATION_UPPER)


def panda_controller(space: EeActionSpace, arm: ArmKinematics | None = None) -> EeController:
    """An EeController for the Panda; the gripper value moves the finger like a joint-delta action does."""
    arm = arm or panda_arm()
    return EeController(arm, panda_workspace(), space, gripper_scale=ACTION_SCALE[FINGER_INDEX])
