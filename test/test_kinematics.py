"""End-effector kinematics with Pinocchio: forward kinematics against Genesis, IK, workspace clipping, and
the `ee_delta` control step, on the Panda URDF the sim's robot description comes from."""

from __future__ import annotations

import math

import numpy as np
import pinocchio as pin
import pytest

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.arm import ArmKinematics
from hilserl.kinematics.ee_control import EeController
from hilserl.kinematics.panda import panda_arm, panda_controller, panda_workspace
from hilserl.kinematics.workspace import Workspace
from hilserl.nodes.robot_description import panda_urdf
from hilserl.robot import HOME, JOINT_LOWER, JOINT_UPPER, JOINTS, TCP_FRAME, WORKSPACE_LOWER, WORKSPACE_UPPER

SAMPLES = 200
MM = 1e-3


@pytest.fixture(scope="module")
def arm() -> ArmKinematics:
    return panda_arm()


def random_configurations(arm: ArmKinematics, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(arm.lower, arm.upper, size=(n, len(arm.joints)))


def test_model_maps_the_project_joints(arm):
    assert arm.joints == JOINTS and arm.base_frame == "panda_link0"
    assert [JOINTS[i] for i in arm.gripper_index] == ["panda_finger_joint1"]
    assert len(arm.arm_index) == 7
    # the narrower of the URDF's and the project's limits
    assert (arm.lower >= np.asarray(JOINT_LOWER)).all() and (arm.upper <= np.asarray(JOINT_UPPER)).all()
    assert arm.lower[3] == JOINT_LOWER[3] and arm.upper[3] == JOINT_UPPER[3]


def test_tcp_matches_genesis_for_random_configurations(arm):
    pytest.importorskip("genesis")
    from hilserl.sim.task import PandaTask, TaskConfig

    task = PandaTask(TaskConfig(image_size=16))  # the one Genesis scene of this module
    errors = []
    for q in random_configurations(arm, SAMPLES, seed=0):
        task.robot.set_dofs_position(np.append(q, q[7]), zero_velocity=True)  # both fingers
        genesis_tcp = task._read_state()["tcp"][0]  # what the task reports as `ee_position`
        errors.append(np.linalg.norm(genesis_tcp - arm.tcp_pose(q).translation))
    assert max(errors) <= 1 * MM, f"worst TCP disagreement {max(errors) * 1e3:.3f} mm"


def test_ik_reaches_random_reachable_targets_within_the_limits(arm):
    rng = np.random.default_rng(1)
    misses = []
    for q_true in random_configurations(arm, SAMPLES, seed=2):
        target = arm.tcp_pose(q_true)
        start = np.clip(q_true + rng.uniform(-0.2, 0.2, size=q_true.shape), arm.lower, arm.upper)
        result = arm.solve_ik(target, start)
        assert (result.q >= arm.lower).all() and (result.q <= arm.upper).all()
        reached = arm.tcp_pose(result.q)
        position_error = np.linalg.norm(reached.translation - target.translation)
        assert position_error == pytest.approx(result.position_error, abs=1e-9)
        if position_error > 1 * MM or result.rotation_error > 1e-2:
            misses.append((position_error, result.rotation_error))
    assert not misses, f"{len(misses)} of {SAMPLES} targets missed: {misses[:5]}"


def test_ik_toward_an_unreachable_target_stays_within_the_limits(arm):
    far = pin.SE3(np.eye(3), np.array([2.0, 0.0, 0.5]))  # 2 m out: beyond the Panda's reach
    result = arm.solve_ik(far, np.asarray(HOME))
    assert not result.reached()
    assert (result.q >= arm.lower).all() and (result.q <= arm.upper).all()


def test_targets_outside_the_box_are_clipped_to_it():
    workspace = panda_workspace()
    lower, upper = np.asarray(WORKSPACE_LOWER), np.asarray(WORKSPACE_UPPER)
    rng = np.random.default_rng(3)
    for position in rng.uniform(lower - 0.5, upper + 0.5, size=(SAMPLES, 3)):
        clipped = workspace.clip(pin.SE3(workspace.reference, position))
        assert (clipped.translation >= lower).all() and (clipped.translation <= upper).all()
        inside = (position >= lower) & (position <= upper)
        np.testing.assert_allclose(clipped.translation[inside], position[inside])
        np.testing.assert_allclose(clipped.translation[~inside], np.where(position < lower, lower, upper)[~inside])


def test_orientation_beyond_the_limits_is_clipped_to_them():
    workspace = Workspace((0, -1, 0), (1, 1, 1), orientation_reference=(math.pi, 0, 0),
                          orientation_lower=(-0.2, -0.2, -1.0), orientation_upper=(0.2, 0.2, 1.0))
    tilted = pin.rpy.rpyToMatrix(0.5, -0.1, 1.5) @ workspace.reference
    clipped = workspace.clip(pin.SE3(tilted, np.array([0.5, 0.0, 0.5])))
    deviation = pin.rpy.matrixToRpy(clipped.rotation @ workspace.reference.T)
    np.testing.assert_allclose(deviation, [0.2, -0.1, 1.0], atol=1e-9)
    within = pin.rpy.rpyToMatrix(0.1, 0.1, -0.5) @ workspace.reference
    np.testing.assert_allclose(workspace.clip(pin.SE3(within, np.zeros(3) + 0.5)).rotation, within)


@pytest.mark.parametrize("axes", ["xyz", "xyz_rpy"])
def test_an_unclipped_action_is_executed_as_given(arm, axes):
    controller = panda_controller(EeActionSpace(axes), arm)
    rng = np.random.default_rng(4)
    q = np.asarray(HOME, dtype=np.float64).copy()
    q[7] = 0.02  # fingers half open, so the gripper value can move them both ways
    for _ in range(50):
        action = rng.uniform(-1, 1, size=controller.space.dim)
        command = controller.command(q, action)
        np.testing.assert_allclose(command.executed_action, action, atol=2e-3)
        reached = arm.tcp_pose(command.joint_targets)
        np.testing.assert_allclose(reached.translation, command.target_position, atol=1e-4)
        expected = arm.tcp_pose(q).translation + action[:3] * controller.space.step
        np.testing.assert_allclose(command.target_position, expected, atol=1e-9)
        assert command.joint_targets[7] == pytest.approx(q[7] + action[-1] * 0.005)
        if axes == "xyz":  # orientation held
            np.testing.assert_allclose(reached.rotation, arm.tcp_pose(q).rotation, atol=1e-3)


def test_an_action_out_of_the_box_is_stored_as_the_clipped_motion(arm):
    controller = panda_controller(EeActionSpace("xyz", step=0.05), arm)
    q = np.asarray(HOME, dtype=np.float64)
    start = arm.tcp_pose(q).translation
    # place the box's top 1 cm above the TCP: +z asks for 5 cm and gets 1 cm
    workspace = Workspace(WORKSPACE_LOWER, (WORKSPACE_UPPER[0], WORKSPACE_UPPER[1], start[2] + 0.01))
    controller = EeController(arm, workspace, controller.space, gripper_scale=0.005)
    command = controller.command(q, [0.4, 0.0, 1.0, 1.0])
    assert command.target_position[2] == pytest.approx(start[2] + 0.01)
    np.testing.assert_allclose(command.executed_action, [0.4, 0.0, 0.2, 0.0], atol=2e-3)  # finger already open
    assert arm.tcp_pose(command.joint_targets).translation[2] <= start[2] + 0.01 + 1e-4


def test_cartesian_pose_interface_skips_ik(arm):
    controller = panda_controller(EeActionSpace("xyz"), arm)
    command = controller.command(np.asarray(HOME), [1.0, 0.0, 0.0, -1.0], solve_ik=False)
    assert command.joint_targets is None and command.ik is None
    np.testing.assert_allclose(command.executed_action, [1.0, 0.0, 0.0, -1.0])
    quaternion = command.target_quaternion
    assert np.linalg.norm(quaternion) == pytest.approx(1.0)
    rotation = pin.Quaternion(quaternion[3], *quaternion[:3]).toRotationMatrix()
    np.testing.assert_allclose(rotation, arm.tcp_pose(np.asarray(HOME)).rotation, atol=1e-9)


def test_bad_set_up_and_bad_actions_get_clear_errors(arm):
    urdf = panda_urdf()
    with pytest.raises(ValueError, match="tcp_frame 'tool0' is not a frame"):
        ArmKinematics(urdf, JOINTS, "tool0")
    with pytest.raises(ValueError, match=r"joints \['elbow'\] are not in the URDF"):
        ArmKinematics(urdf, JOINTS[:7] + ("elbow",), TCP_FRAME)
    with pytest.raises(ValueError, match=r"panda_joint7'\] move tcp_frame"):
        ArmKinematics(urdf, JOINTS[:6], TCP_FRAME)
    with pytest.raises(ValueError, match="cannot build a kinematic model"):
        ArmKinematics("<robot name='x'><link", JOINTS, TCP_FRAME)
    with pytest.raises(ValueError, match="tcp_offset must be 3"):
        ArmKinematics(urdf, JOINTS, TCP_FRAME, tcp_offset=(0.0, 0.1))
    with pytest.raises(ValueError, match="workspace_lower"):
        Workspace((0.5, 0, 0), (0.4, 1, 1))
    with pytest.raises(ValueError, match="ee_axes must be one of"):
        EeActionSpace("xy")
    controller = panda_controller(EeActionSpace("xyz"), arm)
    with pytest.raises(ValueError, match="has 4 values"):
        controller.command(np.asarray(HOME), np.zeros(7))
    with pytest.raises(ValueError, match="non-finite"):
        controller.command(np.asarray(HOME), [0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected 8 joint positions"):
        controller.command(np.asarray(HOME)[:7], np.zeros(4))
