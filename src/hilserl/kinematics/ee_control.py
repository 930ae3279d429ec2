"""One control step of an `ee_delta` action: measured joints -> clipped TCP target -> joint position targets.

    controller = EeController(arm, workspace, EeActionSpace("xyz", step=0.02), gripper_scale=0.005)
    command = controller.command(q_measured, action)
    command.joint_targets       # `joints` order: the forward position controller's command array
    command.target_position     # the clipped TCP target in the base frame (geometry_msgs/Pose position)
    command.target_quaternion   # its orientation, x y z w (geometry_msgs/Pose orientation)
    command.executed_action     # what the step actually asks for, in the policy's action space: store this

`executed_action` differs from the action given when the workspace box, the orientation limits or the
joint limits cut the motion short. With `solve_ik=False` (arms driven by a Cartesian impedance controller
through `cartesian_pose`) no joint targets are computed and the executed action is that of the clipped target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pinocchio as pin

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.arm import ArmKinematics, IkResult
from hilserl.kinematics.workspace import Workspace

# A control step's target is at most ee_step away: IK meets it in 2-4 iterations. The cap bounds the step's
# time where the joint limits keep it from ever converging.
CONTROL_IK_ITERATIONS = 20


@dataclass
class EeCommand:
    joint_targets: np.ndarray | None  # `joints` order; None when IK was not asked for
    target_position: np.ndarray  # (3,) m, base frame, inside the workspace box
    target_quaternion: np.ndarray  # (4,) x, y, z, w
    executed_action: np.ndarray  # (space.dim,) in [-1, 1]
    ik: IkResult | None


def rotation_to_rpy(rotation: np.ndarray) -> np.ndarray:
    return np.asarray(pin.rpy.matrixToRpy(rotation), dtype=np.float64)


class EeController:
    def __init__(self, arm: ArmKinematics, workspace: Workspace, space: EeActionSpace,
                 gripper_scale: float | Sequence[float] = 0.005):
        """`gripper_scale`: position change per step at gripper value 1, one per gripper joint of `arm` (or one
        for all); the gripper value moves every gripper joint by value x its scale, like a joint delta."""
        self.arm, self.workspace, self.space = arm, workspace, space
        self.gripper_scale = np.broadcast_to(np.asarray(gripper_scale, dtype=np.float64),
                                             arm.gripper_index.shape).copy()
        if (self.gripper_scale <= 0).any():
            raise ValueError(f"gripper_scale must be positive, got {gripper_scale}")

    def check_action(self, action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.space.dim,):
            raise ValueError(f"an ee_delta action with ee_axes {self.space.axes!r} has {self.space.dim} values "
                             f"(motion + gripper), got shape {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action has non-finite values: {action.tolist()}")
        return np.clip(action, -1.0, 1.0)

    def target(self, current: pin.SE3, action: np.ndarray) -> pin.SE3:
        """current TCP + the scaled action, clipped to the workspace; orientation held for ee_axes xyz."""
        position = current.translation + action[:3] * self.space.step
        rotation = current.rotation
        if self.space.rotates:
            rotation = pin.rpy.rpyToMatrix(*(action[3:6] * self.space.rot_step)) @ rotation
        return self.workspace.clip(pin.SE3(rotation, position))

    def motion_action(self, current: pin.SE3, reached: pin.SE3) -> np.ndarray:
        """The motion part of the action that takes `current` to `reached`, in [-1, 1]."""
        motion = (reached.translation - current.translation) / self.space.step
        if self.space.rotates:
            rotation = rotation_to_rpy(reached.rotation @ current.rotation.T) / self.space.rot_step
            motion = np.concatenate([motion, rotation])
        return np.clip(motion, -1.0, 1.0)

    def command(self, q_measured, action, solve_ik: bool = True) -> EeCommand:
        action = self.check_action(action)
        q = np.asarray(q_measured, dtype=np.float64)
        current = self.arm.tcp_pose(q)
        target = self.target(current, action)
        gripper = action[-1]
        ik = joint_targets = None
        reached = target
        if solve_ik:
            ik = self.arm.solve_ik(target, q, max_iterations=CONTROL_IK_ITERATIONS)
            joint_targets, reached = ik.q, ik.pose
            g = self.arm.gripper_index
            if g.size:
                moved = np.clip(q[g] + gripper * self.gripper_scale, self.arm.lower[g], self.arm.upper[g])
                joint_targets[g] = moved
                gripper = float(np.clip((moved[0] - q[g[0]]) / self.gripper_scale[0], -1.0, 1.0))
        executed = np.append(self.motion_action(current, reached), gripper)
        quaternion = pin.Quaternion(target.rotation)
        return EeCommand(joint_targets=joint_targets, target_position=target.translation.copy(),
                         target_quaternion=np.array([quaternion.x, quaternion.y, quaternion.z, quaternion.w]),
                         executed_action=executed, ik=ik)
