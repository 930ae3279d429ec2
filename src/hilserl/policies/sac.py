"""SAC from pixels (Haarnoja et al., 2018), as HIL-SERL uses it: tanh-Gaussian actor, twin critics,
learned temperature, and an encoder that the critic trains unless the config freezes it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.augment import random_shift
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig
from hilserl.policies.drqv2 import Critic, soft_update
from hilserl.policies.inference import InferencePolicy, tanh_gaussian_log_prob


@dataclass
class SACHyper:
    lr: float = 3e-4
    critic_target_tau: float = 0.005
    init_temperature: float = 0.1
    augment_pad: int = 4


class SACAgent(nn.Module):
    def __init__(self, config: PolicyConfig, hyper: SACHyper | None = None):
        super().__init__()
        assert config.policy == "sac", config.policy
        self.config, self.hyper = config, hyper or SACHyper()
        self.inference = InferencePolicy(config)
        self.critic = Critic(config, self.inference.encoder.repr_dim)
        self.critic_target = Critic(config, self.inference.encoder.repr_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(self.hyper.init_temperature)))
        self.target_entropy = -float(config.action_dim)
        lr = self.hyper.lr
        if config.freeze_encoder:
            self.inference.encoder.requires_grad_(False)
        self.encoder_opt = torch.optim.Adam(self.inference.encoder.parameters(), lr=lr)
        self.actor_opt = torch.optim.Adam(self.inference.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": self.encoder_opt, "actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    def _encode(self, pixels: torch.Tensor, state: torch.Tensor | None):
        pixels = random_shift(pixels.float(), self.hyper.augment_pad)
        return self.inference.head_inputs(pixels, state)

    def _sample(self, features: torch.Tensor, state: torch.Tensor | None):
        mu, log_std = self.inference.actor(features, state)
        pre_tanh = mu + torch.randn_like(mu) * log_std.exp()
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(mu, log_std, pre_tanh)

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        alpha = self.log_alpha.exp().detach()
        if self.config.freeze_encoder:
            with torch.no_grad():
                features, state = self._encode(batch.pixels, batch.state)
        else:
            features, state = self._encode(batch.pixels, batch.state)
        with torch.no_grad():
            next_features, next_state = self._encode(batch.next_pixels, batch.next_state)
            next_action, next_log_prob = self._sample(next_features, next_state)
            tq1, tq2 = self.critic_target(next_features, next_state, next_action)
            target_q = batch.reward + batch.discount * (torch.min(tq1, tq2) - alpha * next_log_prob)

        q1, q2 = self.critic(features, state, batch.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if not self.config.freeze_encoder:
            self.encoder_opt.step()

        features = features.detach()
        action, log_prob = self._sample(features, state)
        aq1, aq2 = self.critic(features, state, action)
        actor_loss = (alpha * log_prob - torch.min(aq1, aq2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        soft_update(self.critic_target, self.critic, self.hyper.critic_target_tau)
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "alpha_loss": alpha_loss.item(),
            "alpha": alpha.item(),
            "q": q1.mean().item(),
            "entropy": -log_prob.mean().item(),
        }
