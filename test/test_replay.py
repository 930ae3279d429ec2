"""Replay buffers and the transitions wire format, without ROS."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilserl.control.episode import Transition
from hilserl.policies.config import PolicyConfig
from hilserl.policies.observation import FrameStacker
from hilserl.replay.episode_buffer import MixedSampler, ReplayBuffer
from hilserl.replay.interventions import InterventionBuffer
from hilserl.replay.wire import TransitionsError, decode_transitions, encode_transitions

CONFIG = PolicyConfig(image_size=16, frame_stack=3, state_dim=8)


def frame(value: int) -> np.ndarray:
    return np.full((3, 16, 16), value, np.uint8)


def episode(ep: int, length: int, truncated: bool = True, intervention: bool = False) -> list[Transition]:
    out = []
    for t in range(length):
        last = t == length - 1
        out.append(Transition(episode=ep, step=t, frames=frame(10 * ep + t), state=np.full(8, t, np.float32),
                              action=np.full(8, 0.1 * t, np.float32), reward=float(t + 1),
                              terminated=last and not truncated, truncated=last and truncated,
                              intervention=intervention, success=False,
                              final_frames=frame(10 * ep + 9) if last else None,
                              final_state=np.full(8, 99, np.float32) if last else None))
    return out


def test_stacks_and_n_step_targets_match_a_hand_computation():
    buffer = ReplayBuffer(CONFIG, capacity=64, gamma=0.5, n_step=2)
    for ep in range(2):
        for t in episode(ep, 4, truncated=(ep == 0)):
            buffer.add(t, episode_key=ep)
    batch = buffer.sample(256, np.random.default_rng(0))
    seen = set()
    for i in range(256):
        stack = batch.pixels[i, ::3, 0, 0].tolist()
        ep, t = divmod(stack[-1], 10)
        seen.add((ep, t))
        # FrameStacker semantics: the episode's first frame repeats at its start.
        stacker = FrameStacker(CONFIG)
        for k in range(t + 1):
            expected = stacker.push([np.full((16, 16, 3), 10 * ep + k, np.uint8)])
        assert stack == expected[::3, 0, 0].tolist()
        rewards = [t + 1, t + 2][: min(2, 4 - t)]
        assert batch.reward[i].item() == pytest.approx(sum(r * 0.5 ** j for j, r in enumerate(rewards)))
        ends_within = t + 2 > 3
        if ends_within and ep == 1:  # terminated: no bootstrap
            assert batch.discount[i].item() == 0.0
        elif ends_within:  # truncated: bootstrap from the final frame
            assert batch.discount[i].item() == pytest.approx(0.5 ** len(rewards))
            assert batch.next_pixels[i, -3, 0, 0].item() == 10 * ep + 9 and batch.next_state[i, 0].item() == 99
        else:
            assert batch.discount[i].item() == pytest.approx(0.25)
            assert batch.next_pixels[i, -3, 0, 0].item() == 10 * ep + t + 2
    assert len(seen) == 8


def test_frames_stored_once_memory_within_target():
    config = PolicyConfig(image_size=84, state_dim=8)
    buffer = ReplayBuffer(config, capacity=500)
    for ep in range(10):
        for t in episode(ep, 50):
            buffer.add(Transition(**{**t.__dict__, "frames": np.zeros((3, 84, 84), np.uint8),
                                     "final_frames": None if t.final_frames is None else np.zeros((3, 84, 84), np.uint8)}),
                       episode_key=ep)
    raw = 500 * 3 * 84 * 84
    assert buffer.nbytes() <= 1.1 * raw, buffer.nbytes() / raw


def test_mixed_sampling_ratio_and_interventions():
    online, demos = ReplayBuffer(CONFIG, 256, n_step=1), ReplayBuffer(CONFIG, 256, n_step=1)
    key = 0
    for ep in range(6):
        for t in episode(ep, 5, intervention=(ep % 3 == 0)):
            online.add(t, key)
            if t.intervention:
                demos.add(t, key)
        key += 1
    assert len(demos) == 10 and len(online) == 30
    for ratio in (0.5, 0.25):
        batch = MixedSampler(online, demos, ratio, seed=1).sample(64)
        episodes = batch.pixels[:, -3, 0, 0].numpy() // 10
        from_demos = np.isin(episodes, [0, 3]).sum()
        # Online draws include intervention episodes too (1/3 of them), so the share is at least the ratio.
        assert from_demos >= round(64 * ratio)
        assert from_demos <= round(64 * ratio) + (64 - round(64 * ratio))
    with pytest.raises(ValueError, match="demo_ratio"):
        MixedSampler(online, demos, 1.5)


def test_corrections_keep_the_frames_they_stack_and_the_steps_their_targets_reach():
    """A person takes over at steps 5-9 and 11-12 of a 20-step episode the policy drives and hands back each
    time; a second episode is theirs throughout. Every step they drove is sampled, with the frame history the
    actor saw (the policy's steps before it) and n-step targets through the policy's steps after it; those
    policy steps are never sampled themselves."""
    buffer = InterventionBuffer(CONFIG, capacity=64, gamma=0.5, n_step=2)
    driven = set(range(5, 10)) | {11, 12}
    for t in episode(0, 20):
        t.frames, t.intervention = frame(t.step), t.step in driven
        assert buffer.offer(t, episode_key=0) == t.intervention
    for t in episode(5, 4, truncated=False, intervention=True):
        buffer.offer(t, episode_key=1)
    assert buffer.corrections() == len(driven) + 4
    # Context: steps 3-4 (the first correction's stack), 10 (its targets; also the second's stack) and 13-14.
    rows = {(int(k), int(s)): bool(c) for k, s, c in zip(buffer.episode, buffer.step, buffer.context) if k >= 0}
    assert {s for (k, s), c in rows.items() if k == 0 and c} == {3, 4, 10, 13, 14}
    assert {s for (k, s), c in rows.items() if k == 0 and not c} == driven
    sampled = buffer.sample(400, np.random.default_rng(0))
    newest = sampled.pixels[:, -3, 0, 0].numpy()
    first_ep = newest < 20
    assert set(newest[first_ep].tolist()) == driven
    assert set(newest[~first_ep].tolist()) == {50, 51, 52, 53}
    for row in np.flatnonzero(first_ep):  # the stack the actor saw: the two steps before, from the policy's
        step = int(newest[row])
        assert sampled.pixels[row, ::3, 0, 0].tolist() == [step - 2, step - 1, step]
        # Two steps on, the rewards step+1 and step+2 (episode() gives step t the reward t+1), and the frame
        # two steps later: for step 9 (the hand-back) they come from the policy's steps 10 and 11.
        assert sampled.reward[row].item() == pytest.approx(step + 1 + 0.5 * (step + 2))
        assert sampled.next_pixels[row, -3, 0, 0].item() == step + 2
    assert sampled.demo[first_ep].all()
    # Nothing of the first episode is kept waiting once it ended. A plain buffer of the person's steps alone
    # samples none of a correction's last n_step steps (none of the two-step one) and stacks its first frame
    # repeated (a still arm).
    assert not buffer.recent and not buffer.context_owed and not buffer.stored_through
    plain = ReplayBuffer(CONFIG, capacity=64, gamma=0.5, n_step=2)
    for t in episode(0, 20):
        if t.step in driven:
            t.frames, t.intervention = frame(t.step), True
            plain.add(t, 0)
    valid = plain.step[:len(plain)][plain._valid(np.arange(len(plain)))]
    assert valid.tolist() == [5, 6, 7]
    assert plain._stack(np.array([0]))[0, ::3, 0, 0].tolist() == [5, 5, 5]


def test_wire_round_trip_and_rejections():
    transitions = episode(3, 4)
    payload = encode_transitions(transitions, actor_id="/a", seq=7, config_fingerprint="f")
    meta, back = decode_transitions(payload)
    assert meta == {"actor_id": "/a", "seq": 7, "count": 4, "config_fingerprint": "f"}
    for a, b in zip(transitions, back):
        assert (a.episode, a.step, a.reward, a.truncated) == (b.episode, b.step, b.reward, b.truncated)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.action, b.action)
    assert np.array_equal(back[-1].final_frames, transitions[-1].final_frames)
    with pytest.raises(TransitionsError):
        decode_transitions(payload[:-10])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_wire_decoder_fuzz(data):
    payload = bytearray(encode_transitions(episode(1, 3), actor_id="/a", seq=1, config_fingerprint="f"))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    try:
        decode_transitions(bytes(payload))
    except TransitionsError:
        pass
