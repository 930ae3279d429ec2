"""The action space in the policy config: validation, old checkpoints read as joint_delta, and the setting
travelling through checkpoints and weights messages to an actor that checks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hilserl.kinematics.action_space import action_space_problem
from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy
from hilserl.weights.checkpoint import read_config_file, save_checkpoint
from hilserl.weights.codec import decode_weights, encode_weights, read_safetensors
from hilserl.weights.loader import WeightsReceiver

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=24, hidden_dim=16, feature_dim=8, encoder_channels=4, frame_stack=2)
EE = PolicyConfig(action_space="ee_delta", ee_axes="xyz", action_dim=4, ee_step=0.03, **SMALL)


def test_ee_delta_needs_the_matching_action_dim():
    assert PolicyConfig(action_space="ee_delta", ee_axes="xyz_rpy", action_dim=7).ee_action_space().dim == 7
    with pytest.raises(ValueError, match="ee_axes 'xyz' has action_dim 4"):
        PolicyConfig(action_space="ee_delta", action_dim=8)
    with pytest.raises(ValueError, match="action_space must be one of"):
        PolicyConfig(action_space="cartesian")
    with pytest.raises(ValueError, match="ee_step must be in"):
        PolicyConfig(ee_step=0.0)  # checked under joint_delta too
    with pytest.raises(ValueError, match="unknown keys"):
        PolicyConfig.from_dict({"action_space": "ee_delta", "action_dim": 4, "ee_axis": "xyz"})


def test_a_checkpoint_written_before_action_spaces_reads_as_joint_delta():
    config, doc = read_config_file(REPO / "checkpoints" / "reach_joint")
    assert "action_space" not in doc["policy"]
    assert config.action_space == "joint_delta" and config.action_dim == 8


def test_ee_settings_travel_in_checkpoints_and_weights(tmp_path):
    torch.manual_seed(0)
    policy = InferencePolicy(EE)
    save_checkpoint(policy, EE, tmp_path / "ckpt")
    config, doc = read_config_file(tmp_path / "ckpt")
    assert config == EE and doc["policy"]["action_space"] == "ee_delta" and doc["policy"]["ee_step"] == 0.03
    payload, _ = encode_weights(policy.state_dict(), config=EE, weights_version=1, learner_step=0, run_id="r")
    metadata, _ = read_safetensors(payload)
    assert json.loads(metadata["config"])["action_space"] == "ee_delta"
    meta, _ = decode_weights(payload)
    assert meta.config == EE


def test_an_actor_for_joint_deltas_refuses_ee_weights_and_keeps_none():
    torch.manual_seed(0)
    payload, _ = encode_weights(InferencePolicy(EE).state_dict(), config=EE, weights_version=1, learner_step=0,
                                run_id="r")
    joint_actor = WeightsReceiver(compatible=lambda config: action_space_problem(config, "joint_delta", 8))
    offer = joint_actor.offer(payload)
    assert offer.status == "rejected" and not joint_actor.ready
    assert "policy acts in ee_delta but this actor is set up for joint_delta" in offer.reason
    ee_actor = WeightsReceiver(compatible=lambda config: action_space_problem(config, "ee_delta", 8))
    assert ee_actor.offer(payload).status == "loaded" and ee_actor.policy.config.ee_step == 0.03


def test_joint_delta_still_needs_one_action_per_joint():
    assert action_space_problem(PolicyConfig(action_dim=7), "joint_delta", 7) is None
    assert "7 actions but `joints` names 8" in action_space_problem(PolicyConfig(action_dim=7), "joint_delta", 8)
    assert action_space_problem(EE, "ee_delta", 7) is None  # the gripper value has no joint on a 7-joint arm
    with pytest.raises(ValueError, match="action_space must be one of"):
        action_space_problem(EE, "cartesian", 7)
