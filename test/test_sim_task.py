"""The Genesis task and its scripted expert, on a real Genesis scene (built once for the module)."""

from __future__ import annotations

import numpy as np
import pytest

from hilserl.robot import HOME, JOINT_LOWER, JOINT_UPPER, JOINTS

pytest.importorskip("genesis")

from hilserl.kinematics.action_space import EeActionSpace  # noqa: E402
from hilserl.policies.config import PolicyConfig  # noqa: E402
from hilserl.sim.expert import ScriptedExpert  # noqa: E402
from hilserl.sim.rollout import run_episode  # noqa: E402
from hilserl.sim.task import LIMIT_TOLERANCE, PandaTask, TaskConfig, action_to_targets, variant_config  # noqa: E402


@pytest.fixture(scope="module")
def task() -> PandaTask:
    return PandaTask(TaskConfig(task="reach"))


def hold(obs) -> np.ndarray:
    return obs.joint_positions.copy()


def test_reset_is_deterministic_for_a_seed(task):
    a, b, other = task.reset(seed=7), task.reset(seed=7), task.reset(seed=8)
    assert len(a.images) == 1 and a.images[0].shape == (84, 84, 3) and a.images[0].dtype == np.uint8
    assert a.joint_positions.shape == a.joint_velocities.shape == (len(JOINTS),)
    np.testing.assert_array_equal(a.cube_position, b.cube_position)
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    np.testing.assert_array_equal(a.images[0], b.images[0])
    assert np.linalg.norm(a.cube_position[:2] - other.cube_position[:2]) > 1e-3
    assert not np.array_equal(a.images[0], other.images[0])
    cfg = task.config
    assert cfg.cube_x_range[0] <= a.cube_position[0] <= cfg.cube_x_range[1]
    assert cfg.cube_y_range[0] <= a.cube_position[1] <= cfg.cube_y_range[1]
    assert np.abs(a.joint_positions[:7] - np.asarray(HOME[:7])).max() <= cfg.start_joint_noise + 0.01
    assert a.step == 0 and a.target_position[2] > a.cube_position[2]


def test_holding_the_measured_pose_is_always_accepted(task):
    obs = task.reset(seed=9)
    for _ in range(10):
        assert task.validate_command(obs.joint_positions) is None
        obs = task.step(hold(obs)).observation


def test_steps_are_deterministic_for_a_seed(task):
    def run():
        obs = task.reset(seed=3)
        trace = []
        for action in ([1, -1, 0, 1, 0, 0, 0.5, -1], [0.3] * 8, [-1, 0, 1, 0, -1, 0, 1, 0]):
            result = task.step(action_to_targets(obs.joint_positions, np.asarray(action, dtype=float)))
            obs = result.observation
            trace.append((obs.joint_positions, obs.images[0], result.reward))
        return trace

    for (q1, im1, r1), (q2, im2, r2) in zip(run(), run()):
        np.testing.assert_allclose(q1, q2, atol=1e-9)
        np.testing.assert_array_equal(im1, im2)
        assert r1 == pytest.approx(r2, abs=1e-9)


def test_commands_move_the_joints_toward_the_targets(task):
    obs = task.reset(seed=11)
    target = hold(obs)
    target[0] += 0.15  # base yaw
    target[3] += 0.15  # elbow
    target[7] = 0.02  # close the fingers half way
    start_error = np.abs(target - obs.joint_positions)
    for _ in range(5):
        result = task.step(target)
    q = result.observation.joint_positions
    moved = [0, 3, 7]
    assert np.all(np.abs(target[moved] - q[moved]) < 0.2 * start_error[moved])  # within 20% of the way left
    assert q[0] > obs.joint_positions[0] + 0.1 and q[3] > obs.joint_positions[3] + 0.1
    # the finger command drives both fingers
    both = task.robot.get_dofs_position().numpy()[7:9]
    np.testing.assert_allclose(both, [0.02, 0.02], atol=3e-3)
    assert result.observation.step == 5


@pytest.mark.parametrize("bad, words", [
    (np.zeros(7), "expected 8 joint targets"),
    (np.append(np.asarray(HOME[:7]), np.nan), "non-finite joint target for ['panda_finger_joint1']"),
    (np.asarray(HOME) * np.array([1, 1, 1, 1, 1, 1, 1, np.inf]), "non-finite"),
    (np.asarray(HOME) + np.array([0, 0, 0, 2.5, 0, 0, 0, 0]), "panda_joint4="),
    (np.asarray(HOME) + np.array([0, 0, 0, 0, 0, 0, 0, 0.01]), "panda_finger_joint1="),
])
def test_bad_commands_are_refused_and_not_applied(task, bad, words):
    obs = task.reset(seed=5)
    reason = task.validate_command(bad)
    assert reason is not None and words in reason
    physics_steps = task.physics_steps
    with pytest.raises(ValueError, match="not applied"):
        task.step(bad)
    assert task.physics_steps == physics_steps  # no physics ran
    np.testing.assert_array_equal(task.robot.get_dofs_position().numpy()[:8], obs.joint_positions)
    # The next good command continues from where the arm was, as if the bad one never came.
    result = task.step(hold(obs))
    assert result.observation.step == 1
    assert np.abs(result.observation.joint_positions - obs.joint_positions).max() < 0.02


def test_limits_and_action_mapping(task):
    lower, upper = np.asarray(JOINT_LOWER), np.asarray(JOINT_UPPER)
    q = np.asarray(HOME)
    assert np.all(action_to_targets(q, np.ones(8) * 1e3) == upper)
    assert np.all(action_to_targets(q, -np.ones(8) * 1e3) == lower)
    assert task.validate_command(upper) is None and task.validate_command(lower) is None
    # a measured pose a rounding past a limit (an open finger) is a valid hold command, clipped when applied
    assert task.validate_command(upper + LIMIT_TOLERANCE / 2) is None
    assert "panda_joint1=" in task.validate_command(upper + np.eye(8)[0] * 2 * LIMIT_TOLERANCE)


def test_stepping_needs_a_reset_after_the_episode_ends(task):
    cfg = task.config
    obs = task.reset(seed=2)
    for _ in range(cfg.episode_steps):
        result = task.step(hold(obs))
        if result.terminated or result.truncated:
            break
    assert result.truncated and not result.success and result.observation.step == cfg.episode_steps
    with pytest.raises(RuntimeError, match="reset"):
        task.step(hold(obs))


@pytest.mark.parametrize("seed", [101, 202])
def test_expert_reaches_the_cube(task, seed):
    expert = ScriptedExpert(task)
    obs = task.reset(seed=seed)
    rewards = []
    for _ in range(task.config.episode_steps):
        action = expert.act(obs)
        assert action.shape == (8,) and np.all(np.abs(action) <= 1.0)
        result = task.step(action_to_targets(obs.joint_positions, action))
        rewards.append(result.reward)
        obs = result.observation
        if result.terminated or result.truncated:
            break
    assert result.success and result.terminated and not result.truncated
    distance = np.linalg.norm(obs.ee_position - obs.target_position)
    assert distance < task.config.success_radius
    assert rewards[-1] == 0.0 and -1.0 < rewards[0] < rewards[-2] < 0.0  # dense reward grows on the way


@pytest.mark.parametrize("axes", ["xyz", "xyz_rpy"])
def test_expert_reaches_the_cube_with_end_effector_actions(task, axes):
    """The expert in ee_delta, each action turned into joint targets by the kinematics, as the actor does."""
    space = EeActionSpace(axes)
    config = PolicyConfig(action_space="ee_delta", ee_axes=axes, action_dim=space.dim, state_dim=8)
    expert = ScriptedExpert(task, space=space)
    episode = run_episode(task, config, 303, lambda obs, pixels, t: expert.act(obs))
    assert episode.success and episode.terminated
    actions = np.asarray(episode.actions)
    assert actions.shape == (episode.length, space.dim) and np.abs(actions).max() <= 1.0
    # the stored executed motion moved the TCP: early steps head down toward the cube at a full ee_step
    assert actions[0, 2] == pytest.approx(-1.0, abs=0.01)

def test_lighting_randomisation_changes_the_image_not_the_scene(task):
    """Two seeds with the same cube pose and start pose differ only by their lighting draw."""
    import dataclasses

    original = task.config
    task.config = dataclasses.replace(original, cube_x_range=(0.55, 0.55), cube_y_range=(0.0, 0.0),
                                      cube_yaw_range=(0.0, 0.0), start_joint_noise=0.0)
    try:
        a, b = task.reset(seed=1), task.reset(seed=2)
    finally:
        task.config = original
    np.testing.assert_array_equal(a.cube_position, b.cube_position)
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    assert np.abs(a.images[0].astype(int) - b.images[0].astype(int)).mean() > 1.0


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown task"):
        TaskConfig(task="stack")
    with pytest.raises(ValueError, match="multiple of physics_dt"):
        TaskConfig(control_dt=0.105)
    with pytest.raises(ValueError, match="num_cameras"):
        TaskConfig(num_cameras=9)
    with pytest.raises(ValueError, match="unknown task variant 'hard'"):
        variant_config("hard")


def test_easy_variant_fixes_the_scene_and_explicit_fields_win():
    assert variant_config("standard") == TaskConfig()
    easy = variant_config("easy", task="reach", episode_steps=30)
    assert easy.cube_x_range[0] == easy.cube_x_range[1] and easy.cube_y_range[0] == easy.cube_y_range[1]
    assert easy.start_joint_noise == 0.0 and easy.light_jitter == 0.0 and easy.episode_steps == 30
    assert easy.success_radius > TaskConfig().success_radius
    assert variant_config("easy", success_radius=0.05).success_radius == 0.05


def test_shifted_variant_changes_the_cell_and_leaves_standard_and_easy_as_they_were():
    from hilserl.sim.task import CAMERA_POSES, VARIANTS, mounted_camera

    standard, shifted = variant_config("standard"), variant_config("shifted", task="push")
    # standard and easy keep the scene they always had (shipped checkpoints were trained in it)
    assert standard == TaskConfig() and set(VARIANTS["easy"]).isdisjoint(VARIANTS["shifted"])
    for config in (standard, variant_config("easy")):
        assert config.light_direction == (-0.5, -0.3, -1.0) and config.cube_color == (0.85, 0.1, 0.1)
        assert config.floor_color == (0.6, 0.55, 0.45) and config.cube_friction is None and config.cube_size == 0.05
        assert config.camera_offset == (0.0, 0.0, 0.0) and config.camera_pan == config.camera_tilt == 0.0
        for pos, lookat in CAMERA_POSES:
            moved = mounted_camera(pos, lookat, config)
            assert np.array_equal(moved[0], pos) and np.array_equal(moved[1], lookat)
    # shifted: dimmer light from elsewhere, other colours, a 10% larger and slipperier cube, a moved camera
    assert shifted.task == "push" and shifted.light_intensity < standard.light_intensity
    assert shifted.ambient < standard.ambient and shifted.light_direction != standard.light_direction
    assert shifted.cube_color != standard.cube_color and shifted.floor_color != standard.floor_color
    assert shifted.cube_size == pytest.approx(1.1 * standard.cube_size) and shifted.cube_friction < 1.0
    # the camera mounting is a fixed change, not per-episode jitter: several cm and a few degrees
    assert shifted.camera_pos_jitter == 0.0
    pos, lookat = mounted_camera(*CAMERA_POSES[0], shifted)
    assert 0.03 <= np.linalg.norm(pos - np.asarray(CAMERA_POSES[0][0])) <= 0.1
    before = np.asarray(CAMERA_POSES[0][1]) - np.asarray(CAMERA_POSES[0][0])
    after = lookat - pos
    angle = np.degrees(np.arccos(before @ after / np.linalg.norm(before) / np.linalg.norm(after)))
    assert 2.0 <= angle <= 8.0 and np.linalg.norm(after) == pytest.approx(np.linalg.norm(before))
    with pytest.raises(ValueError, match="cube_friction"):
        TaskConfig(cube_friction=0.0)


def test_shifted_scene_looks_different_and_its_cube_is_larger(task):
    shifted = PandaTask(variant_config("shifted", task="reach"))
    a, b = task.reset(seed=7), shifted.reset(seed=7)
    np.testing.assert_allclose(a.cube_position[:2], b.cube_position[:2])  # the same episode draw ...
    assert b.cube_position[2] == pytest.approx(0.055 / 2, abs=1e-3)  # ... on a larger cube
    assert b.target_position[2] == pytest.approx(a.target_position[2] + 0.005, abs=1e-3)
    difference = np.abs(a.images[0].astype(int) - b.images[0].astype(int)).mean()
    assert difference > 10.0, f"mean pixel difference {difference:.1f}"  # light, colours and camera all moved
    assert b.images[0].mean() < a.images[0].mean()  # a dimmer cell
