"""SAC from pixels (Haarnoja et al., 2018), as HIL-SERL uses it: tanh-Gaussian actor, twin critics,
learned temperature, and an encoder that the critic trains unless the config freezes it.

Runs fast, on the agent's device, the way DrQ-v2 does (see speed.py and drqv2.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.actor_critic import (ActorCriticAgent, bc_scale, behaviour_cloning_loss, encoder_cloning_loss,
                                            head_inputs, shifted_pixels, soft_update)
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import tanh_gaussian_log_prob
from hilserl.policies.speed import SpeedSettings, read_only


@dataclass
class SACHyper:
    lr: float = 3e-4
    critic_target_tau: float = 0.005
    init_temperature: float = 0.1
    augment_pad: int = 4


def squash(mu: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised tanh-Gaussian sample with its log-probability, in float32."""
    mu, log_std = mu.float(), log_std.float()
    pre_tanh = mu + eps * log_std.exp()
    return torch.tanh(pre_tanh), tanh_gaussian_log_prob(mu, log_std, pre_tanh)


class SACAgent(ActorCriticAgent):
    policy_type = "sac"

    def __init__(self, config: PolicyConfig, hyper: SACHyper | None = None, speed: SpeedSettings | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__(config, hyper or SACHyper(), speed, device)
        if config.freeze_encoder:  # its optimiser then never sees a gradient
            self.inference.encoder.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(self.hyper.init_temperature), device=self.device))
        self.target_entropy = -float(config.arm_action_dim)
        self.alpha_opt = self.speed.adam([self.log_alpha], self.hyper.lr)
        if self.speed.compile:
            self._encode, self._target_q, self._critic_q, self._actor_loss = (
                torch.compile(f) for f in (self._encode, self._target_q, self._critic_q, self._actor_loss))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return super().optimizers() | {"alpha": self.alpha_opt}

    def update(self, batch: Batch, step: int, update_actor: bool = True, bc_weight: float = 0.0,
               encoder_bc_weight: float = 0.0) -> dict[str, float]:
        """One SAC update; `update_actor`, `bc_weight` and `encoder_bc_weight` as in DrQV2Agent.update (the
        temperature learns with the actor, so it waits too; a frozen encoder learns from nothing)."""
        batch = batch.to(self.device)
        # Random draws in a fixed order: shifts of obs, of next obs, target sample, actor sample.
        pixels, next_pixels = shifted_pixels(batch, self.hyper.augment_pad)
        alpha = self.log_alpha.exp().detach()
        action = self.arm_action(batch.action)  # all of it, or without a discrete gripper's command
        n = len(batch)
        if self.config.freeze_encoder:
            # Nothing trains the encoder, so both observations go through it in one no-grad pass.
            states = None if batch.state is None else torch.cat([batch.state, batch.next_state])
            with torch.no_grad():
                features, state = self._encode(torch.cat([pixels, next_pixels]), states)
            features, next_features = features.split(n)
            state, next_state = (None, None) if state is None else state.split(n)
        else:
            features, state = self._encode(pixels, batch.state)
            with torch.no_grad():
                next_features, next_state = self._encode(next_pixels, batch.next_state)

        target_q = self._target_q(next_features, next_state, batch.reward, batch.discount,
                                  torch.randn_like(action), alpha)
        q1, q2 = self._critic_q(features, state, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        encoder_bc = (encoder_cloning_loss(self.inference, features, state, batch, self.speed)
                      if encoder_bc_weight > 0 and not self.config.freeze_encoder else None)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (critic_loss if encoder_bc is None else critic_loss + encoder_bc_weight * encoder_bc).backward()
        self.critic_opt.step()
        if not self.config.freeze_encoder:
            self.encoder_opt.step()

        metrics = {"critic_loss": critic_loss.item(), "alpha": alpha.item(), "q": q1.mean().item()}
        if encoder_bc is not None:
            metrics["encoder_bc_loss"] = encoder_bc.item()
        if update_actor:
            # Detached features, and a read-only critic: the actor loss trains the actor head alone.
            with read_only(self.critic):
                actor_loss, log_prob = self._actor_loss(features.detach(), state, torch.randn_like(action),
                                                        alpha)
                bc_loss = behaviour_cloning_loss(self.inference, features.detach(), state, batch, self.speed)
                self.actor_opt.zero_grad(set_to_none=True)
                (actor_loss + bc_weight * bc_scale(q1) * bc_loss).backward()
            self.actor_opt.step()

            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics |= {"actor_loss": actor_loss.item(), "bc_loss": bc_loss.item(), "alpha_loss": alpha_loss.item(),
                        "entropy": -log_prob.mean().item()}
        metrics |= self.update_grasp_critic(features, state, next_features, next_state, batch, bc_weight)

        soft_update(self.critic_target, self.critic, self.hyper.critic_target_tau)
        return metrics

    # The forward phases; each runs in its own autocast context (see SpeedSettings.autocast).

    def _encode(self, pixels: torch.Tensor, state: torch.Tensor | None):
        with self.speed.autocast(self.device):
            return head_inputs(self.inference, pixels, state, self.speed)

    def _target_q(self, next_features: torch.Tensor, next_state: torch.Tensor | None, reward: torch.Tensor,
                  discount: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.speed.autocast(self.device):
            next_action, next_log_prob = squash(*self.inference.actor(next_features, next_state), eps)
            target_q1, target_q2 = self.critic_target(next_features, next_state, next_action)
            return torch.addcmul(reward, discount, torch.min(target_q1, target_q2) - alpha * next_log_prob)

    def _critic_q(self, features: torch.Tensor, state: torch.Tensor | None, action: torch.Tensor):
        with self.speed.autocast(self.device):
            return self.critic(features, state, action)

    def _actor_loss(self, features: torch.Tensor, state: torch.Tensor | None, eps: torch.Tensor,
                    alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.speed.autocast(self.device):
            action, log_prob = squash(*self.inference.actor(features, state), eps)
            q1, q2 = self.critic(features, state, action)
        return (alpha * log_prob - torch.min(q1, q2)).mean(), log_prob
