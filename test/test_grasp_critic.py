"""The discrete gripper: the grasp critic's double-DQN target, its place in the inference state (it travels in
the weights message and an actor refuses a payload without it), its updates in DrQ-v2 and SAC, checkpoints,
the training state, and configs written before the field existed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hilserl.policies import PolicyConfig, build_agent
from hilserl.policies.actor_critic import cloning_loss, double_dqn_target, grasp_reward
from hilserl.policies.batch import Batch
from hilserl.policies.inference import GRIPPER_COMMANDS, InferencePolicy, gripper_command_index
from hilserl.policies.speed import SpeedSettings
from hilserl.tools import init_checkpoint
from hilserl.training.state import load_training_state, restore_agent, save_training_state, snapshot_agent
from hilserl.weights.checkpoint import load_agent_weights, load_inference_policy, read_config_file, save_checkpoint
from hilserl.weights.codec import encode_weights
from hilserl.weights.loader import WeightsReceiver, inference_digest

FP32 = SpeedSettings(bf16=False, compile=False)
REPO = Path(__file__).resolve().parents[1]


def discrete_config(policy: str = "drqv2", state_dim: int = 3, **kw) -> PolicyConfig:
    return PolicyConfig(policy=policy, image_size=24, hidden_dim=32, feature_dim=8, encoder_channels=4,
                        frame_stack=2, state_dim=state_dim, action_space="ee_delta", action_dim=4,
                        gripper="discrete", **kw)


def discrete_batch(config: PolicyConfig, seed: int = 0) -> Batch:
    """Four rows whose executed gripper values are close, stay, open and a value cut short by a limit (stay)."""
    g = torch.Generator().manual_seed(seed)
    n, side = 4, config.image_size

    def pixels():
        return torch.randint(0, 256, (n, config.image_channels, side, side), dtype=torch.uint8, generator=g)
    arm = torch.rand(n, config.arm_action_dim, generator=g) * 2 - 1
    gripper = torch.tensor([[-1.0], [0.0], [1.0], [0.2]])
    return Batch(pixels=pixels(), next_pixels=pixels(), action=torch.cat([arm, gripper], dim=1),
                 reward=torch.tensor([[1.0], [0.5], [-0.25], [2.0]]),
                 discount=torch.tensor([[0.9], [0.0], [0.81], [0.9]]),
                 state=torch.randn(n, config.state_dim, generator=g),
                 next_state=torch.randn(n, config.state_dim, generator=g),
                 demo=torch.tensor([True, False, True, False]))


# --- the target ----------------------------------------------------------------------------------------

def test_gripper_commands_round_executed_values():
    values = torch.tensor([-1.0, -0.6, -0.5, -0.2, 0.0, 0.3, 0.5, 1.0])
    assert gripper_command_index(values).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert [GRIPPER_COMMANDS[i] for i in (0, 1, 2)] == [-1.0, 0.0, 1.0]  # close, stay, open


def test_double_dqn_target_by_hand():
    # The online net picks the next command, the target net values it: row 0's online argmax is "open" (2)
    # although the target net values "close" (0) highest; plain DQN (max of the target) would give 9.
    next_q = torch.tensor([[0.0, 1.0, 3.0], [5.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    next_q_target = torch.tensor([[9.0, 4.0, -2.0], [1.5, 7.0, 0.0], [3.0, -1.0, 8.0]])
    reward = torch.tensor([[1.0], [0.0], [-1.0]])
    discount = torch.tensor([[0.5], [0.0], [0.9]])
    command = torch.tensor([0, 1, 2])  # close (penalised), stay (free), open (penalised)
    y = double_dqn_target(next_q, next_q_target, grasp_reward(reward, command, 0.1), discount)
    expected = [[1.0 - 0.1 + 0.5 * -2.0], [0.0 - 0.0 + 0.0 * 1.5], [-1.0 - 0.1 + 0.9 * -1.0]]
    assert torch.allclose(y, torch.tensor(expected))


def set_output(critic: torch.nn.Module, q: list[float]) -> None:
    """Q(s, .) = q for every observation: the last layer's weights zero, its bias q."""
    with torch.no_grad():
        critic.q[-1].weight.zero_()
        critic.q[-1].bias.copy_(torch.tensor(q))


def test_grasp_critic_update_fits_the_hand_computed_target():
    """The agent's loss is the MSE between Q(s, executed command) and the double-DQN target computed by hand."""
    torch.manual_seed(0)
    config = discrete_config(grasp_penalty=0.25)
    agent = build_agent(config)
    agent.speed = FP32
    set_output(agent.inference.grasp_critic, [2.0, 1.0, 0.5])  # online: argmax at s' is close (0)
    set_output(agent.grasp_critic_target, [-3.0, 4.0, 6.0])  # target values close at -3 (its own max is 6)
    batch = discrete_batch(config)
    repr_dim = agent.inference.encoder.repr_dim
    features, next_features = torch.randn(4, repr_dim), torch.randn(4, repr_dim)
    metrics = agent.update_grasp_critic(features, batch.state, next_features, batch.next_state, batch, bc_weight=0.0)
    # rows: close (penalised), stay, open (penalised), 0.2 -> stay
    q = torch.tensor([2.0, 1.0, 0.5, 1.0])
    y = torch.tensor([1.0 - 0.25 + 0.9 * -3.0, 0.5 + 0.0 * -3.0, -0.25 - 0.25 + 0.81 * -3.0, 2.0 + 0.9 * -3.0])
    assert metrics["grasp_critic_loss"] == pytest.approx(((q - y) ** 2).mean().item(), rel=1e-6)
    assert metrics["grasp_q"] == pytest.approx(q.mean().item(), rel=1e-6)


# --- the weights message -------------------------------------------------------------------------------

def payload(config: PolicyConfig, state: dict, version: int) -> bytes:
    return encode_weights(state, config=config, weights_version=version, learner_step=0, run_id="grasp")[0]


def test_actor_refuses_weights_without_the_grasp_critic_and_acts_with_it():
    torch.manual_seed(1)
    config = discrete_config()
    policy = InferencePolicy(config)
    state = policy.state_dict()
    assert {name.split(".")[0] for name in state} == {"encoder", "state_norm", "actor", "grasp_critic"}
    receiver = WeightsReceiver(expected_config=config)
    without_grasp = {k: v for k, v in state.items() if not k.startswith("grasp_critic.")}
    head_only = {k: v for k, v in state.items() if k.startswith("actor.")}
    for version, partial in ((1, without_grasp), (2, head_only)):
        offer = receiver.offer(payload(config, partial, version))
        assert offer.status == "rejected" and "grasp_critic" in offer.reason and "missing whole module" in offer.reason
        assert not receiver.ready
    offer = receiver.offer(payload(config, state, 3))
    assert offer.status == "loaded", offer.reason
    assert receiver.loaded_digest == inference_digest(policy)  # the digest covers the grasp critic
    # The same weights, a grasp critic changed: another digest.
    changed = InferencePolicy(config)
    changed.load_state_dict(state)
    with torch.no_grad():
        changed.grasp_critic.q[-1].bias.add_(1.0)
    assert inference_digest(changed) != inference_digest(policy)

    loaded = receiver.policy
    loaded.uniform_exploration_steps = 3
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    grippers = set()
    for step in range(40):
        pixels = rng.integers(0, 256, (config.image_channels, 24, 24), dtype=np.uint8)
        joints = rng.normal(size=config.state_dim)
        for deterministic in (True, False):
            action = loaded.act(pixels, joints, deterministic=deterministic, step=step, generator=generator)
            assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
            assert action[-1] in GRIPPER_COMMANDS
            grippers.add(float(action[-1]))
        # Deterministic acting is the argmax of the received grasp critic.
        features, st = loaded.head_inputs(torch.as_tensor(pixels).unsqueeze(0),
                                          torch.as_tensor(joints, dtype=torch.float32).unsqueeze(0))
        best = loaded.grasp_critic(features, st).argmax(-1).item()
        assert loaded.act(pixels, joints, deterministic=True, step=step)[-1] == GRIPPER_COMMANDS[best]
    assert len(grippers) > 1  # exploration reaches other commands than the argmax


# --- updates, checkpoints, the training state ----------------------------------------------------------

def grasp_tensors(agent) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agent.state_dict().items() if "grasp_critic" in k}


@pytest.mark.parametrize("policy", ["drqv2", "sac"])
def test_update_trains_the_grasp_critic_and_checkpoints_round_trip(policy, tmp_path):
    torch.manual_seed(2)
    config = discrete_config(policy)
    agent = build_agent(config)
    assert agent.critic.q1[0].in_features == config.feature_dim + config.state_dim + 3  # the arm's values only
    assert agent.inference.actor.policy[-1].out_features == 3 * (2 if policy == "sac" else 1)
    assert "grasp_critic" in agent.optimizers()
    before = grasp_tensors(agent)
    metrics = agent.update(discrete_batch(config), 0, bc_weight=1.0)
    assert {"grasp_critic_loss", "grasp_q", "grasp_bc_loss"} <= set(metrics) and metrics["grasp_bc_loss"] > 0
    after = grasp_tensors(agent)
    for prefix in ("inference.grasp_critic.", "grasp_critic_target."):
        names = [k for k in after if k.startswith(prefix) and k.endswith("weight")]
        assert names and any(not torch.equal(before[k], after[k]) for k in names), prefix

    # A learner checkpoint: the grasp critic in the inference part, its target among the training tensors.
    save_checkpoint(agent, config, tmp_path / "ckpt")
    loaded = build_agent(config)
    assert load_agent_weights(loaded, tmp_path / "ckpt") == []
    for name, tensor in agent.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    policy_only = load_inference_policy(tmp_path / "ckpt")
    assert inference_digest(policy_only) == inference_digest(agent.inference)

    # The training state (a restart) and a snapshot (the guard's rollback) hold the grasp critic, its target
    # and its optimiser.
    save_training_state(tmp_path / "state", agent, {"learner_step": 1})
    resumed = build_agent(config)
    load_training_state(tmp_path / "state", resumed)
    assert torch.equal(resumed.grasp_critic_target.q[0].weight, agent.grasp_critic_target.q[0].weight)
    moments = [s["exp_avg"] for s in resumed.grasp_critic_opt.state.values()]
    assert moments and all(torch.equal(a, b["exp_avg"]) for a, b in zip(moments, agent.grasp_critic_opt.state.values()))
    snapshot = snapshot_agent(agent)
    agent.update(discrete_batch(config, seed=1), 1)
    restore_agent(agent, snapshot)
    for name, tensor in grasp_tensors(agent).items():
        assert torch.equal(tensor, after[name]), name
    assert not agent.grasp_critic_opt.state


def test_inference_only_checkpoint_starts_the_grasp_target_equal(tmp_path):
    torch.manual_seed(3)
    config = discrete_config("sac")
    policy = build_agent(config).inference
    save_checkpoint(policy, config, tmp_path / "ckpt")
    agent = build_agent(config)
    assert load_agent_weights(agent, tmp_path / "ckpt")  # notes: training tensors initialised fresh
    for name, tensor in agent.inference.grasp_critic.state_dict().items():
        assert torch.equal(agent.grasp_critic_target.state_dict()[name], tensor)
        assert torch.equal(policy.grasp_critic.state_dict()[name], tensor)


def test_cloning_loss_trains_the_grasp_critic():
    torch.manual_seed(4)
    config = discrete_config(state_dim=0)
    policy = InferencePolicy(config)
    batch = discrete_batch(config)
    cloning_loss(policy, batch.pixels, None, batch.action).backward()
    assert policy.grasp_critic.q[-1].weight.grad.abs().sum() > 0 and policy.actor.policy[-1].weight.grad.abs().sum() > 0


# --- configs and the CLI -------------------------------------------------------------------------------

def test_configs_before_the_field_read_as_continuous_with_their_fingerprint():
    config, doc = read_config_file(REPO / "checkpoints" / "reach")
    assert config.gripper == "continuous" and config.arm_action_dim == config.action_dim
    assert config.fingerprint() == doc["config_fingerprint"]
    assert "gripper" not in json.loads(config.to_json())
    with pytest.raises(ValueError, match="needs action_space 'ee_delta'"):
        PolicyConfig(gripper="discrete")
    with pytest.raises(ValueError, match="gripper must be one of"):
        PolicyConfig(action_space="ee_delta", action_dim=4, gripper="binary")
    with pytest.raises(ValueError, match="discrete' only"):
        PolicyConfig(grasp_penalty=0.5)
    discrete = discrete_config(grasp_penalty=0.5)
    assert PolicyConfig.from_json(discrete.to_json()) == discrete


def test_init_checkpoint_writes_a_discrete_gripper_checkpoint(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert init_checkpoint.main(["--policy", "drqv2", "--seed", "0", "--out", str(out), "--action-space", "ee_delta",
                                 "--gripper", "discrete", "--grasp-penalty", "0.05", "--image-size", "24",
                                 "--hidden-dim", "16", "--frame-stack", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    policy = load_inference_policy(out)
    assert policy.config.gripper == "discrete" and policy.config.grasp_penalty == 0.05
    assert policy.grasp_critic is not None and printed["inference_digest"] == inference_digest(policy)
    with pytest.raises(SystemExit):
        init_checkpoint.main(["--policy", "drqv2", "--seed", "0", "--out", str(tmp_path / "bad"),
                              "--gripper", "discrete"])
