"""The scripted expert's lift decisions from the state alone (plain Python, no Genesis): a cube held low in the
closed fingers keeps being lifted, fingers closed on nothing above the cube open again for a new grasp."""

from __future__ import annotations

import numpy as np

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.robot import HOME
from hilserl.sim.expert import ScriptedExpert
from hilserl.sim.task import Observation, variant_config

CUBE = np.array([0.55, 0.05, 0.06])  # 3.5 cm off the floor, on its way up
LIFT_POINT = np.array([0.55, 0.05, 0.105])
CLOSE, OPEN = -1.0, 1.0  # the grasp critic's gripper commands


def observation(tcp_above_cube: float, finger: float) -> Observation:
    q = np.array(HOME, dtype=float)
    q[7] = finger
    return Observation(images=[], joint_positions=q, joint_velocities=np.zeros(8),
                       ee_position=CUBE + np.array([0.004, 0.0, tcp_above_cube]), cube_position=CUBE,
                       cube_quaternion=np.array([0.0, 0.0, 0.0, 1.0]), target_position=LIFT_POINT)


def expert() -> ScriptedExpert:
    return ScriptedExpert(None, space=EeActionSpace("xyz"), config=variant_config("standard", task="lift"),
                          discrete_gripper=True)


def test_a_cube_slid_low_in_the_squeezing_fingers_is_still_lifted():
    for above in (0.01, 0.04):  # between the finger pads, and slid down toward the fingertips
        action = expert().act(observation(above, finger=0.024))  # fingers stopped on the 5 cm cube
        assert action[-1] != OPEN and action[2] > 0.5  # keep it squeezed, rise


def test_fingers_closed_on_nothing_above_the_cube_open_to_grasp_again():
    action = expert().act(observation(0.04, finger=0.005))
    assert action[-1] == OPEN
