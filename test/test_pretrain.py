"""Pretraining and `infer --sim`: a tiny real run in Genesis writes a checkpoint the learner and actor accept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hilserl.metrics import read_metrics
from hilserl.policies import PolicyConfig, build_agent
from hilserl.policies.observation import FrameStacker
from hilserl.sim.demo_buffer import DemoBuffer
from hilserl.sim.rollout import Episode
from hilserl.tools import infer_sim, pretrain
from hilserl.replay.demos import DEMOS_FILE, read_demos
from hilserl.weights.checkpoint import load_agent_weights, load_inference_policy, read_config_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "reach"
TINY = ["--expert-demos", "2", "--bc-updates", "3", "--dagger-rounds", "1", "--dagger-episodes", "1",
        "--dagger-updates", "2", "--rl-steps", "1", "--rl-actor-delay", "1", "--eval-episodes", "1",
        "--batch-size", "4", "--hidden-dim", "32", "--no-tensorboard", "--fp16", "--critic-rollouts", "1",
        "--critic-updates", "2", "--ship-demos", "1"]


def test_demo_buffer_rebuilds_the_stacks_frame_stacker_builds():
    config = PolicyConfig(frame_stack=3, image_size=16, state_dim=8)
    rng = np.random.default_rng(0)
    buffer = DemoBuffer((3, 16, 16), 8, 8, 3)
    expected = []
    for length in (4, 2):  # two episodes: stacks must not reach across the episode boundary
        stacker, episode = FrameStacker(config), Episode(seed=length)
        for t in range(length + 1):
            frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            stacked = stacker.push([frame])
            episode.frames.append(stacked[-3:])
            episode.states.append(np.full(8, t, dtype=np.float32))
            expected.append(stacked)
            if t < length:
                episode.actions.append(np.full(8, t / 10, dtype=np.float32))
                episode.rewards.append(float(t))
        episode.terminated = length == 2
        buffer.add(episode)
    assert len(buffer) == 6 and buffer.n_frames == 8
    # transition i's observation is frame_idx[i]; compare with what the stacker produced at that frame
    for i in range(len(buffer)):
        f = buffer.frame_idx[i]
        got = buffer.stacked(np.array([f]), buffer.start_idx[[i]])[0]
        np.testing.assert_array_equal(got, expected[f])
        nxt = buffer.stacked(np.array([f + 1]), buffer.start_idx[[i]])[0]
        np.testing.assert_array_equal(nxt, expected[f + 1])
    # as the learner's buffers take them: an episode's end is terminal only where the task ended it (the second)
    ends = [(key, t.step, t.terminated, t.truncated) for key, t in buffer.transitions() if t.terminated or t.truncated]
    assert ends == [(0, 3, False, True), (1, 1, True, False)]
    states = [t.state[0] for _, t in buffer.transitions()]
    assert states == [0, 1, 2, 3, 0, 1]


def test_bad_flags_are_refused_with_a_reason(capsys):
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--out", "x", "--expert-demos", "0"])
    assert "--expert-demos > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--out", "x", "--augment-pad", "-1"])
    assert "--augment-pad must be >= 0" in capsys.readouterr().err
    assert pretrain.parse_args(["--out", "x"]).augment_pad == 4  # DrQ-v2's shift unless told otherwise
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--out", "x", "--colour-jitter", "1.5"])
    assert "--colour-jitter must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert pretrain.parse_args(["--out", "x"]).colour_jitter == 0.0  # off unless asked for
    with pytest.raises(SystemExit):
        infer_sim.parse_args(["--checkpoint", "x", "--video", "out.avi"])
    assert ".gif or .mp4" in capsys.readouterr().err


def test_infer_sim_reports_a_missing_checkpoint(tmp_path, capsys):
    assert infer_sim.main(["--checkpoint", str(tmp_path / "nothing")]) == 1
    assert "no policy config" in capsys.readouterr().err


pytest.importorskip("genesis")


@pytest.fixture(scope="module")
def task():
    from hilserl.sim.task import PandaTask, TaskConfig

    return PandaTask(TaskConfig(task="reach"))


@pytest.fixture(scope="module")
def tiny_run(task, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    args = pretrain.parse_args(["--out", str(root / "ckpt"), "--run-dir", str(root / "run"), *TINY,
                                "--colour-jitter", "0.3"])  # cloning with both augmentations
    trainer = pretrain.Pretrainer(args, task=task)
    out = trainer.run()
    trainer.metrics.close()
    return root, out, trainer


def test_tiny_pretrain_writes_a_checkpoint_learner_and_actor_accept(tiny_run):
    root, out, trainer = tiny_run
    config, doc = read_config_file(out)
    assert config.policy == "drqv2" and config.state_dim == 8 and config.hidden_dim == 32
    assert doc["storage_dtype"] == "float16"
    policy = load_inference_policy(out)  # strict: every inference tensor present, nothing extra
    agent = build_agent(config)
    assert load_agent_weights(agent, out) == []  # critic and target included: no fresh initialisation
    # the state normalisation comes from the demonstrations, not the identity it is built with
    demo_frames = trainer.progress["state_norm"]["frames"]
    assert 0 < demo_frames < trainer.buffer.n_frames  # the expert demos, before the dagger data
    mean, std = trainer.buffer.state_statistics(pretrain.STATE_STD_FLOOR, frames=demo_frames)
    np.testing.assert_allclose(policy.state_norm.mean.numpy(), mean, rtol=2e-3, atol=1e-4)  # float16 storage
    np.testing.assert_allclose(policy.state_norm.std.numpy(), std, rtol=1e-3)
    assert not torch.equal(policy.state_norm.std, torch.ones(8))
    progress = json.loads((root / "run" / "progress.json").read_text())
    assert progress["stages_done"] == ["demos", "bc", "dagger1", "critic", "rl"]
    metrics = read_metrics(root / "run" / "pretrain" / "metrics.csv")
    assert {"train/bc_loss", "eval/success_rate", "train/critic_loss", "episode/success"} <= set(metrics)
    assert len(metrics["eval/success_rate"]) == 4  # after bc, dagger1, critic and rl
    rl_steps = int(metrics["rl/episode_length"][0][2])
    assert progress["updates"] == 3 + 2 + 2 + rl_steps  # bc + dagger + critic + one DrQ-v2 update per rl env step
    demos = read_demos(out / DEMOS_FILE, config)  # the first expert episode, every step flagged a demonstration
    assert demos[-1].terminated or demos[-1].truncated
    assert all(t.intervention and t.weights_version == 0 for t in demos) and len({t.episode for t in demos}) == 1
    best = doc["pretrain"]["progress"]["best"]
    assert best["stage"] in progress["stages_done"] and doc["step"] == best["updates"]


def test_init_trains_the_critic_and_keeps_actor_and_encoder_bit_identical(tiny_run, task):
    root, out, _ = tiny_run
    args = pretrain.parse_args(["--init", str(out), "--out", str(root / "init"), "--run-dir", str(root / "init-run"),
                                "--expert-demos", "2", "--critic-rollouts", "1", "--critic-updates", "3",
                                "--ship-demos", "2", "--batch-size", "4", "--no-tensorboard", "--fp16"])
    trainer = pretrain.Pretrainer(args, task=task)
    trainer.run()
    trainer.metrics.close()
    before, after = load_file(str(out / "model.safetensors")), load_file(str(root / "init" / "model.safetensors"))
    config, doc = read_config_file(root / "init")
    inference = set(load_inference_policy(root / "init").state_dict())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in inference)  # actor, encoder, joint normalisation
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("critic."))
    assert doc["critic_pretrain"]["progress"]["critic"]["updates"] == 3 and "pretrain" in doc  # both records
    demos = read_demos(root / "init" / DEMOS_FILE, config)
    assert len({t.episode for t in demos}) == 2 and all(t.frames.shape == (3, 84, 84) for t in demos)


def test_a_task_built_for_another_cell_is_refused(tiny_run, task):
    root, out, _ = tiny_run
    args = pretrain.parse_args(["--continue-from", str(out), "--out", str(root / "shifted"), "--run-dir",
                                str(root / "shifted-run"), "--variant", "shifted", "--no-tensorboard"])
    with pytest.raises(ValueError, match="not --variant shifted's: .*'camera_offset'"):
        pretrain.Pretrainer(args, task=task)


def test_continue_from_clones_on_from_the_checkpoint_with_its_config_and_joint_normalisation(tiny_run, task):
    """`--continue-from`: the checkpoint's policy config and joint normalisation are kept, cloning and a DAgger
    round driven by the sampled policy alone change its weights, the update count goes on from the checkpoint's
    `step`, and the starting checkpoint's record is kept beside the new one."""
    root, out, _ = tiny_run
    start_config, start_doc = read_config_file(out)
    args = pretrain.parse_args(["--continue-from", str(out), "--out", str(root / "more"), "--run-dir",
                                str(root / "more-run"), "--expert-demos", "1", "--bc-updates", "2",
                                "--dagger-rounds", "1", "--dagger-episodes", "1", "--dagger-updates", "2",
                                "--dagger-beta", "0", "--eval-sampled", "--eval-episodes", "1", "--critic-updates", "0",
                                "--batch-size", "4", "--no-tensorboard", "--fp16", "--ship-demos", "1"])
    trainer = pretrain.Pretrainer(args, task=task)
    trainer.run()
    trainer.metrics.close()
    config, doc = read_config_file(root / "more")
    assert config.fingerprint() == start_config.fingerprint()  # --hidden-dim etc. came from the checkpoint
    before, after = load_file(str(out / "model.safetensors")), load_file(str(root / "more" / "model.safetensors"))
    assert before.keys() == after.keys()
    norm = [k for k in before if "state_norm" in k]
    assert norm and all(torch.equal(before[k], after[k]) for k in norm)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("actor."))
    progress = doc["pretrain"]["progress"]
    assert progress["stages_done"] == ["demos", "bc", "dagger1"]
    assert progress["updates"] == start_doc["step"] + 2 + 2
    assert progress["best"]["sampled"] and doc["step"] == progress["best"]["updates"] > start_doc["step"]
    assert doc["continued_from"]["step"] == start_doc["step"]
    assert doc["continued_from"]["pretrain"]["progress"] == start_doc["pretrain"]["progress"]


def test_tiny_discrete_gripper_pretrain_clones_commands_and_the_critic_stage_holds_the_grasp_critic(tmp_path):
    """`--gripper discrete` on lift: the executed gripper values and the expert's labels are commands, the
    checkpoint's inference state (grasp critic included) loads strictly, and `--init` (on the checkpoint's task)
    keeps all of it bit for bit."""
    from hilserl.policies.inference import GRIPPER_COMMANDS
    from hilserl.sim.task import PandaTask, TaskConfig

    lift = PandaTask(TaskConfig(task="lift", image_size=32, episode_steps=6))
    common = ["--action-space", "ee_delta", "--gripper", "discrete", "--grasp-epsilon", "0.5", "--image-size", "32",
              "--episode-steps", "6", "--expert-demos", "2", "--critic-rollouts", "1", "--eval-episodes", "1",
              "--batch-size", "4", "--hidden-dim", "32", "--no-tensorboard", "--fp16"]
    runs = []
    for extra in (["--task", "lift", "--bc-updates", "3", "--dagger-rounds", "0", "--critic-updates", "0"],
                  ["--init", str(tmp_path / "cloned"), "--critic-updates", "3"]):  # --init: the checkpoint's task
        name = "critic" if "--init" in extra else "cloned"
        args = pretrain.parse_args(["--out", str(tmp_path / name), "--run-dir", str(tmp_path / f"{name}-run"),
                                    *common, *extra])
        trainer = pretrain.Pretrainer(args, task=lift)
        trainer.run()
        trainer.metrics.close()
        runs.append(trainer)
    config, _ = read_config_file(tmp_path / "cloned")
    assert (config.gripper, config.grasp_epsilon, config.action_dim) == ("discrete", 0.5, 4)
    policy = load_inference_policy(tmp_path / "cloned")  # strict: the grasp critic is inference state
    assert any(k.startswith("grasp_critic.") for k in policy.state_dict())
    buffer = runs[0].buffer
    assert set(np.unique(buffer.labels[:, -1])) <= set(GRIPPER_COMMANDS)  # the expert's commands
    arm_noise = buffer.actions[:, :3] - buffer.labels[:, :3]
    assert np.abs(arm_noise).max() > 0.01  # the arm's values got Gaussian noise, the gripper random commands
    assert load_agent_weights(build_agent(config), tmp_path / "critic") == []
    before, after = load_file(str(tmp_path / "cloned" / "model.safetensors")), load_file(
        str(tmp_path / "critic" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in policy.state_dict())  # grasp critic held too
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("critic."))


def test_resume_runs_only_the_stages_not_done(tiny_run, task):
    root, _, first = tiny_run
    before = json.loads((root / "run" / "progress.json").read_text())
    args = pretrain.parse_args(["--out", str(root / "ckpt2"), "--run-dir", str(root / "run"), "--resume",
                                *TINY[:5], "2", *TINY[6:]])  # --dagger-rounds 2
    trainer = pretrain.Pretrainer(args, task=task)
    assert len(trainer.buffer) == len(first.buffer)  # the dataset came back from disk
    trainer.run()
    trainer.metrics.close()
    after = json.loads((root / "run" / "progress.json").read_text())
    assert after["stages_done"] == before["stages_done"] + ["dagger2"]
    assert after["updates"] == before["updates"] + 2  # only dagger2's cloning updates
    assert len(trainer.buffer) > len(first.buffer)


def test_run_checkpoint_in_sim_writes_a_gif(tiny_run, task, tmp_path):
    _, out, _ = tiny_run
    policy = load_inference_policy(out).eval()
    lines = []
    video = tmp_path / "episode.gif"
    summary = infer_sim.run_checkpoint(policy, task, episodes=1, seed=4, deterministic=True, video=str(video),
                                       log=lines.append)
    assert summary["episodes"] == 1 and summary["seeds"] == [4, 4] and 0.0 <= summary["success_rate"] <= 1.0
    assert len(lines) == 1 and lines[0].startswith("episode 0 (seed 4): success=")
    import imageio.v2 as imageio

    frames = imageio.mimread(video)
    steps = int(lines[0].rsplit("steps=", 1)[1])
    assert len(frames) == steps + 1 and frames[0].shape[:2] == (84 * infer_sim.VIDEO_SCALE,) * 2


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint in the tree")
def test_shipped_reach_checkpoint_reaches(task):
    config, doc = read_config_file(SHIPPED)
    assert doc["storage_dtype"] == "float16" and (SHIPPED / "model.safetensors").stat().st_size < 15e6
    build = build_agent(config)
    assert load_agent_weights(build, SHIPPED) == []  # the learner loads it whole
    policy = load_inference_policy(SHIPPED).eval()
    summary = infer_sim.run_checkpoint(policy, task, episodes=4, seed=777, deterministic=True, log=lambda _: None)
    assert summary["success_rate"] >= 0.75, summary


SHIPPED_LIFT = REPO / "checkpoints" / "lift"


@pytest.mark.skipif(not (SHIPPED_LIFT / "model.safetensors").is_file(), reason="no shipped lift checkpoint")
def test_shipped_lift_checkpoint_loads_whole_with_its_grasp_critic_and_demos():
    from hilserl.policies.inference import GRIPPER_COMMANDS

    config, doc = read_config_file(SHIPPED_LIFT)
    assert (config.action_space, config.ee_axes, config.gripper) == ("ee_delta", "xyz", "discrete")
    assert infer_sim.trained_task(doc) == "lift" and doc["storage_dtype"] == "float16"
    assert load_agent_weights(build_agent(config), SHIPPED_LIFT) == []  # the learner loads it whole
    policy = load_inference_policy(SHIPPED_LIFT)  # strict, grasp critic included
    assert policy.grasp_critic is not None
    demos = read_demos(SHIPPED_LIFT / DEMOS_FILE, config)
    assert len({t.episode for t in demos}) == 20
    executed = np.array([t.action[-1] for t in demos])
    assert (executed == -1).any()  # the expert closed on the cube
    # commands (a finger read a hair past its limit, or an open near it, moves less than a full step)
    assert np.isin(executed.round(2), GRIPPER_COMMANDS).mean() > 0.95
