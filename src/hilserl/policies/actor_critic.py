"""What DrQ-v2 and SAC share in their updates: the twin critic, its target, the augmented batch, the
learner's encoder pass, DrQ-v2's straight-through clamp, and the discrete gripper's grasp critic.

A discrete gripper (config `gripper: discrete`), as hil-serl's hybrid SAC agents do it:
  * the actor head and the twin critics see the arm's action values only (the continuous critics read
    `action[:, :-1]`, as hil-serl's critic does), the gripper command is the grasp critic's;
  * the grasp critic Q_g(s, c) over c in {close, stay, open} learns by double DQN:
        y = r - grasp_penalty * [c != stay] + discount * Q_g_target(s', argmax_c' Q_g(s', c'))
    with r and discount the batch's n-step return and gamma^n (zero at a terminal), c the executed gripper
    command of the batch's action (its first step's; later steps' penalties are not in the n-step sum), and a
    target network soft-updated at the critics' rate;
  * it reads detached features, as the actor head does: the encoder is shaped by the twin critics' loss alone,
    so `freeze_encoder` and the learner's encoder learning rate keep their meaning, and a mostly-"stay" signal
    from three actions does not pull the features everything else reads;
  * on demonstration rows, `bc_weight` adds the cross-entropy of softmax(Q_g) against the demonstrated command.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.augment import sample_shifts, shift_images
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import (STAY, GraspCritic, InferencePolicy, gripper_command_index, init_weights,
                                        mlp)
from hilserl.policies.speed import SpeedSettings, encode, read_only


def twin_q(q1: nn.Sequential, q2: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both Q networks (Linear, ReLU, Linear, ReLU, Linear) as grouped matmuls: one linear with the two first
    layers side by side, then batched matmuls over the pair. Hidden layers run at the autocast precision,
    the last in float32: a bfloat16 Q value would carry ~0.4% error, as large as a trained critic's TD errors."""
    first = F.linear(x, torch.cat([q1[0].weight, q2[0].weight]), torch.cat([q1[0].bias, q2[0].bias]))
    hidden = F.relu(first).view(len(x), 2, -1).transpose(0, 1)  # [2, B, H]
    hidden = F.relu(torch.baddbmm(torch.stack([q1[2].bias, q2[2].bias]).unsqueeze(1), hidden,
                                  torch.stack([q1[2].weight, q2[2].weight]).transpose(1, 2)))
    with torch.autocast(x.device.type, enabled=False):
        q = torch.baddbmm(torch.stack([q1[4].bias, q2[4].bias]).unsqueeze(1), hidden.float(),
                          torch.stack([q1[4].weight, q2[4].weight]).transpose(1, 2))
    return q[0], q[1]


class Critic(nn.Module):
    """Twin Q networks on a trunk of their own (Linear + LayerNorm + Tanh)."""

    def __init__(self, config: PolicyConfig, repr_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, config.feature_dim), nn.LayerNorm(config.feature_dim), nn.Tanh())
        in_dim = config.feature_dim + config.state_dim + config.arm_action_dim
        self.q1 = mlp(in_dim, config.hidden_dim, 1)
        self.q2 = mlp(in_dim, config.hidden_dim, 1)
        self.apply(init_weights)

    def forward(self, features: torch.Tensor, state: torch.Tensor | None, action: torch.Tensor):
        h = self.trunk(features)
        parts = [h] if state is None else [h, state.to(h.dtype)]
        return twin_q(self.q1, self.q2, torch.cat(parts + [action.to(h.dtype)], dim=-1))


def twin_critics(config: PolicyConfig, repr_dim: int, device: torch.device) -> tuple[Critic, Critic]:
    """A critic and its target network, equal at the start; the target learns only by soft updates."""
    critic, target = Critic(config, repr_dim).to(device), Critic(config, repr_dim).to(device)
    target.load_state_dict(critic.state_dict())
    target.requires_grad_(False)
    return critic, target


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def shifted_pixels(batch: Batch, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both observations, augmented; shifts drawn for `pixels` first, then `next_pixels`."""
    if batch.pixels.dtype != torch.uint8 or batch.next_pixels.dtype != torch.uint8:
        raise ValueError(f"batch pixels must be uint8 (as the replay buffer stores them), got "
                         f"{batch.pixels.dtype} and {batch.next_pixels.dtype}")
    n, device = len(batch), batch.pixels.device
    pixels = shift_images(batch.pixels, sample_shifts(n, pad, device=device), pad)
    next_pixels = shift_images(batch.next_pixels, sample_shifts(n, pad, device=device), pad)
    return pixels, next_pixels


def head_inputs(policy: InferencePolicy, pixels: torch.Tensor, state: torch.Tensor | None,
                speed: SpeedSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`policy.head_inputs` for the learner: augmented uint8 pixels through the fast encoder pass."""
    features = encode(policy.encoder, pixels, speed.channels_last)
    if policy.config.state_dim == 0:
        return features, None
    if state is None:
        raise ValueError(f"this policy reads {policy.config.state_dim} state values; the batch has none")
    return features, policy.state_norm(state.float())


def behaviour_cloning_loss(policy: InferencePolicy, features: torch.Tensor, state: torch.Tensor | None,
                           batch: Batch, speed: SpeedSettings) -> torch.Tensor:
    """BC = mean over the batch's demonstration rows of ||tanh(mu(s)) - a||^2 / A: the deterministic action
    pulled towards what a demonstrator or a person did. Zero (no forward pass) without such rows."""
    rows = batch.demo
    if rows is None or not bool(rows.any()):
        return features.new_zeros((), dtype=torch.float32)
    with speed.autocast(features.device):
        mu, _ = policy.actor(features[rows], None if state is None else state[rows])
    return F.mse_loss(torch.tanh(mu.float()), batch.action[rows, :policy.config.arm_action_dim])


def encoder_cloning_loss(policy: InferencePolicy, features: torch.Tensor, state: torch.Tensor | None,
                         batch: Batch, speed: SpeedSettings) -> torch.Tensor:
    """Pretraining's cloning (`head_cloning_loss`) on the batch's demonstration rows, through *un*detached
    features with the heads read only: its gradient reaches the encoder alone. Zero without such rows. It lets a
    person's corrections teach the encoder to see a cell it was not trained in (a new camera mounting, light or
    paint), which the TD loss alone learns slowly."""
    rows = batch.demo
    if rows is None or not bool(rows.any()):
        return features.new_zeros((), dtype=torch.float32)
    heads = [policy.actor] + ([policy.grasp_critic] if policy.grasp_critic is not None else [])
    with contextlib.ExitStack() as stack:
        for head in heads:
            stack.enter_context(read_only(head))
        with speed.autocast(features.device):
            return head_cloning_loss(policy, features[rows], None if state is None else state[rows],
                                     batch.action[rows])


def double_dqn_target(next_q: torch.Tensor, next_q_target: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor) -> torch.Tensor:
    """y = r + discount * Q_target(s', argmax_c' Q(s', c')), [B, 1] from Q values [B, C]: the online network
    picks the next command and the target network values it (double DQN, van Hasselt et al., 2016), so one
    network's overestimate is not both chosen and believed."""
    best = next_q.argmax(-1, keepdim=True)
    return torch.addcmul(reward, discount, next_q_target.gather(-1, best))


def grasp_reward(reward: torch.Tensor, command: torch.Tensor, penalty: float) -> torch.Tensor:
    """r - grasp_penalty on the rows whose executed gripper command moved the fingers (close or open, not stay)."""
    return reward - penalty * (command != STAY).unsqueeze(-1).to(reward.dtype)


def grasp_cloning_loss(q: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(Q_g) against the demonstrated command: BC for the grasp critic, which is the
    gripper's policy. Zero without rows."""
    if len(command) == 0:
        return q.new_zeros((), dtype=torch.float32)
    return F.cross_entropy(q.float(), command)


def head_cloning_loss(policy: InferencePolicy, features: torch.Tensor, state: torch.Tensor | None,
                      labels: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning of whole labelled actions from the heads' inputs: MSE of the deterministic arm action,
    plus, for a discrete gripper, the grasp critic's cross-entropy on the labels' gripper commands."""
    mu, _ = policy.actor(features, state)
    loss = F.mse_loss(torch.tanh(mu.float()), labels[:, :policy.config.arm_action_dim])
    if policy.grasp_critic is not None:
        loss = loss + grasp_cloning_loss(policy.grasp_critic(features, state), gripper_command_index(labels[:, -1]))
    return loss


def cloning_loss(policy: InferencePolicy, pixels: torch.Tensor, state: torch.Tensor | None,
                 labels: torch.Tensor) -> torch.Tensor:
    """Pretraining's behaviour cloning, every inference module trained: `head_cloning_loss` from the pixels."""
    return head_cloning_loss(policy, *policy.head_inputs(pixels, state), labels)


def bc_scale(q: torch.Tensor) -> torch.Tensor:
    """What the BC term is multiplied by besides `bc_weight`: the batch's mean |Q|, at least 1 (TD3+BC's
    normalisation, Fujimoto & Gu 2021, applied to the BC side). The Q term's gradient grows with the scale of
    the returns; weighting BC by the same scale keeps `bc_weight` meaning the same for a dense reward whose Q
    is -40 and a sparse one whose Q is 0.5, and keeps BC from fading as a critic's values grow."""
    return q.detach().float().abs().mean().clamp(min=1.0)


def clamp_straight_through(x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """The value of clamp(x), the gradient of x: as DrQ-v2 clamps its sampled actions, so an action pushed
    past the bound still tells the actor which way the critic's value rises."""
    return x + (x.clamp(low, high) - x).detach()


class ActorCriticAgent(nn.Module):
    """What DrQ-v2 and SAC share: the inference policy (encoder + actor head, + grasp critic), twin critics with
    their target (+ the grasp critic's target), and one Adam each for the encoder, the actor head, the critics
    (and the grasp critic), all on one device."""

    policy_type = ""

    def __init__(self, config: PolicyConfig, hyper, speed: SpeedSettings | None, device: torch.device | str):
        super().__init__()
        assert config.policy == self.policy_type, config.policy
        self.config, self.hyper = config, hyper
        self.device = torch.device(device)
        self.speed = speed or SpeedSettings.from_env()
        self.speed.apply_threads()
        self.inference = InferencePolicy(config).to(self.device)
        self.critic, self.critic_target = twin_critics(config, self.inference.encoder.repr_dim, self.device)
        self.encoder_opt = self.speed.adam(self.inference.encoder.parameters(), hyper.lr)
        self.actor_opt = self.speed.adam(self.inference.actor.parameters(), hyper.lr)
        self.critic_opt = self.speed.adam(self.critic.parameters(), hyper.lr)
        # A discrete gripper: the grasp critic lives in the inference policy (the actor reads it); its target and
        # optimiser are the learner's.
        self.grasp_critic_target: GraspCritic | None = None
        self.grasp_critic_opt: torch.optim.Optimizer | None = None
        if config.discrete_gripper:
            self.grasp_critic_target = copy.deepcopy(self.inference.grasp_critic).requires_grad_(False)
            self.grasp_critic_opt = self.speed.adam(self.inference.grasp_critic.parameters(), hyper.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name: the training state saves them all, a rollback clears them all."""
        optimizers = {"encoder": self.encoder_opt, "actor": self.actor_opt, "critic": self.critic_opt}
        if self.grasp_critic_opt is not None:
            optimizers["grasp_critic"] = self.grasp_critic_opt
        return optimizers

    def arm_action(self, action: torch.Tensor) -> torch.Tensor:
        """The part of a batch's actions the actor head outputs and the twin critics read."""
        return action[:, :self.config.arm_action_dim]

    def update_grasp_critic(self, features: torch.Tensor, state: torch.Tensor | None, next_features: torch.Tensor,
                            next_state: torch.Tensor | None, batch: Batch, bc_weight: float) -> dict[str, float]:
        """One double-DQN step on the grasp critic, then its target's soft update (see the module docstring).
        `features`: the observation's, detached here; `next_features`: the next observation's through the
        online encoder (as the critics' targets read them). Nothing for a continuous gripper."""
        if self.grasp_critic_target is None:
            return {}
        grasp_critic = self.inference.grasp_critic
        command = gripper_command_index(batch.action[:, -1])
        with torch.no_grad(), self.speed.autocast(self.device):
            target_q = double_dqn_target(grasp_critic(next_features, next_state),
                                         self.grasp_critic_target(next_features, next_state),
                                         grasp_reward(batch.reward, command, self.config.grasp_penalty),
                                         batch.discount)
        with self.speed.autocast(self.device):
            q_all = grasp_critic(features.detach(), state)
        q = q_all.gather(-1, command.unsqueeze(-1))
        grasp_loss = F.mse_loss(q, target_q)
        rows = batch.demo if batch.demo is not None and bc_weight > 0 else torch.zeros_like(command, dtype=torch.bool)
        bc_loss = grasp_cloning_loss(q_all[rows], command[rows])
        self.grasp_critic_opt.zero_grad(set_to_none=True)
        (grasp_loss + bc_weight * bc_loss).backward()
        self.grasp_critic_opt.step()
        soft_update(self.grasp_critic_target, grasp_critic, self.hyper.critic_target_tau)
        return {"grasp_critic_loss": grasp_loss.item(), "grasp_q": q.mean().item(), "grasp_bc_loss": bc_loss.item()}
