"""The learner's fast DrQ-v2 / SAC updates: exact augmentation, losses and gradients against the plain reference
update (test/drqv2_reference.py), learning on a tiny task, which weights each loss may touch, acting as
DrQ-v2 acts, and the device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hilserl.policies import PolicyConfig, build_agent
import drqv2_reference as reference
from hilserl.policies.actor_critic import clamp_straight_through
from hilserl.policies.augment import (colour_jitter, random_shift, sample_colour_transforms, sample_shifts,
                                     shift_images, transform_colours)
from hilserl.policies.batch import Batch
from hilserl.policies.drqv2 import DrQV2Agent, DrQV2Hyper
from hilserl.policies.sac import SACAgent, SACHyper
from hilserl.policies.device import resolve_device
from hilserl.policies.inference import InferencePolicy
from hilserl.policies.speed import SpeedSettings, encode
from hilserl.weights.checkpoint import load_agent_weights, load_inference_policy, save_checkpoint

FP32 = SpeedSettings(bf16=False, compile=False)
BF16 = SpeedSettings(bf16=True, compile=False)
BF16_RTOL = 2e-2  # the tolerance bench/learner_update.py states for the first update
FP32_RTOL = 1e-4


def small_config(policy: str = "drqv2", **kw) -> PolicyConfig:
    return PolicyConfig(policy=policy, image_size=kw.pop("image_size", 24), hidden_dim=kw.pop("hidden_dim", 64),
                        encoder_channels=kw.pop("encoder_channels", 8), **kw)


def with_state(batch: Batch, state_dim: int, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    batch.state = torch.randn(len(batch), state_dim, generator=g)
    batch.next_state = torch.randn(len(batch), state_dim, generator=g)
    return batch


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-8)


# --- augmentation ------------------------------------------------------------------------------------

def reference_shift(pixels: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad, then slice each image at its (x, y) offset."""
    h, w = pixels.shape[-2:]
    padded = F.pad(pixels.float(), (pad,) * 4, mode="replicate").to(pixels.dtype)
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (x, y) in enumerate(shifts.tolist())])


def test_shift_images_equals_pad_and_slice_for_every_offset():
    pad = 4
    pixels = torch.randint(0, 256, (8, 9, 20, 20), dtype=torch.uint8)
    # every offset in the window appears, corners included
    offsets = torch.cartesian_prod(torch.arange(2 * pad + 1), torch.arange(2 * pad + 1))
    for chunk in offsets.split(8):
        got = shift_images(pixels[: len(chunk)], chunk, pad)
        assert got.dtype == torch.uint8 and got.shape == pixels[: len(chunk)].shape
        assert torch.equal(got, reference_shift(pixels[: len(chunk)], chunk, pad))
    centre = torch.full((8, 2), pad)
    assert torch.equal(shift_images(pixels, centre, pad), pixels)
    # a shift of +1 in x reads the column to the right
    one = torch.tensor([[pad + 1, pad]] * 8)
    assert torch.equal(shift_images(pixels, one, pad)[..., :-1], pixels[..., 1:])


def test_shift_images_rejects_bad_shifts():
    pixels = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        shift_images(pixels, torch.tensor([[0, 9], [0, 0]]), 4)
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        shift_images(pixels, torch.zeros(3, 2, dtype=torch.long), 4)


def test_integer_shift_equals_drq_grid_sample_shift():
    """Same seed, same offsets: DrQ's bilinear resampling lands on pixel centres, so both agree."""
    pixels = torch.randint(0, 256, (8, 9, 24, 24), dtype=torch.uint8)
    torch.manual_seed(3)
    ref = reference.RandomShiftsAug(4)(pixels.float())
    torch.manual_seed(3)
    got = random_shift(pixels.float(), 4)
    torch.manual_seed(3)
    shifts = sample_shifts(8, 4)
    assert len(set(map(tuple, shifts.tolist()))) > 1  # the batch really is shifted differently per image
    assert torch.allclose(got, ref, atol=1e-3), (got - ref).abs().max()


def test_colour_jitter_maps_every_frame_of_a_sample_through_one_colour_transform():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    pixels = frame.repeat(1, 3, 1, 1)  # three identical RGB frames per sample (stacked frames, cameras)
    got = colour_jitter(pixels, 0.3, torch.Generator().manual_seed(1))
    assert got.dtype == torch.float32 and got.shape == pixels.shape
    assert got.min() >= 0 and got.max() <= 255
    # one transform per sample: its frames stay identical; samples differ from each other and from the input
    assert torch.equal(got[:, :3], got[:, 3:6]) and torch.equal(got[:, :3], got[:, 6:])
    assert not torch.allclose(got[0, :3], got[1, :3] * frame[0].float().mean() / frame[1].float().mean())
    assert (got - pixels.float()).abs().mean() > 5.0
    # the transform written out for one pixel: matrix, then contrast about the sample's mean grey
    matrices, contrasts = sample_colour_transforms(4, 0.3, torch.Generator().manual_seed(1))
    x = pixels.float().view(4, 3, 3, -1)
    mapped = torch.einsum("nij,nkjp->nkip", matrices, x)
    mean = mapped.mean(dim=(1, 2, 3))
    i, r, c = 2, 5, 7
    rgb = matrices[i] @ frame[i, :, r, c].float()
    want = (mean[i] + contrasts[i] * (rgb - mean[i])).clamp(0, 255)
    assert torch.allclose(got[i, :3, r, c], want, atol=1e-3)
    assert torch.allclose(transform_colours(pixels, matrices, contrasts), got)
    # strength 0 changes nothing; red turns orange within reach of 0.3 (green may gain up to 0.3 x red)
    assert torch.equal(colour_jitter(pixels, 0.0), pixels.float())
    m, _ = sample_colour_transforms(2000, 0.3, torch.Generator().manual_seed(2))
    assert (m[:, 1, 0] / m[:, 0, 0]).max() > 0.25 and (m[:, 0, 0]).min() < 0.65 and (m[:, 0, 0]).max() > 1.4
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        colour_jitter(pixels, 1.0)
    with pytest.raises(ValueError, match="multiple of 3"):
        colour_jitter(pixels[:, :4], 0.3)


@pytest.mark.parametrize("channels_last", [False, True])
def test_encode_folds_scaling_into_first_conv(channels_last):
    torch.manual_seed(0)
    agent = DrQV2Agent(small_config(), speed=FP32)
    pixels = torch.randint(0, 256, (4, 9, 24, 24), dtype=torch.uint8)
    with torch.no_grad():
        ref = agent.inference.encoder(pixels)
        got = encode(agent.inference.encoder, pixels, channels_last)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        encode(agent.inference.encoder, pixels.float())


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_encode_gradients_equal_the_plain_encoders_whichever_kernels_run(layout, monkeypatch):
    """The CPU path (first conv from NHWC pixels, ReLUs fused into the convs where oneDNN offers it, the first
    conv's weight gradient from either pixel layout) gives the plain encoder's features and gradients."""
    from hilserl.policies import speed

    torch.manual_seed(0)
    encoder = DrQV2Agent(small_config(), speed=FP32).inference.encoder
    pixels = torch.randint(0, 256, (6, 9, 24, 24), dtype=torch.uint8)
    monkeypatch.setattr(speed, "_FIRST_CONV_WGRAD_LAYOUT", {((6, 9, 24, 24), torch.float32): layout})
    weights = torch.randn(6, encoder.repr_dim)  # a loss that weighs every feature differently
    grads = []
    for run in (lambda: encoder(pixels), lambda: encode(encoder, pixels, channels_last=True)):
        encoder.zero_grad(set_to_none=True)
        features = run()
        (features * weights).sum().backward()
        grads.append((features.detach(), [p.grad.clone() for p in encoder.parameters()]))
    (ref, ref_grads), (got, got_grads) = grads
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(got_grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-4, rtol=1e-4), (g - r).abs().max()


def test_first_conv_weight_gradient_layout_is_measured_once_per_shape(monkeypatch):
    from hilserl.policies import speed

    monkeypatch.setattr(speed, "_FIRST_CONV_WGRAD_LAYOUT", {})
    encoder = DrQV2Agent(small_config(), speed=FP32).inference.encoder
    for _ in range(2):
        encode(encoder, torch.randint(0, 256, (5, 9, 24, 24), dtype=torch.uint8), channels_last=True).sum().backward()
    assert list(speed._FIRST_CONV_WGRAD_LAYOUT) == [((5, 9, 24, 24), torch.float32)]
    assert set(speed._FIRST_CONV_WGRAD_LAYOUT.values()) <= {"nchw", "nhwc"}


# --- losses against the plain reference --------------------------------------------------------------

@pytest.mark.parametrize("speed,rtol", [(FP32, FP32_RTOL), (BF16, BF16_RTOL)], ids=["fp32", "bf16"])
def test_fast_update_losses_match_plain_reference(speed, rtol):
    config = small_config(image_size=32)
    batch = reference.synthetic_batch(config, 8)
    plain, agent = reference.pair(config, speed)
    for step in range(3):
        torch.manual_seed(10 + step)
        ref = plain.update(batch, step)
        torch.manual_seed(10 + step)
        got = agent.update(batch, step)
        for key in ("critic_loss", "actor_loss"):
            # the first update starts from identical weights; allow later ones the rounding they inherit
            bound = rtol if step == 0 else 5 * rtol
            assert rel(got[key], ref[key]) <= bound, (step, key, got[key], ref[key])
    # the master weights stay float32 whatever the compute precision
    assert all(t.dtype == torch.float32 for t in agent.inference.state_dict().values())


def test_clamp_straight_through_clamps_the_value_and_passes_the_gradient():
    x = torch.tensor([-1.5, -0.5, 0.0, 0.7, 1.2], requires_grad=True)
    y = clamp_straight_through(x)
    assert torch.equal(y.detach(), x.detach().clamp(-1, 1))
    (y * torch.arange(1.0, 6.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(1.0, 6.0))  # a hard clamp would give 0 at -1.5 and 1.2


def test_actor_gradient_matches_reference_where_actions_reach_the_bound():
    """DrQ-v2 clamps the actor's noisy action straight through: where tanh(mu) + noise passes 1, the gradient
    still flows. With the actor pushed near +1, about half the actions pass it; the fast update's actor
    gradient must equal the plain reference's there too."""
    config = small_config(image_size=32, stddev_schedule="1.0", stddev_clip=0.3)
    batch = reference.synthetic_batch(config, 16)
    plain, agent = reference.pair(config, FP32)
    for actor in (plain.actor, agent.inference.actor):
        with torch.no_grad():
            actor.policy[4].bias.fill_(1.5)  # tanh(mu) ~ 0.9: noise up to 0.3 takes many actions past 1
    with torch.no_grad():
        near_one = agent.inference(batch.pixels).mean().item()  # the deterministic action, tanh(mu)
    assert near_one > 0.85, near_one
    torch.manual_seed(5)
    plain.update(batch, 0)
    torch.manual_seed(5)
    agent.update(batch, 0)
    ref = dict(plain.actor.named_parameters())
    for name, p in agent.inference.actor.named_parameters():
        assert torch.allclose(p.grad, ref[name].grad, rtol=1e-3, atol=1e-7), name
    assert ref["policy.4.bias"].grad.abs().min() > 0


def test_acting_noise_is_not_clipped_and_fresh_policies_explore_uniformly():
    config = small_config(stddev_schedule="1.0", stddev_clip=0.3)
    torch.manual_seed(0)
    policy = InferencePolicy(config).eval()
    pixels = np.zeros((config.image_channels, config.image_size, config.image_size), dtype=np.uint8)
    mean = policy.act(pixels, None, deterministic=True, step=0)
    g = torch.Generator().manual_seed(1)
    noisy = np.stack([policy.act(pixels, None, deterministic=False, step=0, generator=g) for _ in range(50)])
    # unclipped unit noise: many actions lie further than stddev_clip from the mean (clipped: none would)
    assert (np.abs(noisy - mean) > 0.35).mean() > 0.3
    policy.uniform_exploration_steps = 10
    uniform = np.stack([policy.act(pixels, None, deterministic=False, step=9, generator=g) for _ in range(200)])
    assert uniform.min() < -0.9 and uniform.max() > 0.9 and abs(uniform.mean()) < 0.1
    after = policy.act(pixels, None, deterministic=False, step=10, generator=torch.Generator().manual_seed(1))
    assert np.allclose(after, noisy[0])  # at step 10 the policy acts again
    assert np.array_equal(policy.act(pixels, None, deterministic=True, step=0), mean)  # evaluation never explores


# --- devices -----------------------------------------------------------------------------------------

def test_resolve_device_names_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "", "tpu"):
        with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0", "CUDA:1"):
            with pytest.raises(ValueError, match="no CUDA GPU"):
                resolve_device(name)


@pytest.mark.parametrize("policy", ["drqv2", "sac"])
def test_agent_and_checkpoint_on_the_resolved_device(policy, tmp_path):
    """The agent lives on the device asked for, takes CPU batches, and its checkpoint loads onto a CPU."""
    device = resolve_device("auto")
    config = small_config(policy)
    torch.manual_seed(0)
    agent = build_agent(config, device=device)
    assert {p.device.type for p in agent.parameters()} == {device.type}
    info = agent.update(reference.synthetic_batch(config, 4), 0)  # a CPU batch, moved by the update
    assert all(np.isfinite(v) for v in info.values())
    save_checkpoint(agent, config, tmp_path / "ckpt", step=1)
    on_cpu = build_agent(config, device="cpu")
    assert load_agent_weights(on_cpu, tmp_path / "ckpt") == []
    for name, tensor in agent.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[name], tensor.cpu()), name
    loaded = load_inference_policy(tmp_path / "ckpt", device=device)
    assert loaded.device.type == device.type
    pixels = np.zeros((config.image_channels, config.image_size, config.image_size), dtype=np.uint8)
    state = None
    assert np.allclose(loaded.act(pixels, state, deterministic=True, step=0),
                       on_cpu.inference.act(pixels, state, deterministic=True, step=0), atol=1e-5)


# --- learning on a tiny task -------------------------------------------------------------------------

def fixed_task(config: PolicyConfig, n: int = 16) -> Batch:
    """Terminal transitions (discount 0), so the Q target is the reward itself: a regression to a known target."""
    g = torch.Generator().manual_seed(7)
    pixels = torch.randint(0, 256, (n, config.image_channels, config.image_size, config.image_size),
                           dtype=torch.uint8, generator=g)
    return Batch(pixels=pixels, next_pixels=pixels.clone(),
                 action=torch.rand(n, config.action_dim, generator=g) * 2 - 1,
                 reward=torch.rand(n, 1, generator=g) + 0.5, discount=torch.zeros(n, 1))


@pytest.mark.parametrize("policy", ["drqv2", "sac"])
def test_updates_fit_the_known_q_target(policy):
    torch.manual_seed(0)
    config = small_config(policy)
    hyper = DrQV2Hyper(lr=1e-3) if policy == "drqv2" else SACHyper(lr=1e-3)
    agent = (DrQV2Agent if policy == "drqv2" else SACAgent)(config, hyper, speed=BF16)
    batch = fixed_task(config)
    first = agent.update(batch, 0)
    for step in range(1, 40):
        last = agent.update(batch, step)
    with torch.no_grad():
        q1, _ = agent.critic(agent.inference.encoder(batch.pixels), None, batch.action)
    error = (q1 - batch.reward).abs().mean().item()
    assert last["critic_loss"] < 0.2 * first["critic_loss"], (first, last)
    assert error < 0.5 * (batch.reward - first["q"]).abs().mean().item(), error


# --- what each loss may touch ------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["drqv2", "sac"])
@pytest.mark.parametrize("state_dim", [0, 7])
def test_inference_state_is_encoder_actor_and_state_norm_only(policy, state_dim):
    agent = build_agent(small_config(policy, state_dim=state_dim))
    names = set(agent.inference.state_dict())
    expected = {f"encoder.{k}" for k in agent.inference.encoder.state_dict()}
    expected |= {f"actor.{k}" for k in agent.inference.actor.state_dict()}
    if state_dim:
        expected |= {"state_norm.mean", "state_norm.std"}
    assert names == expected
    modules = {"encoder", "actor", "state_norm"} if state_dim else {"encoder", "actor"}
    assert {name.split(".")[0] for name in names} == modules
    assert not any("critic" in name or ".q1." in name or ".q2." in name for name in names)


def count_gradients(module: torch.nn.Module, counts: dict[str, int]) -> None:
    for name, p in module.named_parameters():
        if p.requires_grad:
            p.register_hook(lambda grad, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))


def test_drqv2_encoder_learns_from_critic_loss_only():
    config = small_config()
    torch.manual_seed(0)
    agent = DrQV2Agent(config, speed=BF16)
    encoder, critic = {}, {}
    count_gradients(agent.inference.encoder, encoder)
    count_gradients(agent.critic, critic)
    at_critic_step = {}
    critic_step = agent.critic_opt.step

    def step_and_record(*args, **kwargs):
        at_critic_step.update(encoder=dict(encoder), critic=dict(critic))
        return critic_step(*args, **kwargs)

    agent.critic_opt.step = step_and_record
    before = {k: v.clone() for k, v in agent.inference.encoder.state_dict().items()}
    agent.update(reference.synthetic_batch(config, 8), 0)
    n_encoder = len(list(agent.inference.encoder.parameters()))
    # the critic loss reached every encoder and critic weight once ...
    assert len(at_critic_step["encoder"]) == n_encoder and set(at_critic_step["encoder"].values()) == {1}
    assert set(at_critic_step["critic"].values()) == {1}
    # ... and the actor loss, computed afterwards, reached neither
    assert encoder == at_critic_step["encoder"] and critic == at_critic_step["critic"]
    assert all(p.grad is not None for p in agent.inference.actor.parameters())
    assert any(not torch.equal(before[k], v) for k, v in agent.inference.encoder.state_dict().items())


def test_sac_frozen_encoder_stays_unchanged():
    config = small_config("sac", freeze_encoder=True, state_dim=7)
    torch.manual_seed(0)
    agent = SACAgent(config, speed=BF16)
    batch = with_state(reference.synthetic_batch(config, 8), 7)
    encoder = {k: v.clone() for k, v in agent.inference.encoder.state_dict().items()}
    actor = {k: v.clone() for k, v in agent.inference.actor.state_dict().items()}
    critic = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    for step in range(3):
        info = agent.update(batch, step)
    assert all(torch.isfinite(torch.tensor(v)) for v in info.values())
    assert all(torch.equal(encoder[k], v) for k, v in agent.inference.encoder.state_dict().items())
    assert any(not torch.equal(actor[k], v) for k, v in agent.inference.actor.state_dict().items())
    assert any(not torch.equal(critic[k], v) for k, v in agent.critic.state_dict().items())


def test_state_is_required_when_the_policy_reads_it():
    config = small_config(state_dim=7)
    agent = DrQV2Agent(config, speed=FP32)
    with pytest.raises(ValueError, match="7 state values"):
        agent.update(reference.synthetic_batch(config, 4), 0)
    with pytest.raises(ValueError, match="uint8"):
        batch = with_state(reference.synthetic_batch(config, 4), 7)
        batch.pixels = batch.pixels.float()
        agent.update(batch, 0)


def test_speed_settings_from_env():
    assert SpeedSettings.from_env({"HILSERL_BF16": "0", "HILSERL_THREADS": "1"}) == SpeedSettings(bf16=False, threads=1)
    assert SpeedSettings.from_env({}).compile is False
    with pytest.raises(ValueError, match="HILSERL_COMPILE must be 0 or 1"):
        SpeedSettings.from_env({"HILSERL_COMPILE": "yes"})
    with pytest.raises(ValueError, match="HILSERL_THREADS"):
        SpeedSettings.from_env({"HILSERL_THREADS": "-2"})
