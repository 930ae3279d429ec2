"""The learned reward: labelled frames on disk, the decision rule, a classifier trained on Genesis frames through
the real commands, and what the actor's episode rules do with its success."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hilserl.control.rules import EpisodeRules
from hilserl.control.steps import StepReport
from hilserl.reward.decision import SuccessDecision
from hilserl.reward.frames import FramesError, FrameWriter, read_frames
from rosutil import REPO, ros_env

STATE, ACTION = np.zeros(8), np.zeros(8)


def random_frames(rng, n, channels=3, size=16):
    return [rng.integers(0, 256, (channels, size, size), dtype=np.uint8) for _ in range(n)]


# -- frames on disk ------------------------------------------------------------------------------------
def test_frames_round_trip_exactly_across_shards_and_appends(tmp_path):
    rng = np.random.default_rng(0)
    written = random_frames(rng, 13, channels=6)  # two cameras
    labels = [bool(v) for v in rng.integers(0, 2, 13)]
    writer = FrameWriter(tmp_path, source="test", shard_frames=4)
    for i, (frames, label) in enumerate(zip(written, labels)):
        writer.add(frames, label)
        if i in (4, 9):
            writer.end_episode()
    writer.close()
    data = read_frames(tmp_path)
    assert data.frames.tobytes() == np.stack(written).tobytes() and data.frames.dtype == np.uint8
    assert data.success.tolist() == labels
    assert data.episode.tolist() == [0] * 5 + [1] * 5 + [2] * 3
    assert data.step.tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1, 2]
    assert (data.num_cameras, data.image_size) == (2, 16)

    more = FrameWriter(tmp_path)  # appending: new episode ids, next shard numbers
    more.add(written[0], True)
    more.close()
    again = read_frames(tmp_path)
    assert again.episode[-1] == 3 and again.success[-1] and len(again) == 14
    with pytest.raises(FramesError, match="do not fit"):
        FrameWriter(tmp_path).add(random_frames(rng, 1, channels=3)[0], False)  # another camera count
    with pytest.raises(FramesError, match="uint8"):
        FrameWriter(tmp_path).add(np.zeros((6, 16, 16), np.float32), False)
    assert read_frames(tmp_path).frames.tobytes() == again.frames.tobytes()  # a refused frame loses nothing


def test_a_folder_without_frames_or_with_a_corrupt_shard_is_refused(tmp_path):
    with pytest.raises(FramesError, match="no frame shards"):
        read_frames(tmp_path)
    (tmp_path / "frames-00000.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(FramesError, match="pickle"):
        read_frames(tmp_path)


# -- the decision rule ---------------------------------------------------------------------------------
def test_success_needs_confirm_steps_in_a_row_above_the_threshold():
    decision = SuccessDecision(threshold=0.8, confirm_steps=3)
    assert [decision.update(p) for p in (0.9, 0.95, 0.8, 0.9, 0.99)] == [False, False, False, False, False]
    assert decision.update(0.85) is True  # 0.9, 0.99, 0.85: three in a row (0.8 itself is not above)
    assert decision.update(0.9) is True
    assert decision.update(0.2) is False and decision.streak == 0  # a dip starts the count again
    decision.update(0.9), decision.update(0.9)
    decision.reset()  # a new episode
    assert decision.update(0.9) is False
    once = SuccessDecision(0.5, 1)
    assert once.update(0.51) and not once.update(0.5)
    for threshold, steps in ((0.0, 1), (1.0, 1), (0.5, 0)):
        with pytest.raises(ValueError):
            SuccessDecision(threshold, steps)


def test_the_threshold_chosen_is_the_lowest_that_keeps_false_positives_under_the_target():
    from hilserl.reward.training import MAX_THRESHOLD, MIN_THRESHOLD, choose_threshold, score_probabilities

    rng = np.random.default_rng(4)
    success = np.r_[np.zeros(1000, bool), np.ones(300, bool)]
    probability = np.r_[rng.beta(1, 8, 1000), rng.beta(8, 1, 300)]
    probability[:20] = np.linspace(0.6, 0.99, 20)  # 2% of the negatives confidently wrong
    for target in (0.0, 0.005, 0.01, 0.05):
        threshold = choose_threshold(probability, success, target)
        assert score_probabilities(probability, success, threshold).false_positive_rate <= target
        lower = max(threshold - 1e-6, MIN_THRESHOLD)
        assert lower == threshold or score_probabilities(probability, success, lower).false_positive_rate > target
    assert choose_threshold(probability, success, 0.005) == pytest.approx(probability[14])  # 5 of 1000 above
    assert choose_threshold(np.full(4, 0.1), np.zeros(4, bool), 0.0) == MIN_THRESHOLD  # never below 0.5
    assert choose_threshold(np.ones(4), np.zeros(4, bool), 0.0) == MAX_THRESHOLD  # a probability is below 1


def test_the_shipped_lift_classifier_loads_strictly_and_fits_the_lift_policys_cameras():
    from hilserl.reward.classifier import load_classifier, stored_threshold
    from hilserl.weights.checkpoint import read_config_file

    model, doc = load_classifier(REPO / "checkpoints" / "lift_reward")
    policy = read_config_file(REPO / "checkpoints" / "lift")[0]
    # it watches the first of the policy's cameras (the front one), at the policy's image size
    assert model.config.num_cameras <= policy.num_cameras and model.config.image_size == policy.image_size
    assert model.digest() == doc["digest"] and 0.5 <= stored_threshold(doc) < 1.0
    assert doc["training"]["held_out_scores"]["false_positive_rate"] <= 0.005  # where the threshold was chosen


# -- what the episode rules do with the classifier's label -----------------------------------------------
def test_a_classifier_label_ends_the_episode_as_a_success_with_reward_1_on_hardware():
    sent, episodes = [], []
    rules = EpisodeRules(sent.append, episodes.append)
    frames = np.zeros((3, 8, 8), np.uint8)
    assert not rules.can_label(None)  # nothing acted yet: nothing to end
    for _ in range(3):
        assert rules.observe(None, frames, STATE)
        rules.acted(frames, STATE, ACTION, intervention=False)
    assert rules.can_label(None)
    rules.press("success", reward=1.0, source="reward_classifier")
    assert not rules.observe(None, frames, STATE)
    assert [t.reward for t in sent] == [0.0, 0.0, 1.0] and sent[-1].terminated and sent[-1].success
    assert episodes[-1]["label"] == "success" and episodes[-1]["label_source"] == "reward_classifier"
    assert episodes[-1]["return"] == 1.0


def test_a_classifier_label_in_the_sim_replaces_the_closing_reward_and_ignores_ended_steps():
    def report(step, success=False, terminated=False):
        return StepReport(0, step, -0.5 if step else 0.0, terminated, False, success, -0.5 * step, (step, 0))
    sent, episodes = [], []
    rules = EpisodeRules(sent.append, episodes.append)
    frames = np.zeros((3, 8, 8), np.uint8)
    for step in range(2):
        assert rules.observe(report(step), frames, STATE)
        rules.acted(frames, STATE, ACTION, intervention=False)
    rules.press("success", reward=1.0, source="reward_classifier")
    assert not rules.observe(report(2), frames, STATE)
    assert [t.reward for t in sent] == [-0.5, 1.0] and sent[-1].terminated
    assert episodes[-1]["success"] and episodes[-1]["label_source"] == "reward_classifier"
    assert not rules.episode_open(report(3)) and not rules.can_label(report(3))  # summarised: waits for a reset
    person = EpisodeRules(sent.append, episodes.append)
    person.observe(report(0), frames, STATE)
    person.acted(frames, STATE, ACTION, intervention=False)
    assert not person.can_label(report(1, success=True, terminated=True))  # the sim ended it itself
    person.press("success")  # a person's label: the sim's reward stays, no label_source
    person.observe(report(1), frames, STATE)
    assert sent[-1].reward == -0.5 and "label_source" not in episodes[-1]


# -- the classifier ------------------------------------------------------------------------------------
def test_a_policy_encoder_folded_to_one_frame_sees_what_the_policy_sees_on_a_still_stack(tmp_path):
    from hilserl.policies.observation import first_observation
    from hilserl.reward.classifier import ClassifierConfig, RewardClassifier, fold_policy_encoder
    from hilserl.weights.checkpoint import load_inference_policy
    from rosutil import init_checkpoint

    ckpt = init_checkpoint(tmp_path / "policy", "drqv2", "--seed", "3", "--image-size", "32")["path"]
    policy = load_inference_policy(ckpt)
    config = ClassifierConfig(image_size=32, num_cameras=1)
    classifier = RewardClassifier(config)
    classifier.encoder.load_state_dict(fold_policy_encoder(ckpt, config), strict=True)
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    stacked = torch.from_numpy(first_observation(policy.config, [rgb]))[None]  # 3 copies of the frame
    with torch.no_grad():
        expected = policy.encoder(stacked)
        folded = classifier.encoder(stacked[:, :3])
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().sum() > 0


def test_a_two_camera_policy_encoder_folds_to_a_classifier_of_its_first_camera(tmp_path):
    from hilserl.policies import PolicyConfig, build_agent
    from hilserl.reward.classifier import FIRST_CONV, ClassifierConfig, RewardClassifier, fold_policy_encoder
    from hilserl.weights.checkpoint import save_checkpoint
    from hilserl.weights.codec import WeightsError

    config = PolicyConfig(policy="drqv2", image_size=32, num_cameras=2, hidden_dim=32)
    agent = build_agent(config)
    save_checkpoint(agent, config, tmp_path / "policy")
    first = agent.inference.encoder.state_dict()[FIRST_CONV]  # [ch, frames x (front rgb, side rgb), 3, 3]
    folded = fold_policy_encoder(tmp_path / "policy", ClassifierConfig(image_size=32, num_cameras=1))
    # frame k's front-camera channels are 6k..6k+2: the classifier sums them over the stack
    expected = sum(first[:, 6 * k:6 * k + 3] for k in range(config.frame_stack))
    torch.testing.assert_close(folded[FIRST_CONV], expected)
    RewardClassifier(ClassifierConfig(image_size=32, num_cameras=1)).encoder.load_state_dict(folded, strict=True)
    with pytest.raises(WeightsError, match="needs at least 3"):
        fold_policy_encoder(tmp_path / "policy", ClassifierConfig(image_size=32, num_cameras=3))


def test_classifier_checkpoints_load_strictly(tmp_path):
    from hilserl.reward.classifier import ClassifierConfig, RewardClassifier, load_classifier, save_classifier
    from hilserl.weights.codec import WeightsError

    model = RewardClassifier(ClassifierConfig(image_size=24))
    save_classifier(model, tmp_path / "c")
    loaded, doc = load_classifier(tmp_path / "c")
    assert loaded.digest() == model.digest() == doc["digest"]
    other = RewardClassifier(ClassifierConfig(image_size=24, hidden_dim=8))
    save_classifier(other, tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text((tmp_path / "c" / "config.json").read_text())
    with pytest.raises(WeightsError, match="shape"):
        load_classifier(tmp_path / "d")
    with pytest.raises(WeightsError, match="not a reward classifier"):
        load_classifier(tmp_path / "missing")


def test_the_threshold_stored_with_a_classifier_is_the_actors_unless_one_is_given(tmp_path):
    from hilserl.control.reward import ClassifierReward
    from hilserl.reward.classifier import (FALLBACK_THRESHOLD, ClassifierConfig, RewardClassifier, load_classifier,
                                           save_classifier)
    from hilserl.weights.codec import WeightsError

    model = RewardClassifier(ClassifierConfig(image_size=24))
    save_classifier(model, tmp_path / "chosen", {"threshold": 0.97})
    save_classifier(model, tmp_path / "older")  # written before thresholds were stored
    assert ClassifierReward.load(str(tmp_path / "chosen"), "cpu", 0.0, 2).decision.threshold == 0.97
    assert ClassifierReward.load(str(tmp_path / "chosen"), "cpu", 0.6, 2).decision.threshold == 0.6
    assert ClassifierReward.load(str(tmp_path / "older"), "cpu", 0.0, 2).decision.threshold == FALLBACK_THRESHOLD
    for bad in (1.0, 0.0, "0.9", True):
        save_classifier(model, tmp_path / "bad", {"threshold": bad})
        with pytest.raises(WeightsError, match="threshold"):
            load_classifier(tmp_path / "bad")


def test_the_actor_side_confirms_and_compares_with_the_sim(tmp_path):
    from hilserl.control.reward import ClassifierReward
    from hilserl.reward.classifier import ClassifierConfig, RewardClassifier

    model = RewardClassifier(ClassifierConfig(image_size=24)).eval()
    with torch.no_grad():
        model.head[-1].bias.fill_(30.0)  # p(success) = 1 for any frame
    reward = ClassifierReward(model, threshold=0.8, confirm_steps=2)
    image = np.zeros((48, 48, 3), np.uint8)  # resized to the classifier's 24 px
    newest = np.zeros((3, 84, 84), np.uint8)
    assert not reward.judge([image], newest, sim_success=False)
    assert reward.judge([image], newest, sim_success=True)
    values = reward.values()
    assert values["reward_classifier/sim_agreement"] == 1.0 and values["reward_classifier/probability"] == 1.0
    assert values["reward_classifier/digest"] == model.digest()
    reward.reset()
    assert not reward.judge([image], newest, sim_success=None) and reward.values()["reward_classifier/streak"] == 1


def test_a_classifier_watches_the_first_of_the_policys_cameras():
    from hilserl.control.reward import ClassifierReward
    from hilserl.policies.observation import preprocess_frame
    from hilserl.reward.classifier import ClassifierConfig, RewardClassifier

    model = RewardClassifier(ClassifierConfig(image_size=24, num_cameras=1)).eval()
    reward = ClassifierReward(model, threshold=0.8, confirm_steps=2)
    rng = np.random.default_rng(0)
    front, side = (rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2))
    newest = rng.integers(0, 256, (6, 24, 24), dtype=np.uint8)  # a two-camera policy's newest frames
    np.testing.assert_array_equal(reward.frames([front, side], newest), newest[:3])
    # frames of another size: the first camera's image, resized
    resized = reward.frames([front, side], np.zeros((6, 84, 84), np.uint8))
    np.testing.assert_array_equal(resized, preprocess_frame(front, 24))
    reward.judge([front, side], newest, sim_success=None)
    assert reward.probability == float(model.probability(newest[:3]))


# -- trained on Genesis frames through the commands ------------------------------------------------------
def hilserl(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "hilserl", *args], capture_output=True, text=True, cwd=REPO,
                            env=ros_env(0), timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def lift_frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("frames")
    result = hilserl("record-frames", "--task", "lift", "--episodes", "10", "--out", str(out), "--seed", "0",
                     "--image-size", "48", "--episode-steps", "55", "--failure-fraction", "0.4", "--variant", "easy")
    return out, json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def trained(lift_frames, tmp_path_factory):
    frames, _ = lift_frames
    out = tmp_path_factory.mktemp("classifier")
    result = hilserl("reward-classifier", "train", "--frames", str(frames), "--out", str(out), "--epochs", "20",
                     "--device", "cpu")
    return out, json.loads(result.stdout.splitlines()[-1])


def test_recorded_lift_frames_carry_the_sims_success(lift_frames):
    frames, report = lift_frames
    data = read_frames(frames)
    assert len(data) == report["frames"] == 10 * 56 and data.success.sum() == report["success_frames"] > 0
    reached = {int(e) for e in np.unique(data.episode[data.success])}
    assert 2 <= len(reached) < 10  # some episodes succeed, the deliberate failures do not
    for e in reached:  # a success, once reached, is held (success does not end the episode here)
        labels = data.success[data.episode == e]
        assert labels[-1] and labels[np.argmax(labels):].mean() > 0.7


def test_a_classifier_trained_on_sim_frames_beats_chance_on_held_out_episodes(lift_frames, trained):
    out, result = trained
    held = result["held_out"]
    print(f"held-out scores at the threshold chosen on them, {result['threshold']}: {held}")
    doc = json.loads((out / "config.json").read_text())
    assert doc["training"]["held_out_episodes"] and doc["training"]["held_out_scores"] == held
    assert doc["threshold"] == result["threshold"] and 0.5 <= result["threshold"] < 1.0
    # chance (or always saying one class) has false positive + false negative rates summing to 1
    assert held["false_positive_rate"] + held["false_negative_rate"] < 0.5, held
    assert held["accuracy"] > 0.8, held


def test_eval_prints_one_json_line(lift_frames, trained):
    frames, report = lift_frames
    out, _ = trained
    result = hilserl("reward-classifier", "eval", "--checkpoint", str(out), "--frames", str(frames))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert set(scores) == {"accuracy", "false_positive_rate", "false_negative_rate", "frames"}
    assert scores["frames"] == report["frames"] and 0.0 <= scores["false_positive_rate"] <= 1.0
    assert scores["accuracy"] > 0.8
    given = hilserl("reward-classifier", "eval", "--checkpoint", str(out), "--frames", str(frames),
                    "--threshold", str(json.loads((out / "config.json").read_text())["threshold"]))
    assert json.loads(given.stdout) == scores  # by default, the threshold stored with the classifier
    bad = subprocess.run([sys.executable, "-m", "hilserl", "reward-classifier", "eval", "--checkpoint",
                          str(frames), "--frames", str(frames)], capture_output=True, text=True, cwd=REPO,
                         env=ros_env(0), timeout=300)
    assert bad.returncode == 1 and "not a reward classifier checkpoint" in bad.stderr and not bad.stdout


def test_the_threshold_is_chosen_again_on_the_held_out_episodes_without_training_again(lift_frames, trained,
                                                                                        tmp_path):
    frames, _ = lift_frames
    out = tmp_path / "classifier"
    shutil.copytree(trained[0], out)
    before = json.loads((out / "config.json").read_text())
    result = hilserl("reward-classifier", "threshold", "--checkpoint", str(out), "--frames", str(frames),
                     "--target-fpr", "0.5")
    chosen = json.loads(result.stdout)
    after = json.loads((out / "config.json").read_text())
    # a looser target can only lower the cut; the weights are the same, the new threshold is the one stored
    assert 0.5 <= chosen["threshold"] <= before["threshold"] and after["threshold"] == chosen["threshold"]
    assert after["digest"] == before["digest"] and after["training"]["held_out_scores"] == chosen["scores"]
    assert chosen["episodes"] == len(before["training"]["held_out_episodes"]) and "0.5" in \
        after["training"]["threshold_chosen"]
    assert chosen["scores"]["false_positive_rate"] <= 0.5
    scored = hilserl("reward-classifier", "eval", "--checkpoint", str(out), "--frames", str(frames))
    assert json.loads(scored.stdout) == json.loads(hilserl(
        "reward-classifier", "eval", "--checkpoint", str(out), "--frames", str(frames), "--threshold",
        str(chosen["threshold"])).stdout)  # eval and the actor take the new one
    # held-out episodes are the training run's frames, known by their digest: the same folder copied
    # elsewhere (or given by another path) is them; other frames under the same episode ids are not
    moved = tmp_path / "moved"
    shutil.copytree(frames, moved)
    again = json.loads(hilserl("reward-classifier", "threshold", "--checkpoint", str(out), "--frames", str(moved),
                               "--target-fpr", "0.5").stdout)
    assert again == chosen
    after = json.loads((out / "config.json").read_text())
    data, other = read_frames(frames), tmp_path / "other"
    writer = FrameWriter(other, source="test")
    for row in range(len(data)):  # the same episodes, steps and labels; each frame mirrored
        if row and data.episode[row] != data.episode[row - 1]:
            writer.end_episode()
        writer.add(np.ascontiguousarray(data.frames[row][:, :, ::-1]), bool(data.success[row]))
    writer.close()
    assert np.array_equal(read_frames(other).episode, data.episode)
    bad = subprocess.run([sys.executable, "-m", "hilserl", "reward-classifier", "threshold", "--checkpoint",
                          str(out), "--frames", str(other)], capture_output=True, text=True, cwd=REPO,
                         env=ros_env(0), timeout=300)
    assert bad.returncode == 1 and "--episodes all" in bad.stderr and not bad.stdout
    assert json.loads((out / "config.json").read_text()) == after  # nothing written
    every = json.loads(hilserl("reward-classifier", "threshold", "--checkpoint", str(out), "--frames", str(other),
                               "--episodes", "all").stdout)
    assert every["episodes"] == 10 and every["scores"]["frames"] == len(read_frames(other))


def test_the_success_button_is_held_only_while_down_in_a_fresh_reading():
    from hilserl.control.episode import Intervention, TeleopReading
    from hilserl.control.teleop_ee import GamepadEeIntervention
    from hilserl.kinematics.action_space import EeActionSpace

    joint = Intervention(axes=[0], success_button=1, timeout=0.5)
    pad = GamepadEeIntervention(EeActionSpace("xyz"))  # Y (3) is success
    assert not joint.success_held(0.0) and not pad.success_held(0.0)
    joint.update(TeleopReading(1.0, (), (0, 1)))
    pad.update(TeleopReading(1.0, (), (0, 0, 0, 1)))
    assert joint.success_held(1.2) and pad.success_held(1.2)
    assert not joint.success_held(1.6) and not pad.success_held(1.6)  # the pad went silent
    joint.update(TeleopReading(2.0, (), (0, 0)))
    assert not joint.success_held(2.1)
