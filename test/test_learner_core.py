"""The learner core and its training schedule, without ROS: real agent, real buffers, real files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hilserl.control.episode import Transition
from hilserl.health import ERROR, OK
from hilserl.nodes.params import LEARNER_PARAMS
from hilserl.training.learner import LearnerCore, LearnerSettings
from hilserl.training.loop import TrainingLoop, TrainSchedule
from hilserl.weights.codec import decode_weights
from rosutil import init_checkpoint

SMALL = ("--image-size", "16", "--hidden-dim", "32")


def test_parameter_defaults_are_the_settings_defaults():
    defaults = LearnerSettings()
    for spec in LEARNER_PARAMS:
        if hasattr(defaults, spec.name):
            assert getattr(defaults, spec.name) == spec.default, spec.name


def test_schedule_owes_updates_by_the_utd_ratio_and_publishes_and_saves_on_schedule():
    with pytest.raises(ValueError):
        TrainSchedule(batch_size=0)
    calls = []

    class Agent:
        def update(self, batch, step, update_actor=True, bc_weight=0.0, encoder_bc_weight=0.0):
            return {"loss": float(step)}
    loop = TrainingLoop(Agent(), lambda n: n, TrainSchedule(batch_size=2, utd_ratio=0.5, warmup_transitions=4,
                                                            publish_every_updates=2, checkpoint_every_updates=3),
                        publish=calls.append, save=lambda: calls.append("save"))
    loop.transitions_added(3)
    assert loop.updates_owed(stored=3) == 0  # still warming up
    loop.transitions_added(7)
    assert loop.updates_owed(stored=10) == 5
    assert loop.train_some(10, max_updates=10) == 5 and loop.updates_owed(10) == 0
    assert calls == ["training", "save", "training"] and loop.counters.last_metrics == {"loss": 4.0}


def transitions(episode: int, steps: int, config) -> list[Transition]:
    rng = np.random.default_rng(episode)
    out = []
    for k in range(steps):
        end = k == steps - 1
        out.append(Transition(episode=episode, step=k,
                              frames=rng.integers(0, 255, (3, config.image_size, config.image_size), np.uint8),
                              state=np.zeros(8, np.float32), action=rng.uniform(-1, 1, 8).astype(np.float32),
                              reward=-1.0, terminated=end, truncated=False, intervention=k < 3, success=end,
                              final_frames=np.zeros((3, config.image_size, config.image_size), np.uint8) if end else None,
                              final_state=np.zeros(8, np.float32) if end else None))
    return out


def test_core_trains_publishes_resumes_and_reports_errors(tmp_path):
    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "3", *SMALL)["path"]
    sent = []
    settings = LearnerSettings(batch_size=8, warmup_transitions=10, publish_every_updates=5, n_step=2)
    core = LearnerCore(ckpt, settings, publish=lambda payload, meta, reason: sent.append((meta, reason)),
                       state_dir=tmp_path / "state", device="cpu")
    core.publish_weights("start-up")
    assert core.health().level == OK and "warm-up: 0/10" in core.waiting_for()
    core.store_batch("/actor#a", transitions(0, 6, core.agent.config))
    assert core.train_step() == 0 and core.waiting_for().startswith("warm-up")
    core.store_batch("/actor#a", transitions(1, 6, core.agent.config))
    updates = 0
    while core.train_step():
        updates += 1
    assert updates == 12 and core.learner_step == 12 and core.waiting_for().startswith("update-to-data")
    assert [m.weights_version for m, _ in sent] == [1, 2, 3] and sent[-1][1] == "training"
    assert json.loads((tmp_path / "state" / "run.json").read_text())["weights_version"] == 3
    assert core.buffer_sizes() == {"online": 12, "interventions": 6}
    core.save_state()

    again = LearnerCore(ckpt, settings, publish=lambda *a: sent.append(a[1:]), state_dir=tmp_path / "state")
    assert again.resumed and again.run_id == core.run_id and again.learner_step == 12
    again.publish_weights("resumed")
    assert sent[-1][0].weights_version == 4  # versions continue upward

    core.agent.update = lambda batch, step, **options: 1 / 0  # an exception in the update is an error, not "waiting"
    core.store_batch("/actor#a", transitions(2, 6, core.agent.config))
    with pytest.raises(ZeroDivisionError):
        core.train_step()
    report = core.health()
    assert report.level == ERROR and "ZeroDivisionError" in report.message and core.train_step() == 0


def test_a_clearly_worse_version_is_rolled_back_with_a_warning_and_the_best_tensors_again(tmp_path):
    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "4", *SMALL)["path"]
    sent, logged, warned = [], [], []
    settings = LearnerSettings(batch_size=8, warmup_transitions=10_000, guard_min_episodes=4, guard_window=5)
    core = LearnerCore(ckpt, settings, publish=lambda payload, meta, reason: sent.append((meta, reason)),
                       state_dir=tmp_path / "state", log=logged.append, warn=warned.append)
    core.publish_weights("start-up")
    for episode in range(5):
        core.store_batch("/actor#a", policy_episode(episode, core.agent.config, version=1, success=True))
    core.apply_guard()
    assert not warned and len(sent) == 1  # nothing worse yet
    core.agent.inference.actor.trunk[0].weight.data.add_(1.0)  # what training would change
    core.publish_weights("training")
    for episode in range(5, 10):
        core.store_batch("/actor#a", policy_episode(episode, core.agent.config, version=2, success=False))
    core.apply_guard()
    assert len(warned) == 1 and warned[0].startswith("guard: rollback to v1") and not any("guard" in m for m in logged)
    (v1, _), (v2, _), (v3, reason) = sent
    assert reason == "rollback to v1" and v3.weights_version == 3
    assert v3.digest == v1.digest != v2.digest  # the best version's exact tensors, under a new number
    assert core.health().level != ERROR and "rollback" in core.health().message


def policy_episode(episode: int, config, version: int, success: bool) -> list[Transition]:
    """An episode the policy acted all of (no interventions), by weights `version`."""
    out = transitions(episode, 3, config)
    for t in out:
        t.intervention, t.weights_version = False, version
    out[-1].success = success
    return out


def test_swap_checkpoint_refuses_another_config(tmp_path):
    ckpt = init_checkpoint(tmp_path / "a", "drqv2", "--seed", "1", *SMALL)["path"]
    other = init_checkpoint(tmp_path / "b", "drqv2", "--seed", "2", "--image-size", "24")["path"]
    same = init_checkpoint(tmp_path / "c", "drqv2", "--seed", "2", *SMALL)["path"]
    payloads = []
    core = LearnerCore(ckpt, LearnerSettings(training=False), publish=lambda p, m, r: payloads.append(p))
    with pytest.raises(ValueError, match="config differs"):
        core.swap_checkpoint(other)
    core.publish_weights("start-up")
    core.swap_checkpoint(same)
    core.publish_weights("swap")
    digests = [decode_weights(p)[0].digest for p in payloads]
    assert digests[0] != digests[1] and core.health().level == OK


def test_a_pixels_only_ee_learner_refuses_an_arm_with_another_joint_count_before_journalling_it(tmp_path):
    from hilserl.replay.wire import encode_transitions

    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "5", "--action-space", "ee_delta", *SMALL)["path"]
    settings = LearnerSettings(batch_size=8, warmup_transitions=10_000, load_demos=False)
    core = LearnerCore(ckpt, settings, publish=lambda *a: None, state_dir=tmp_path / "state")
    config = core.agent.config
    assert config.state_dim == 0 and core.stored_joints() is None  # the config does not fix the joint count

    def batch(stream: str, joints: int) -> bytes:
        rows = transitions(0, 3, config)
        for t in rows:
            t.state, t.action = np.zeros(joints, np.float32), np.zeros(config.action_dim, np.float32)
            t.final_state = None if t.final_state is None else np.zeros(joints, np.float32)
        return encode_transitions(rows, actor_id=stream, seq=1, config_fingerprint=config.fingerprint())

    assert not core.intake.offer(batch("/panda#1", 9)).is_rejection
    assert core.stored_joints() == 9 and core.buffer_sizes()["online"] == 3
    answer = core.intake.offer(batch("/ur5#1", 6))  # a second arm with six joints
    assert answer.is_rejection and "the learner's buffers hold 9" in answer.reason, answer
    assert core.buffer_sizes()["online"] == 3
    journalled = sorted(p.name for p in (tmp_path / "state" / "journal").rglob("*") if p.is_file())
    assert not any(name.endswith(".safetensors") for name in journalled if "ur5" in name), journalled


def demonstration(episode: int, steps: int, config, action: np.ndarray) -> list[Transition]:
    """A whole episode a person drove, always commanding `action`."""
    out = transitions(episode, steps, config)
    for t in out:
        t.intervention, t.action = True, action.copy()
    return out


def test_a_cloning_phase_learns_a_persons_first_demonstrations_before_rl_and_only_once(tmp_path):
    import torch

    from hilserl.policies.actor_critic import cloning_loss

    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "5", *SMALL)["path"]
    sent = []
    settings = LearnerSettings(batch_size=8, warmup_transitions=10, n_step=2, load_demos=False, clone_updates=60,
                               clone_after=12, clone_lr=1e-3, clone_batch_size=8)
    core = LearnerCore(ckpt, settings, publish=lambda payload, meta, reason: sent.append((meta, reason)),
                       state_dir=tmp_path / "state")
    core.publish_weights("start-up")
    config = core.agent.config
    for episode in range(4):  # 12 transitions of the policy's own: warm-up is met, but RL waits for the cloning
        core.store_batch("/actor#a", policy_episode(episode, config, version=1, success=False))
    assert "cloning waits for a person's demonstrations: 0/12" in core.waiting_for() and core.train_step() == 0
    assert core.health().values["training"].startswith("cloning waits")

    demonstrated = np.full(config.action_dim, 0.5, np.float32)
    for episode in range(4, 6):
        core.store_batch("/actor#a", demonstration(episode, 6, config, demonstrated))
    assert core.waiting_for() == ""
    probe = core.demos.sample(32, np.random.default_rng(0))

    def loss() -> float:
        with torch.no_grad():
            return cloning_loss(core.agent.inference.eval(), probe.pixels, probe.state, probe.action).item()
    before = loss()
    steps = 0
    while core.cloning_pending():
        assert core.train_step() == 1 and core.learner_step == 0  # cloning steps are not RL updates
        steps += 1
    assert steps == 60 and loss() < 0.2 * before, (before, loss())
    meta, reason = sent[-1]
    assert reason == "cloned on 12 intervention transitions" and meta.weights_version == 2
    assert core.health().values["clone_updates_done"] == "60/60" and "clone_loss" in core.last_metrics()

    assert core.train_step() == 1 and core.learner_step == 1  # then reinforcement learning
    core.save_state()
    again = LearnerCore(ckpt, settings, publish=lambda *a: None, state_dir=tmp_path / "state")
    assert again.resumed and not again.cloning_pending() and "cloning" not in again.waiting_for()


def test_a_checkpoint_swapped_in_is_the_one_cloned_and_keeps_the_encoder_rate(tmp_path):
    import torch

    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "6", *SMALL)["path"]
    other = init_checkpoint(tmp_path / "other", "drqv2", "--seed", "7", *SMALL)["path"]
    settings = LearnerSettings(batch_size=8, n_step=2, load_demos=False, encoder_lr_scale=0.1, clone_updates=5,
                               clone_after=6, clone_batch_size=4)
    core = LearnerCore(ckpt, settings, publish=lambda *a: None, state_dir=tmp_path / "state")
    config = core.agent.config
    core.store_batch("/actor#a", demonstration(0, 6, config, np.full(config.action_dim, 0.5, np.float32)))
    assert core.train_step() == 1  # one cloning step into the first checkpoint's agent
    old = core.agent
    core.swap_checkpoint(other)
    new = core.agent
    before = {k: v.clone() for k, v in new.inference.state_dict().items()}
    old_weights = {k: v.clone() for k, v in old.inference.state_dict().items()}
    assert core.train_step() == 1 and core.cloning.done == 2
    changed = [k for k, v in new.inference.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("actor") for k in changed)
    assert all(torch.equal(v, old_weights[k]) for k, v in old.inference.state_dict().items())
    assert [g["lr"] for g in new.encoder_opt.param_groups] == pytest.approx([0.1 * new.hyper.lr])


def test_cloning_comes_back_in_rounds_on_a_persons_corrections_and_a_restart_owes_only_what_is_left(tmp_path):
    """clone_every: after the first round, each `every` more intervention transitions owe another round, which
    clones the corrections too and publishes; a restart on the same state owes only the rounds not done."""
    import torch

    from hilserl.policies.actor_critic import cloning_loss
    from hilserl.replay.wire import encode_transitions

    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "8", *SMALL)["path"]
    sent = []
    settings = LearnerSettings(batch_size=8, warmup_transitions=10, n_step=2, load_demos=False, clone_updates=40,
                               clone_after=12, clone_every=10, clone_lr=1e-3, clone_batch_size=8)
    core = LearnerCore(ckpt, settings, publish=lambda payload, meta, reason: sent.append((meta, reason)),
                       state_dir=tmp_path / "state")
    config = core.agent.config
    seq = iter(range(1, 100))

    def drive(core, rows) -> None:  # through the intake, so that a restart replays them from the journal
        answer = core.intake.offer(encode_transitions(rows, actor_id="/actor#a", seq=next(seq),
                                                      config_fingerprint=config.fingerprint()))
        assert not answer.is_rejection, answer
    drive(core, demonstration(0, 12, config, np.full(config.action_dim, 0.5, np.float32)))
    while core.cloning_pending():
        assert core.train_step() == 1
    assert core.cloning.done == 40 and sent[-1][1] == "cloned on 12 intervention transitions"
    assert core.health().values["clone_updates_done"] == "40/40"
    for _ in range(3):
        assert core.train_step() == 1 and not core.cloning_pending()  # RL between the rounds
    rl_updates = core.learner_step

    # Corrections: 9 more transitions owe nothing yet, the 10th a round, which learns their action.
    corrected = np.full(config.action_dim, -0.5, np.float32)
    drive(core, demonstration(1, 9, config, corrected))
    assert not core.cloning_pending() and core.cloning.due(core.interventions_stored) == 40
    drive(core, demonstration(2, 6, config, corrected))
    assert core.cloning_pending() and core.cloning.due(core.interventions_stored) == 80
    assert core.health().values["clone_updates_done"] == "40/80"
    probe = core.demos.sample(64, np.random.default_rng(1))
    mask = probe.action[:, 0] < 0  # rows of the corrections

    def loss() -> float:
        with torch.no_grad():
            policy = core.agent.inference.eval()
            state = None if probe.state is None else probe.state[mask]
            return cloning_loss(policy, probe.pixels[mask], state, probe.action[mask]).item()
    before = loss()
    while core.cloning_pending():
        assert core.train_step() == 1
    assert core.learner_step == rl_updates  # cloning steps are not RL updates
    assert loss() < 0.5 * before, (before, loss())
    assert [reason for _, reason in sent if reason.startswith("cloned")] == [
        "cloned on 12 intervention transitions", "cloned on 27 intervention transitions"]

    core.save_state()
    again = LearnerCore(ckpt, settings, publish=lambda *a: None, state_dir=tmp_path / "state")
    assert again.resumed and again.interventions_stored == 27 and again.cloning.done == 80
    assert not again.cloning_pending()  # the journal's 27 owe two rounds, both done
    drive(again, demonstration(3, 5, config, corrected))  # 32: a third round
    assert again.cloning_pending() and again.cloning.due(again.interventions_stored) == 120


def test_a_cloning_round_can_end_on_the_moving_average_of_its_weights(tmp_path):
    """clone_average: the round's steps are those of a learner without it (same seeds, same data), and the
    weights it ends on, publishes and goes on from are their exponential moving average."""
    import torch

    ckpt = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "9", *SMALL)["path"]
    runs = {}
    for average in (0.0, 0.8):
        sent, steps = [], []
        settings = LearnerSettings(batch_size=8, warmup_transitions=10, n_step=2, load_demos=False, clone_updates=6,
                                   clone_after=12, clone_lr=1e-3, clone_batch_size=8, clone_average=average)
        core = LearnerCore(ckpt, settings, publish=lambda payload, meta, reason: sent.append(payload),
                           state_dir=tmp_path / f"state{average}")
        config = core.agent.config
        core.store_batch("/actor#a", demonstration(0, 12, config, np.full(config.action_dim, 0.5, np.float32)))
        torch.manual_seed(0)
        while core.cloning_pending():
            assert core.train_step() == 1
            steps.append([p.detach().clone() for p in core.agent.inference.parameters()])
        runs[average] = steps, decode_weights(sent[-1])[1], dict(core.agent.inference.named_parameters())
    raw, _, _ = runs[0.0]
    averaged = [w.clone() for w in raw[0]]
    for step in raw[1:]:
        averaged = [0.8 * a + 0.2 * w for a, w in zip(averaged, step)]
    steps, published, params = runs[0.8]
    for before, during in zip(raw[:-1], steps[:-1]):  # the steps themselves are unchanged
        assert all(torch.equal(a, b) for a, b in zip(before, during))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(averaged, steps[-1]))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(raw[-1], steps[-1]))  # the average is not the last
    shared = [n for n in params if n in published]  # what went out is what the learner goes on from
    assert len(shared) == len(params)
    assert all(torch.allclose(published[n].float(), params[n].detach(), atol=1e-6) for n in shared)
    with pytest.raises(ValueError, match="average 1"):
        LearnerCore(ckpt, LearnerSettings(clone_updates=5, clone_average=1.0, load_demos=False),
                    publish=lambda *a: None, state_dir=tmp_path / "bad")
