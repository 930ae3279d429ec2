"""What a policy's action means: joint deltas (`joint_delta`) or end-effector deltas (`ee_delta`).

An `ee_delta` action is [dx, dy, dz] (`ee_axes: xyz`, orientation held) or [dx, dy, dz, droll, dpitch, dyaw]
(`ee_axes: xyz_rpy`) in the robot base frame, then one gripper value; every entry in [-1, 1]. Translation is
scaled by `ee_step` (m per step), rotation by `ee_rot_step` (rad per step); rotations turn the TCP about the
base frame's x, y, z axes (R_target = Rz(dyaw) Ry(dpitch) Rx(droll) R_current).
"""

from __future__ import annotations

from dataclasses import dataclass

ACTION_SPACES = ("joint_delta", "ee_delta")
EE_AXES = {"xyz": 3, "xyz_rpy": 6}  # motion values per ee_axes setting (the gripper value comes after them)
DEFAULT_EE_STEP = 0.02  # m per step at |action| = 1
DEFAULT_EE_ROT_STEP = 0.1  # rad per step at |action| = 1


@dataclass(frozen=True)
class EeActionSpace:
    axes: str = "xyz"
    step: float = DEFAULT_EE_STEP
    rot_step: float = DEFAULT_EE_ROT_STEP

    def __post_init__(self) -> None:
        check_ee_fields(self.axes, self.step, self.rot_step)

    @property
    def motion_dim(self) -> int:
        return EE_AXES[self.axes]

    @property
    def dim(self) -> int:
        """The policy's action_dim: the motion values plus one gripper value."""
        return self.motion_dim + 1

    @property
    def rotates(self) -> bool:
        return self.motion_dim == 6


def check_ee_fields(axes: str, step: float, rot_step: float) -> None:
    """Raise ValueError with the reason when the end-effector action settings are unusable."""
    if axes not in EE_AXES:
        raise ValueError(f"ee_axes must be one of {tuple(EE_AXES)}, got {axes!r}")
    if not (0.0 < float(step) <= 0.2):
        raise ValueError(f"ee_step must be in (0, 0.2] m per step, got {step}")
    if not (0.0 < float(rot_step) <= 1.0):
        raise ValueError(f"ee_rot_step must be in (0, 1] rad per step, got {rot_step}")



def action_dim_for(action_space: str, ee_axes: str, joint_count: int) -> int:
    """The action_dim a policy in this action space has: one per joint, or the ee motion + 1 gripper value."""
    if action_space not in ACTION_SPACES:
        raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {action_space!r}")
    return EeActionSpace(ee_axes).dim if action_space == "ee_delta" else joint_count


def action_space_problem(config, actor_action_space: str, n_joints: int) -> str | None:
    """Why an actor set up for `actor_action_space` and `n_joints` commanded joints cannot run a policy with
    this PolicyConfig (None when it can): the actor's check on every weights payload."""
    if actor_action_space not in ACTION_SPACES:
        raise ValueError(f"action_space must be one of {ACTION_SPACES}, got {actor_action_space!r}")
    if config.action_space != actor_action_space:
        return (f"policy acts in {config.action_space} but this actor is set up for {actor_action_space} "
                f"(parameter action_space)")
    if config.action_space == "joint_delta" and config.action_dim != n_joints:
        return f"policy has {config.action_dim} actions but `joints` names {n_joints}"
    return None
