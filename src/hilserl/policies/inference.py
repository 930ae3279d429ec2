"""The inference policy: every module the actor's forward pass reads, and nothing else.

`InferencePolicy` is what travels from learner to actor. Its `state_dict()` is the inference state,
named by module (`encoder.*`, `actor.*`, `state_norm.*`, and `grasp_critic.*` for a discrete gripper), and it
is built from a `PolicyConfig` alone, so an actor needs no checkpoint on disk to build it. The algorithm decides
only the actor head.

A discrete gripper (config `gripper: discrete`) is chosen by the grasp critic, so the grasp critic is read by
the actor's forward pass and is part of the inference state. Its commands are the teleop's gripper values:
close = -1, stay = 0 (the fingers hold their position), open = +1 (hilserl.control.teleop_ee,
hilserl.kinematics.ee_control: the value moves the finger joints like a joint delta). Q index = command + 1.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hilserl.policies.config import PolicyConfig, parse_schedule

GRIPPER_COMMANDS = (-1.0, 0.0, 1.0)  # close, stay, open: the grasp critic's Q index is command + 1
STAY = 1  # the index of "stay"
GRASP_HIDDEN_DIM = 256  # the grasp critic's MLP width: three values need far less than the actor's hidden_dim


def gripper_command_index(gripper: torch.Tensor) -> torch.Tensor:
    """The grasp critic's index of an executed gripper value in [-1, 1]: <= -0.5 close, >= 0.5 open, else stay
    (hil-serl's thresholds). An executed value is what the fingers actually did, so a close command on closed
    fingers, cut to 0 by the joint limit, counts as stay."""
    return torch.where(gripper <= -0.5, 0, torch.where(gripper >= 0.5, 2, STAY)).long()


def init_weights(module: nn.Module) -> None:
    """Orthogonal init as in DrQ-v2: linear layers with gain 1, convs with the ReLU gain."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


class Encoder(nn.Module):
    """DrQ-v2 conv encoder: uint8 pixels in, flat features out; trained end to end by the critic."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        ch = config.encoder_channels
        self.convnet = nn.Sequential(
            nn.Conv2d(config.image_channels, ch, 3, stride=2), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, stride=1), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, stride=1), nn.ReLU(),
            nn.Conv2d(ch, ch, 3, stride=1), nn.ReLU(),
        )
        side = (config.image_size - 3) // 2 + 1 - 6
        self.repr_dim = ch * side * side
        self.apply(init_weights)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Scaling lives here, not in the caller, so actor, learner and `infer` cannot disagree on it.
        x = pixels.to(self.convnet[0].weight.dtype) / 255.0 - 0.5
        return self.convnet(x).flatten(1)


class StateNorm(nn.Module):
    """Fixed normalisation of proprioceptive state; the statistics are part of the inference state."""

    def __init__(self, state_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.mean) / self.std.clamp_min(1e-6)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class ActorHead(nn.Module):
    """Trunk (Linear + LayerNorm + Tanh) then an MLP. DrQ-v2 outputs a mean; SAC a mean and log-std."""

    def __init__(self, config: PolicyConfig, repr_dim: int):
        super().__init__()
        self.policy_type = config.policy
        outputs = config.arm_action_dim * (2 if config.policy == "sac" else 1)
        self.trunk = nn.Sequential(nn.Linear(repr_dim, config.feature_dim), nn.LayerNorm(config.feature_dim), nn.Tanh())
        self.policy = mlp(config.feature_dim + config.state_dim, config.hidden_dim, outputs)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max
        self.apply(init_weights)

    def forward(self, features: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (pre-tanh mean, log_std or None)."""
        h = self.trunk(features)
        if state is not None:
            h = torch.cat([h, state.to(h.dtype)], dim=-1)
        out = self.policy(h)
        if self.policy_type == "sac":
            mu, log_std = out.chunk(2, dim=-1)
            log_std = torch.tanh(log_std)
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
            return mu, log_std
        return out, None


class GraspCritic(nn.Module):
    """Q over the gripper commands from the actor head's inputs: its own trunk (Linear + LayerNorm + Tanh) on
    the encoder features, then a small MLP on trunk output + state."""

    def __init__(self, config: PolicyConfig, repr_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, config.feature_dim), nn.LayerNorm(config.feature_dim), nn.Tanh())
        self.q = mlp(config.feature_dim + config.state_dim, GRASP_HIDDEN_DIM, len(GRIPPER_COMMANDS))
        self.apply(init_weights)

    def forward(self, features: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Q values [B, 3] in float32, indexed as GRIPPER_COMMANDS."""
        h = self.trunk(features)
        if state is not None:
            h = torch.cat([h, state.to(h.dtype)], dim=-1)
        return self.q(h).float()


class InferencePolicy(nn.Module):
    """Encoder + actor head (+ state normalisation, + grasp critic for a discrete gripper): the complete set of
    weights an actor needs."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.state_norm = StateNorm(config.state_dim) if config.state_dim > 0 else None
        self.actor = ActorHead(config, self.encoder.repr_dim)
        self.grasp_critic = GraspCritic(config, self.encoder.repr_dim) if config.discrete_gripper else None
        # A fresh (never trained) policy acts uniformly at random while `step` is below this, as DrQ-v2 does
        # for its first num_expl_steps; 0 for any trained policy. Not a tensor: it travels as metadata.
        self.uniform_exploration_steps = 0

    @property
    def device(self) -> torch.device:
        return self.encoder.convnet[0].weight.device

    def head_inputs(self, pixels: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.encoder(pixels)
        if self.config.state_dim > 0:
            if state is None:
                raise ValueError(f"this policy reads {self.config.state_dim} state values; none were given")
            state = self.state_norm(state.float())
        else:
            state = None
        return features, state

    def forward(self, pixels: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic action in [-1, 1] (a discrete gripper: the grasp critic's argmax command)."""
        features, state = self.head_inputs(pixels, state)
        mu, _ = self.actor(features, state)
        if self.grasp_critic is None:
            return torch.tanh(mu)
        return torch.cat([torch.tanh(mu), self.gripper_command(features, state)], dim=-1)

    def gripper_command(self, features: torch.Tensor, state: torch.Tensor | None, explore: bool = False,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The grasp critic's command [B, 1] on `features`' device: argmax Q; with `explore`, a uniformly random
        command instead with probability grasp_epsilon (draws from `generator`, on the CPU)."""
        index = self.grasp_critic(features, state).argmax(-1).cpu()
        if explore:
            random = torch.rand(index.shape, generator=generator) < self.config.grasp_epsilon
            index = torch.where(random, torch.randint(len(GRIPPER_COMMANDS), index.shape, generator=generator), index)
        commands = torch.tensor(GRIPPER_COMMANDS, dtype=torch.float32)
        return commands[index].unsqueeze(-1).to(features.device)

    @torch.no_grad()
    def act(self, pixels: np.ndarray, state: np.ndarray | None, *, deterministic: bool, step: int,
            generator: torch.Generator | None = None) -> np.ndarray:
        """One observation (no batch axis) in, one action out, as the actor node runs it. Random draws come
        from `generator` (a CPU generator) whatever device the policy runs on."""
        shape = (1, self.config.arm_action_dim)
        if not deterministic and step < self.uniform_exploration_steps:
            action = torch.rand(shape, generator=generator) * 2 - 1
            if self.grasp_critic is not None:  # a command, not a value in between
                index = torch.randint(len(GRIPPER_COMMANDS), (1, 1), generator=generator)
                command = torch.tensor(GRIPPER_COMMANDS)[index]
                action = torch.cat([action, command], dim=-1)
            return action.squeeze(0).numpy().astype(np.float64)
        px = torch.as_tensor(pixels).unsqueeze(0).to(self.device)
        st = None if state is None else torch.as_tensor(state, dtype=torch.float32).unsqueeze(0).to(self.device)
        features, st = self.head_inputs(px, st)
        mu, log_std = self.actor(features, st)
        mu = mu.float().cpu()
        if deterministic:
            action = torch.tanh(mu)
        elif log_std is None:  # DrQ-v2: Gaussian noise around the deterministic action; clipped only in the update
            std = parse_schedule(self.config.stddev_schedule, step)
            action = (torch.tanh(mu) + torch.randn(shape, generator=generator) * std).clamp(-1.0, 1.0)
        else:  # SAC: tanh-squashed Gaussian
            action = torch.tanh(mu + torch.randn(shape, generator=generator) * log_std.float().cpu().exp())
        if self.grasp_critic is not None:
            command = self.gripper_command(features, st, explore=not deterministic, generator=generator).cpu()
            action = torch.cat([action, command], dim=-1)
        return action.squeeze(0).numpy().astype(np.float64)


def tanh_gaussian_log_prob(mu: torch.Tensor, log_std: torch.Tensor, pre_tanh: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) for a = tanh(u), u ~ N(mu, std), with the numerically stable tanh correction."""
    var = (2 * log_std).exp()
    log_prob = -((pre_tanh - mu) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))
    return (log_prob - correction).sum(-1, keepdim=True)
