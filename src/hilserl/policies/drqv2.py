"""DrQ-v2 (Yarats et al., 2021): the whole agent in one file.

The encoder is trained end to end through the critic loss only; the actor reads detached features.
That is why an actor that receives only the actor head behaves like an untrained policy: the
encoder it reads through is the thing that learned to see. `InferencePolicy` keeps them together.

As facebookresearch/drqv2 does it: the target action is the mean plus noise clipped to +-stddev_clip,
clamped to [-1, 1]; the actor loss clamps its noisy action the same way but straight through (the value
is clamped, the gradient passes), so an action at the bound still learns. Acting adds unclipped noise
(inference.py), and a fresh policy acts uniformly at random for its first exploration steps.

The update is the plain one, run fast as `speed.py` describes: integer-shift augmentation on uint8,
bfloat16 autocast with float32 losses and weights, and no gradients the update does not use. It runs on
the agent's device; batches are moved there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hilserl.policies.actor_critic import (ActorCriticAgent, bc_scale, behaviour_cloning_loss, clamp_straight_through,
                                            encoder_cloning_loss, head_inputs, shifted_pixels, soft_update)
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig, parse_schedule
from hilserl.policies.speed import SpeedSettings, read_only


@dataclass
class DrQV2Hyper:
    lr: float = 1e-4
    critic_target_tau: float = 0.01
    augment_pad: int = 4


class DrQV2Agent(ActorCriticAgent):
    policy_type = "drqv2"

    def __init__(self, config: PolicyConfig, hyper: DrQV2Hyper | None = None, speed: SpeedSettings | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__(config, hyper or DrQV2Hyper(), speed, device)
        if self.speed.compile:
            self._target_q, self._critic_q, self._actor_loss = (
                torch.compile(f) for f in (self._target_q, self._critic_q, self._actor_loss))

    def update(self, batch: Batch, step: int, update_actor: bool = True, bc_weight: float = 0.0,
               encoder_bc_weight: float = 0.0) -> dict[str, float]:
        """One DrQ-v2 update. `update_actor=False`: the critic (and encoder) only, e.g. while a pretrained
        actor waits for the critic to learn. `bc_weight`: adds bc_weight * behaviour_cloning_loss to the actor's.
        `encoder_bc_weight`: adds encoder_bc_weight * encoder_cloning_loss to the critic's, so the encoder also
        learns from what demonstrators and people did."""
        batch = batch.to(self.device)
        # Random draws in a fixed order (shifts of obs, of next obs, target noise, actor noise): with the
        # same seed, the plain update in test/drqv2_reference.py sees the same augmentation and noise.
        pixels, next_pixels = shifted_pixels(batch, self.hyper.augment_pad)
        std = parse_schedule(self.config.stddev_schedule, step)
        action = self.arm_action(batch.action)  # all of it, or without a discrete gripper's command

        target_q, next_features, next_state = self._target_q(next_pixels, batch.next_state, batch.reward,
                                                             batch.discount, self._noise(action, std))
        features, state, q1, q2 = self._critic_q(pixels, batch.state, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        encoder_bc = (encoder_cloning_loss(self.inference, features, state, batch, self.speed)
                      if encoder_bc_weight > 0 else None)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (critic_loss if encoder_bc is None else critic_loss + encoder_bc_weight * encoder_bc).backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        metrics = {"critic_loss": critic_loss.item(), "q": q1.mean().item(), "target_q": target_q.mean().item(),
                   "stddev": std}
        if encoder_bc is not None:
            metrics["encoder_bc_loss"] = encoder_bc.item()
        if update_actor:
            # The actor learns through detached features: the encoder is shaped by the critic alone. The
            # (just updated) critic is only read, so its weights get no gradient and its trunk no backward.
            with read_only(self.critic):
                actor_loss = self._actor_loss(features.detach(), state, self._noise(action, std))
                bc_loss = behaviour_cloning_loss(self.inference, features.detach(), state, batch, self.speed)
                self.actor_opt.zero_grad(set_to_none=True)
                (actor_loss + bc_weight * bc_scale(q1) * bc_loss).backward()
            self.actor_opt.step()
            metrics |= {"actor_loss": actor_loss.item(), "bc_loss": bc_loss.item()}
        metrics |= self.update_grasp_critic(features, state, next_features, next_state, batch, bc_weight)

        soft_update(self.critic_target, self.critic, self.hyper.critic_target_tau)
        return metrics

    def _noise(self, like: torch.Tensor, std: float) -> torch.Tensor:
        """DrQ-v2's clipped exploration noise, drawn outside the (possibly compiled) phases below."""
        clip = self.config.stddev_clip
        return (torch.randn_like(like) * std).clamp(-clip, clip)

    # The three forward phases; each runs in its own autocast context (see SpeedSettings.autocast).

    def _target_q(self, next_pixels: torch.Tensor, next_state: torch.Tensor | None, reward: torch.Tensor,
                  discount: torch.Tensor, noise: torch.Tensor):
        """(target Q, and the next observation's features and state, which the grasp critic's target reads)."""
        with torch.no_grad(), self.speed.autocast(self.device):
            next_features, next_state = head_inputs(self.inference, next_pixels, next_state, self.speed)
            next_mu, _ = self.inference.actor(next_features, next_state)
            next_action = (torch.tanh(next_mu.float()) + noise).clamp(-1.0, 1.0)
            target_q1, target_q2 = self.critic_target(next_features, next_state, next_action)
            return torch.addcmul(reward, discount, torch.min(target_q1, target_q2)), next_features, next_state

    def _critic_q(self, pixels: torch.Tensor, state: torch.Tensor | None, action: torch.Tensor):
        with self.speed.autocast(self.device):
            features, state = head_inputs(self.inference, pixels, state, self.speed)
            q1, q2 = self.critic(features, state, action)
        return features, state, q1, q2

    def _actor_loss(self, features: torch.Tensor, state: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        with self.speed.autocast(self.device):
            mu, _ = self.inference.actor(features, state)
            action = clamp_straight_through(torch.tanh(mu.float()) + noise)
            q1, q2 = self.critic(features, state, action)
        return -torch.min(q1, q2).mean()
