"""The plain DrQ-v2 update, written out straightforwardly: the reference the fast update is judged against.

float32, NCHW, DrQ's bilinear `grid_sample` shift augmentation, every gradient autograd offers, the
update structured as facebookresearch/drqv2 structures it. The learner never runs this; the benchmark
(bench/learner_update.py) and the tests (test/test_policies.py) compare `DrQV2Agent.update` with it from
identical weights, batch, augmentation shifts and noise (same seed). It lives with the tests, apart from
the package, so the two implementations stay independent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig, parse_schedule
from hilserl.policies.drqv2 import DrQV2Agent
from hilserl.policies.speed import SpeedSettings


class RandomShiftsAug(nn.Module):
    """DrQ's augmentation: replicate-pad, then resample at a random integer offset with grid_sample."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        x = F.pad(x, (self.pad,) * 4, mode="replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
        # (x, y) offsets, drawn as one [n, 2] tensor like hilserl.policies.augment.sample_shifts
        shift = torch.randint(0, 2 * self.pad + 1, size=(n, 2), device=x.device).view(n, 1, 1, 2)
        grid = base_grid + shift.float() * (2.0 / (h + 2 * self.pad))
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


class PlainEncoder(nn.Module):
    def __init__(self, channels: int, ch: int):
        super().__init__()
        self.convnet = nn.Sequential(nn.Conv2d(channels, ch, 3, stride=2), nn.ReLU(), nn.Conv2d(ch, ch, 3), nn.ReLU(),
                                     nn.Conv2d(ch, ch, 3), nn.ReLU(), nn.Conv2d(ch, ch, 3), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convnet(obs / 255.0 - 0.5).flatten(1)


def plain_mlp(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


class PlainActor(nn.Module):
    def __init__(self, repr_dim: int, feature_dim: int, hidden: int, action_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = plain_mlp(feature_dim, hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(obs))


class PlainCritic(nn.Module):
    def __init__(self, repr_dim: int, feature_dim: int, hidden: int, action_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q1 = plain_mlp(feature_dim + action_dim, hidden, 1)
        self.q2 = plain_mlp(feature_dim + action_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor):
        h = torch.cat([self.trunk(obs), action], dim=-1)
        return self.q1(h), self.q2(h)


class PlainDrQV2:
    """Pixels-only DrQ-v2 as facebookresearch/drqv2 computes its update: the target action is the tanh mean
    plus noise clipped to +-stddev_clip, clamped to [-1, 1]; the actor's action likewise, with the clamp
    straight through (clamped value, unclamped gradient)."""

    def __init__(self, config: PolicyConfig, lr: float = 1e-4, tau: float = 0.01, pad: int = 4,
                 device: torch.device | str = "cpu"):
        c = config
        side = (c.image_size - 3) // 2 + 1 - 6
        repr_dim = c.encoder_channels * side * side
        args = (repr_dim, c.feature_dim, c.hidden_dim, c.action_dim)
        self.config, self.tau = config, tau
        self.aug = RandomShiftsAug(pad)
        self.encoder = PlainEncoder(c.image_channels, c.encoder_channels)
        self.actor, self.critic, self.critic_target = PlainActor(*args), PlainCritic(*args), PlainCritic(*args)
        self.device = torch.device(device)
        for module in (self.encoder, self.actor, self.critic, self.critic_target):
            module.to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def load_from(self, agent: nn.Module) -> None:
        self.encoder.load_state_dict(agent.inference.encoder.state_dict())
        self.actor.load_state_dict(agent.inference.actor.state_dict())
        self.critic.load_state_dict(agent.critic.state_dict())
        self.critic_target.load_state_dict(agent.critic_target.state_dict())

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        batch = batch.to(self.device)
        obs = self.aug(batch.pixels.float())
        next_obs = self.aug(batch.next_pixels.float())
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        std = parse_schedule(self.config.stddev_schedule, step)
        clip = self.config.stddev_clip

        with torch.no_grad():
            mu = self.actor(next_obs)
            next_action = (torch.tanh(mu) + (torch.randn_like(mu) * std).clamp(-clip, clip)).clamp(-1.0, 1.0)
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = batch.reward + batch.discount * torch.min(target_q1, target_q2)
        q1, q2 = self.critic(obs, batch.action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        obs = obs.detach()
        mu = self.actor(obs)
        sample = torch.tanh(mu) + (torch.randn_like(mu) * std).clamp(-clip, clip)
        action = sample - sample.detach() + sample.detach().clamp(-1.0, 1.0)
        q1a, q2a = self.critic(obs, action)
        actor_loss = -torch.min(q1a, q2a).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for t, s in zip(self.critic_target.parameters(), self.critic.parameters()):
                t.data.copy_(self.tau * s.data + (1 - self.tau) * t.data)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item()}


# --- shared by the benchmark and the tests ---------------------------------------------------------

def synthetic_batch(config: PolicyConfig, n: int, seed: int = 0) -> Batch:
    """Smooth random images (so that shifts change them) and random transitions."""
    g = torch.Generator().manual_seed(seed)
    side = config.image_size

    def images() -> torch.Tensor:
        coarse = torch.rand(n, config.image_channels, side // 6, side // 6, generator=g)
        return (F.interpolate(coarse, size=(side, side), mode="bilinear") * 255).to(torch.uint8)

    return Batch(pixels=images(), next_pixels=images(),
                 action=torch.rand(n, config.action_dim, generator=g) * 2 - 1,
                 reward=torch.rand(n, 1, generator=g), discount=torch.full((n, 1), 0.99))


def pair(config: PolicyConfig, speed: SpeedSettings, seed: int = 0,
         device: torch.device | str = "cpu") -> tuple[PlainDrQV2, DrQV2Agent]:
    """A fast agent and the plain update on `device`, starting from the same weights."""
    torch.manual_seed(seed)
    agent = DrQV2Agent(config, speed=speed, device=device)
    plain = PlainDrQV2(config, agent.hyper.lr, agent.hyper.critic_target_tau, agent.hyper.augment_pad, device)
    plain.load_from(agent)
    return plain, agent
