"""What DrQ-v2 and SAC share in their updates: the twin critic, its target, the augmented batch, the
learner's encoder pass, and DrQ-v2's straight-through clamp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hilserl.policies.augment import sample_shifts, shift_images
from hilserl.policies.batch import Batch
from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy, init_weights, mlp
from hilserl.policies.speed import SpeedSettings, encode


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
        in_dim = config.feature_dim + config.state_dim + config.action_dim
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
    return F.mse_loss(torch.tanh(mu.float()), batch.action[rows])


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
    """What DrQ-v2 and SAC share: the inference policy (encoder + actor head), twin critics with their target,
    and one Adam each for the encoder, the actor head and the critics, all on one device."""

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
