"""DrQ-v2 (Yarats et al., 2021): the whole agent in one file.

The encoder is trained end to end through the critic loss only; the actor reads detached features.
That is why an actor that receives only the actor head behaves like an untrained policy: the
encoder it reads through is the thing that learned to see. `InferencePolicy` keeps them together.

The update is the plain one, run fast on a CPU as `speed.py` describes: integer-shift augmentation on
uint8, bfloat16 autocast with float32 losses and weights, and no gradients the update does not use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.augment import sample_shifts, shift_images
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig, parse_schedule
from hilserl.policies.inference import InferencePolicy, init_weights, mlp
from hilserl.policies.speed import SpeedSettings, encode, read_only


@dataclass
class DrQV2Hyper:
    lr: float = 1e-4
    critic_target_tau: float = 0.01
    augment_pad: int = 4


def q_value(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Hidden layers at the autocast precision, the last layer in float32: a bfloat16 Q value would carry
    ~0.4% error, as large as the TD errors of a trained critic."""
    hidden = net[:-1](x)
    with torch.autocast(x.device.type, enabled=False):
        return net[-1](hidden.float())


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
        return q_value(self.q1, x), q_value(self.q2, x)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def shifted_pixels(batch: Batch, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both observations, augmented; shifts drawn for `pixels` first, then `next_pixels`."""
    if batch.pixels.dtype != torch.uint8 or batch.next_pixels.dtype != torch.uint8:
        raise ValueError(f"batch pixels must be uint8 (as the replay buffer stores them), got "
                         f"{batch.pixels.dtype} and {batch.next_pixels.dtype}")
    n = len(batch)
    pixels = shift_images(batch.pixels, sample_shifts(n, pad, device=batch.pixels.device), pad)
    next_pixels = shift_images(batch.next_pixels, sample_shifts(n, pad, device=batch.pixels.device), pad)
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
    with speed.autocast():
        mu, _ = policy.actor(features[rows], None if state is None else state[rows])
    return F.mse_loss(torch.tanh(mu.float()), batch.action[rows])


def twin_critics(config: PolicyConfig, repr_dim: int) -> tuple[Critic, Critic]:
    """A critic and its target network, equal at the start; the target learns only by soft updates."""
    critic, target = Critic(config, repr_dim), Critic(config, repr_dim)
    target.load_state_dict(critic.state_dict())
    target.requires_grad_(False)
    return critic, target


class DrQV2Agent(nn.Module):
    def __init__(self, config: PolicyConfig, hyper: DrQV2Hyper | None = None, speed: SpeedSettings | None = None):
        super().__init__()
        assert config.policy == "drqv2", config.policy
        self.config, self.hyper = config, hyper or DrQV2Hyper()
        self.speed = speed or SpeedSettings.from_env()
        self.speed.apply_threads()
        self.inference = InferencePolicy(config)
        self.critic, self.critic_target = twin_critics(config, self.inference.encoder.repr_dim)
        lr = self.hyper.lr
        self.encoder_opt = self.speed.adam(self.inference.encoder.parameters(), lr)
        self.actor_opt = self.speed.adam(self.inference.actor.parameters(), lr)
        self.critic_opt = self.speed.adam(self.critic.parameters(), lr)
        if self.speed.compile:
            self._target_q, self._critic_q, self._actor_loss = (
                torch.compile(f) for f in (self._target_q, self._critic_q, self._actor_loss))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": self.encoder_opt, "actor": self.actor_opt, "critic": self.critic_opt}

    def update(self, batch: Batch, step: int, update_actor: bool = True, bc_weight: float = 0.0) -> dict[str, float]:
        """One DrQ-v2 update. `update_actor=False`: the critic (and encoder) only, e.g. while a pretrained
        actor waits for the critic to learn. `bc_weight`: adds bc_weight * behaviour_cloning_loss to the actor's."""
        # Random draws in a fixed order (shifts of obs, of next obs, target noise, actor noise): with the
        # same seed, the plain update in bench/learner_update.py sees the same augmentation and noise.
        pixels, next_pixels = shifted_pixels(batch, self.hyper.augment_pad)
        std = parse_schedule(self.config.stddev_schedule, step)

        target_q = self._target_q(next_pixels, batch.next_state, batch.reward, batch.discount,
                                  self._noise(batch.action, std))
        features, state, q1, q2 = self._critic_q(pixels, batch.state, batch.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        metrics = {"critic_loss": critic_loss.item(), "q": q1.mean().item(), "target_q": target_q.mean().item(),
                   "stddev": std}
        if update_actor:
            # The actor learns through detached features: the encoder is shaped by the critic alone. The
            # (just updated) critic is only read, so its weights get no gradient and its trunk no backward.
            with read_only(self.critic):
                actor_loss = self._actor_loss(features.detach(), state, self._noise(batch.action, std))
                bc_loss = behaviour_cloning_loss(self.inference, features.detach(), state, batch, self.speed)
                self.actor_opt.zero_grad(set_to_none=True)
                (actor_loss + bc_weight * bc_loss).backward()
            self.actor_opt.step()
            metrics |= {"actor_loss": actor_loss.item(), "bc_loss": bc_loss.item()}

        soft_update(self.critic_target, self.critic, self.hyper.critic_target_tau)
        return metrics

    def _noise(self, like: torch.Tensor, std: float) -> torch.Tensor:
        """DrQ-v2's clipped exploration noise, drawn outside the (possibly compiled) phases below."""
        clip = self.config.stddev_clip
        return (torch.randn_like(like) * std).clamp(-clip, clip)

    # The three forward phases; each runs in its own autocast context (see SpeedSettings.autocast).

    def _target_q(self, next_pixels: torch.Tensor, next_state: torch.Tensor | None, reward: torch.Tensor,
                  discount: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), self.speed.autocast():
            next_features, next_state = head_inputs(self.inference, next_pixels, next_state, self.speed)
            next_mu, _ = self.inference.actor(next_features, next_state)
            next_action = (torch.tanh(next_mu.float()) + noise).clamp(-1.0, 1.0)
            target_q1, target_q2 = self.critic_target(next_features, next_state, next_action)
            return reward + discount * torch.min(target_q1, target_q2)

    def _critic_q(self, pixels: torch.Tensor, state: torch.Tensor | None, action: torch.Tensor):
        with self.speed.autocast():
            features, state = head_inputs(self.inference, pixels, state, self.speed)
            q1, q2 = self.critic(features, state, action)
        return features, state, q1, q2

    def _actor_loss(self, features: torch.Tensor, state: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        with self.speed.autocast():
            mu, _ = self.inference.actor(features, state)
            action = (torch.tanh(mu.float()) + noise).clamp(-1.0, 1.0)
            q1, q2 = self.critic(features, state, action)
        return -torch.min(q1, q2).mean()
