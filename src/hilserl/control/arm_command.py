"""How the actor turns an action (the policy's or a person's) into commands for the arm, in plain Python.

`ArmCommander` follows the policy's action space (hilserl.kinematics.action_space):

  joint_delta   targets = clip(q + action * action_scale, joint limits); the person drives through
                `Intervention` (one Joy axis per joint, dead-man held)
  ee_delta      hilserl.kinematics.EeController: TCP + scaled action, clipped to the workspace, then IK
                to joint targets (`command_interface: joint_position`), or the clipped TCP target itself
                as a pose (`cartesian_pose`); the person drives through a SpaceMouse (spacenav Twist +
                buttons) or a gamepad in end-effector space (hilserl.control.teleop_ee)

The action space is the `action_space` setting or, when that is '', the first weights' (`configure`).
An ee_delta arm needs its URDF (a file, or the text robot_state_publisher latches on /robot_description)
before it can command anything: until then `waiting_reason()` says what is missing.
What a transition stores is `ArmCommand.executed`: the motion the command actually asks for, in the
policy's action space, after workspace and joint-limit clipping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hilserl.control.episode import Intervention, TeleopReading
from hilserl.control.teleop_ee import GamepadEeIntervention, GamepadEeMapping, SpaceMouseIntervention
from hilserl.kinematics.action_space import action_space_problem
from hilserl.robot import action_to_targets


@dataclass
class ArmCommand:
    joint_targets: np.ndarray | None  # `joints` order, for the forward position controller (None: cartesian_pose)
    pose: tuple[np.ndarray, np.ndarray] | None  # TCP target: position (m) and quaternion x, y, z, w (ee_delta)
    executed: np.ndarray  # the action actually commanded, in the policy's action space: what a transition stores


class EeTeleop:
    """A SpaceMouse and a gamepad, both in end-effector space: whichever a person is using drives."""

    def __init__(self, space, p: Mapping[str, object]):
        self.mouse = SpaceMouseIntervention(space, dead_band=p["teleop_dead_band"], scale=p["teleop_scale"],
                                            timeout=p["teleop_timeout"], release_at_rest=p["teleop_release_at_rest"])
        mapping = GamepadEeMapping(axes=tuple(p["ee_teleop_axes"]), signs=tuple(p["ee_teleop_signs"]),
                                   deadman_button=p["ee_deadman_button"], close_button=p["ee_close_button"],
                                   open_button=p["ee_open_button"], success_button=p["ee_success_button"],
                                   failure_button=p["ee_failure_button"])
        self.pad = GamepadEeIntervention(space, mapping, dead_band=p["teleop_dead_band"], scale=p["teleop_scale"],
                                         timeout=p["teleop_timeout"])

    def update(self, reading: TeleopReading) -> str | None:
        return self.pad.update(reading)

    def success_held(self, now: float) -> bool:
        return self.pad.success_held(now)  # labels come on /joy; the SpaceMouse has no label buttons

    def human_action(self, now: float) -> np.ndarray | None:
        mouse = self.mouse.human_action(now)
        return mouse if mouse is not None else self.pad.human_action(now)

    def read_at(self, now: float) -> float | None:
        mouse = self.mouse.read_at(now)
        return mouse if mouse is not None else self.pad.read_at(now)

    def release(self) -> None:
        self.mouse.release()
        self.pad.release()


class ArmCommander:
    def __init__(self, p: Mapping[str, object], lower: np.ndarray, upper: np.ndarray, action_scale: np.ndarray):
        """`p`: the actor's parameters (nodes/params.py ACTOR_PARAMS); limits and scales per entry of `joints`."""
        self.p, self.lower, self.upper, self.action_scale = p, lower, upper, action_scale
        self.joints: list[str] = list(p["joints"])
        self.space: str = p["action_space"]  # '' until the first weights say
        self.ee_space = None  # EeActionSpace of an ee_delta policy
        self.teleop: Intervention | EeTeleop | None = None
        self.urdf_source = p["urdf"] or p["robot_description_topic"]
        self.urdf: str | None = Path(p["urdf"]).expanduser().read_text() if p["urdf"] else None
        self.controller = None  # hilserl.kinematics.EeController once the URDF and the policy are known
        self.urdf_problem: str | None = None

    def problem(self, config) -> str | None:
        """Why weights with this PolicyConfig cannot drive this arm (None = they can)."""
        return action_space_problem(config, self.space or config.action_space, len(self.joints))

    def configure(self, config) -> None:
        """Set up for the loaded policy (its config is fixed for the actor's life: weights must match it)."""
        self.space = config.action_space
        p = self.p
        if self.space == "joint_delta":
            self.teleop = Intervention(axes=p["teleop_axes"], deadman_button=p["deadman_button"],
                                       success_button=p["success_button"], failure_button=p["failure_button"],
                                       scale=p["teleop_scale"], timeout=p["teleop_timeout"])
            return
        self.ee_space = config.ee_action_space()
        self.teleop = EeTeleop(self.ee_space, p)
        self._build_controller()

    @property
    def uses_ee(self) -> bool:
        return self.space == "ee_delta"

    def set_urdf(self, text: str) -> None:
        self.urdf, self.controller, self.urdf_problem = text, None, None
        if self.ee_space is not None:
            self._build_controller()

    def _build_controller(self) -> None:
        if self.urdf is None or self.controller is not None:
            return
        from hilserl.kinematics.arm import ArmKinematics  # Pinocchio loads only for ee_delta
        from hilserl.kinematics.ee_control import EeController
        from hilserl.kinematics.workspace import Workspace

        p = self.p
        try:
            arm = ArmKinematics(self.urdf, self.joints, p["tcp_frame"], p["tcp_offset"], self.lower, self.upper)
            workspace = Workspace(p["workspace_lower"], p["workspace_upper"], p["orientation_reference"],
                                  p["orientation_lower"], p["orientation_upper"])
            self.controller = EeController(arm, workspace, self.ee_space, self.action_scale[arm.gripper_index])
        except ValueError as err:
            self.urdf_problem = f"cannot use the URDF from {self.urdf_source}: {err}"

    @property
    def base_frame(self) -> str:
        return self.controller.arm.base_frame if self.controller else ""

    def waiting_reason(self) -> str | None:
        """What keeps an ee_delta arm from being commanded (None: nothing)."""
        if not self.uses_ee or self.controller is not None:
            return None
        return self.urdf_problem or f"waiting for the URDF on {self.urdf_source}"

    def gamepad(self, reading: TeleopReading) -> str | None:
        """Take a gamepad reading; returns the label a button asked for ("success" / "failure"), else None.
        Ignored until the weights say which action space a person drives in."""
        return self.teleop.update(reading) if self.teleop is not None else None

    def spacenav_twist(self, received: float, linear, angular) -> str | None:
        """Take a SpaceMouse reading (ee_delta only); returns why it was refused (non-finite values), else None."""
        if isinstance(self.teleop, EeTeleop):
            try:
                self.teleop.mouse.update_twist(received, linear, angular)
            except ValueError as err:
                return str(err)
        return None

    def spacenav_buttons(self, reading: TeleopReading) -> None:
        if isinstance(self.teleop, EeTeleop):
            self.teleop.mouse.update_buttons(reading)

    def human_action(self, now: float) -> np.ndarray | None:
        return self.teleop.human_action(now) if self.teleop is not None else None

    def release_teleop(self) -> None:
        """An episode ended: the next one starts with the policy in control. A person's last readings (a hand
        resting on the SpaceMouse for `teleop_timeout`) would otherwise drive, and flag, its first steps."""
        if self.teleop is not None:
            self.teleop.release()

    def person_read_at(self, now: float) -> float | None:
        """When the person in control (SpaceMouse or gamepad) gave the reading that drives now; None while the
        policy is in control."""
        return self.teleop.read_at(now) if self.teleop is not None else None

    def success_held(self, now: float) -> bool:
        """The gamepad's success button is down (for recording labelled frames)."""
        return self.teleop is not None and self.teleop.success_held(now)

    def command(self, q: np.ndarray, action: np.ndarray) -> ArmCommand:
        if not self.uses_ee:
            return ArmCommand(action_to_targets(q, action, self.action_scale, self.lower, self.upper), None, action)
        ik = self.p["command_interface"] == "joint_position"
        ee = self.controller.command(q, action, solve_ik=ik)
        return ArmCommand(ee.joint_targets, (ee.target_position, ee.target_quaternion), ee.executed_action)
