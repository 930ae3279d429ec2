"""Interventions in end-effector space: SpaceMouse twists and gamepad readings -> ee_delta actions, and the
executed action the kinematics stores for them."""

from __future__ import annotations

import numpy as np
import pytest

from hilserl.control.episode import TeleopReading
from hilserl.control.teleop_ee import GamepadEeIntervention, GamepadEeMapping, SpaceMouseIntervention
from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.ee_control import EeController
from hilserl.kinematics.panda import panda_arm
from hilserl.kinematics.workspace import Workspace
from hilserl.robot import HOME, WORKSPACE_LOWER, WORKSPACE_UPPER

XYZ, XYZ_RPY = EeActionSpace("xyz"), EeActionSpace("xyz_rpy")


def joy(t: float, axes=(0.0,) * 8, buttons=(0,) * 11) -> TeleopReading:
    return TeleopReading(t, tuple(axes), tuple(buttons))


def buttons(*down: int, n: int = 11) -> tuple[int, ...]:
    return tuple(int(i in down) for i in range(n))


def test_spacemouse_motion_beyond_the_dead_band_takes_over_and_silence_hands_back():
    mouse = SpaceMouseIntervention(XYZ, dead_band=0.1, timeout=0.5)
    assert mouse.human_action(0.0) is None
    mouse.update_twist(1.0, (0.05, -0.08, 0.0), (0.0, 0.0, 0.0))  # resting hand: within the dead band
    assert mouse.human_action(1.0) is None
    mouse.update_twist(1.1, (0.6, 0.05, -0.3), (0.9, 0.0, 0.0))  # push forward and down, twist ignored for xyz
    np.testing.assert_allclose(mouse.human_action(1.1), [0.6, 0.0, -0.3, 0.0])
    mouse.update_twist(1.2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # let go: holds still, still in control
    np.testing.assert_allclose(mouse.human_action(1.5), [0.0, 0.0, 0.0, 0.0])
    assert mouse.human_action(1.1 + 0.5 + 1e-3) is None  # teleop_timeout after the last motion


def test_spacemouse_rotation_and_a_silent_driver():
    mouse = SpaceMouseIntervention(XYZ_RPY, dead_band=0.1, scale=2.0, timeout=0.5)
    mouse.update_twist(0.0, (0.0, 0.0, 0.0), (0.0, 0.2, -0.7))  # a twist alone takes over with xyz_rpy
    np.testing.assert_allclose(mouse.human_action(0.1), [0, 0, 0, 0, 0.4, -1.0, 0.0])  # scaled, clipped
    assert mouse.human_action(0.6) is None  # the driver stopped publishing: the last twist is not replayed


def test_spacemouse_buttons_latch_the_gripper_and_take_over():
    mouse = SpaceMouseIntervention(XYZ, timeout=0.5)
    mouse.update_buttons(joy(2.0, buttons=(1, 0)))  # left: close
    np.testing.assert_allclose(mouse.human_action(2.1), [0, 0, 0, -1.0])
    mouse.update_buttons(joy(2.2, buttons=(0, 0)))  # released: stays closed (keeps squeezing)
    mouse.update_twist(2.3, (0.0, 0.5, 0.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(mouse.human_action(2.3), [0, 0.5, 0, -1.0])
    mouse.update_buttons(joy(2.4, buttons=(0, 1)))  # right: open
    np.testing.assert_allclose(mouse.human_action(2.4), [0, 0.5, 0, 1.0])


def test_a_new_episode_starts_with_the_policy_in_control_and_a_fresh_reading_is_awaited():
    mouse = SpaceMouseIntervention(XYZ, timeout=0.5)
    mouse.update_twist(3.0, (0.4, 0.0, 0.0), (0.0, 0.0, 0.0))
    mouse.update_buttons(joy(3.01, buttons=(1, 0)))  # driving, the gripper closed
    assert mouse.read_at(3.05) == 3.0  # the whole reading is as old as its older half
    mouse.release()  # the episode ended while the person drove
    assert mouse.human_action(3.1) is None and mouse.read_at(3.1) is None  # within teleop_timeout, yet handed back
    mouse.update_twist(3.2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # a resting hand does not take over again
    mouse.update_buttons(joy(3.2, buttons=(0, 0)))
    assert mouse.human_action(3.2) is None
    mouse.update_twist(3.3, (0.0, 0.3, 0.0), (0.0, 0.0, 0.0))  # motion does; the fingers hold still until a press
    np.testing.assert_allclose(mouse.human_action(3.3), [0.0, 0.3, 0.0, 0.0])
    assert mouse.read_at(3.3) == 3.2

    pad = GamepadEeIntervention(XYZ)
    pad.update(joy(0.0, buttons=buttons(4, 0)))  # dead-man held, close pressed
    np.testing.assert_allclose(pad.human_action(0.1), [0.0, 0.0, 0.0, -1.0])
    assert pad.read_at(0.1) == 0.0
    pad.release()
    assert pad.human_action(0.1) is None and pad.read_at(0.1) is None
    pad.update(joy(0.2, buttons=buttons(4)))  # the dead-man still held: the next reading takes over, fingers still
    np.testing.assert_allclose(pad.human_action(0.2), [0.0, 0.0, 0.0, 0.0])


def test_gamepad_acts_only_with_the_deadman_held():
    pad = GamepadEeIntervention(XYZ_RPY)
    stick = [0.0] * 8
    stick[1], stick[0], stick[4], stick[3] = 0.8, -0.5, 0.05, 0.3  # left up/right, right stick barely, yaw
    pad.update(joy(0.0, stick))
    assert pad.human_action(0.0) is None  # dead-man (LB) not held
    pad.update(joy(0.1, stick, buttons(4)))
    np.testing.assert_allclose(pad.human_action(0.1), [0.8, -0.5, 0.0, 0.0, 0.0, 0.3, 0.0])
    assert pad.human_action(0.7) is None  # the pad went silent


def test_gamepad_buttons_gripper_and_labels_with_a_custom_mapping():
    mapping = GamepadEeMapping(axes=(0, 1, 2, -1, -1, -1), signs=(-1.0, 1.0, 1.0, 1, 1, 1), deadman_button=0,
                               close_button=1, open_button=2, success_button=3, failure_button=4)
    pad = GamepadEeIntervention(XYZ, mapping)
    assert pad.update(joy(0.0, (0.4, 0.0, 1.0), buttons(0, 1, n=5))) is None
    np.testing.assert_allclose(pad.human_action(0.0), [-0.4, 0.0, 1.0, -1.0])
    assert pad.update(joy(0.1, (0.0,) * 3, buttons(0, 3, n=5))) == "success"
    assert pad.update(joy(0.2, (0.0,) * 3, buttons(0, 3, n=5))) is None  # held, not pressed again
    assert pad.update(joy(0.3, (0.0,) * 3, buttons(4, n=5))) == "failure"
    np.testing.assert_allclose(pad.gripper.value, -1.0)
    assert pad.human_action(0.3) is None  # dead-man released


def test_short_readings_and_bad_settings():
    pad = GamepadEeIntervention(XYZ)
    pad.update(joy(0.0, axes=(0.5,), buttons=buttons(4)))  # a pad with one axis: the rest read 0
    np.testing.assert_allclose(pad.human_action(0.0), [0.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="6 axes and 6 signs"):
        GamepadEeMapping(axes=(0, 1, 2))
    with pytest.raises(ValueError, match="teleop_timeout"):
        SpaceMouseIntervention(XYZ, timeout=0.0)
    with pytest.raises(ValueError, match="3 linear and 3 angular"):
        SpaceMouseIntervention(XYZ).update_twist(0.0, (0.0, float("nan"), 0.0), (0.0, 0.0, 0.0))


def test_a_human_action_into_the_box_wall_is_stored_clipped():
    q = np.asarray(HOME, dtype=np.float64)
    arm = panda_arm()
    x = arm.tcp_pose(q).translation[0]
    wall = Workspace(WORKSPACE_LOWER, (x + 0.005, *WORKSPACE_UPPER[1:]))  # 5 mm in front of the TCP
    controller = EeController(arm, wall, XYZ)
    mouse = SpaceMouseIntervention(XYZ)
    mouse.update_twist(0.0, (1.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    command = controller.command(q, mouse.human_action(0.0))
    np.testing.assert_allclose(command.executed_action, [0.25, 0.0, 0.0, 0.0], atol=2e-3)  # 5 mm of 2 cm


def test_with_release_at_rest_a_resting_puck_hands_back_at_once_and_a_held_button_keeps_control():
    mouse = SpaceMouseIntervention(XYZ, timeout=0.5, release_at_rest=True)
    mouse.update_twist(1.0, (0.6, 0.0, 0.0), (0.0, 0.0, 0.0))
    mouse.update_buttons(joy(1.0, buttons=(1, 0)))  # driving, the close button held
    np.testing.assert_allclose(mouse.human_action(1.05), [0.6, 0.0, 0.0, -1.0])
    mouse.update_twist(1.1, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))  # the puck at rest, the button still held
    np.testing.assert_allclose(mouse.human_action(1.1), [0.0, 0.0, 0.0, -1.0])  # squeezing: still the person's
    mouse.update_buttons(joy(1.11, buttons=(0, 0)))  # and the button released: let go
    assert mouse.human_action(1.11) is None and mouse.read_at(1.11) is None  # well within teleop_timeout
    mouse.update_twist(1.2, (0.0, -0.4, 0.0), (0.0, 0.0, 0.0))  # motion takes over again, the latch kept
    np.testing.assert_allclose(mouse.human_action(1.2), [0.0, -0.4, 0.0, -1.0])
    mouse.update_twist(1.3, (0.05, 0.0, 0.0), (0.0, 0.0, 0.0))  # within the dead band, no button: at rest
    assert mouse.human_action(1.3) is None
    # Without release the same readings hold the arm still, as the person's action, until teleop_timeout.
    holds = SpaceMouseIntervention(XYZ, timeout=0.5)
    holds.update_twist(1.0, (0.6, 0.0, 0.0), (0.0, 0.0, 0.0))
    holds.update_buttons(joy(1.0, buttons=(1, 0)))
    holds.update_twist(1.1, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    holds.update_buttons(joy(1.11, buttons=(0, 0)))
    np.testing.assert_allclose(holds.human_action(1.3), [0.0, 0.0, 0.0, -1.0])
