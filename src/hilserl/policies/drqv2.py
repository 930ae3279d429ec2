"""DrQ-v2 (Yarats et al., 2021): the whole agent in one file.

The encoder is trained end to end through the critic loss only; the actor reads detached features.
That is why an actor that receives only the actor head behaves like an untrained policy: the
encoder it reads through is the thing that learned to see. `InferencePolicy` keeps them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.augment import random_shift
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig, parse_schedule
from hilserl.policies.inference import InferencePolicy, init_weights, mlp


@dataclass
class DrQV2Hyper:
    lr: float = 1e-4
    critic_target_tau: float = 0.01
    augment_pad: int = 4


class Critic(nn.Module):
    """Twin Q networks on a trunk of their own (Linear + LayerNorm + Tanh)."""

    def __init__(self, config: PolicyConfig, repr_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, config.feature_dim), nn.LayerNorm(config.feature_dim), nn.Tanh())
        in_dim = config.feature_dim + config.state_dim + config.action_dim
        self.q1 = mlp(in_dim, config.hidden_dim, 1)
        self.q2 = mlp(in_dim, config.hidden_dim, 1)
        self.apply(init_weights)

    def forward(self, features: torch.Tensor, state: torch.Tensor | None, action: torch.Tensor):
        h = self.trunk(features)
        parts = [h] if state is None else [h, state.to(h.dtype)]
        x = torch.cat(parts + [action.to(h.dtype)], dim=-1)
        return self.q1(x), self.q2(x)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class DrQV2Agent(nn.Module):
    def __init__(self, config: PolicyConfig, hyper: DrQV2Hyper | None = None):
        super().__init__()
        assert config.policy == "drqv2", config.policy
        self.config, self.hyper = config, hyper or DrQV2Hyper()
        self.inference = InferencePolicy(config)
        self.critic = Critic(config, self.inference.encoder.repr_dim)
        self.critic_target = Critic(config, self.inference.encoder.repr_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        lr = self.hyper.lr
        self.encoder_opt = torch.optim.Adam(self.inference.encoder.parameters(), lr=lr)
        self.actor_opt = torch.optim.Adam(self.inference.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": self.encoder_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    def _encode(self, pixels: torch.Tensor, state: torch.Tensor | None):
        pixels = random_shift(pixels.float(), self.hyper.augment_pad)
        return self.inference.head_inputs(pixels, state)

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        features, state = self._encode(batch.pixels, batch.state)
        with torch.no_grad():
            next_features, next_state = self._encode(batch.next_pixels, batch.next_state)
            std = parse_schedule(self.config.stddev_schedule, step)
            next_mu, _ = self.inference.actor(next_features, next_state)
            noise = (torch.randn_like(next_mu) * std).clamp(-self.config.stddev_clip, self.config.stddev_clip)
            next_action = (torch.tanh(next_mu) + noise).clamp(-1.0, 1.0)
            target_q1, target_q2 = self.critic_target(next_features, next_state, next_action)
            target_q = batch.reward + batch.discount * torch.min(target_q1, target_q2)

        q1, q2 = self.critic(features, state, batch.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        # The actor learns through detached features: the encoder is shaped by the critic alone.
        features = features.detach()
        mu, _ = self.inference.actor(features, state)
        noise = (torch.randn_like(mu) * std).clamp(-self.config.stddev_clip, self.config.stddev_clip)
        action = (torch.tanh(mu) + noise).clamp(-1.0, 1.0)
        aq1, aq2 = self.critic(features, state, action)
        actor_loss = -torch.min(aq1, aq2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        soft_update(self.critic_target, self.critic, self.hyper.critic_target_tau)
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "q": q1.mean().item(),
            "target_q": target_q.mean().item(),
            "stddev": std,
        }
