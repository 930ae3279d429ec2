"""Replay buffer that stores each camera frame once and builds frame stacks and n-step targets at sample time.

A transition keeps only the newest frame(s) of the observation it acted on; the stack of `frame_stack`
frames is rebuilt from its predecessors in the same episode (the first frame repeated at an episode's start,
exactly like `FrameStacker`), and the next observation is the stack `n_step` transitions later (or the
episode's final frame when it ended sooner). Memory is the frames plus a few bytes per transition.

A row added as context (`add(..., context=True)`) is read, for the stacks and n-step targets of the rows around
it, and never sampled itself: a buffer that keeps only some steps of an episode (a person's corrections,
`InterventionBuffer`) keeps the steps those read around them as context.
"""

from __future__ import annotations

import numpy as np
import torch

from hilserl.control.episode import Transition
from hilserl.policies.batch import Batch, concat_batches
from hilserl.policies.config import PolicyConfig

GAMMA = 0.99
N_STEP = 3


class ReplayBuffer:
    def __init__(self, config: PolicyConfig, capacity: int = 50_000, gamma: float = GAMMA, n_step: int = N_STEP,
                 state_size: int | None = None):
        self.config, self.capacity, self.gamma, self.n_step = config, capacity, gamma, n_step
        channels, size = 3 * config.num_cameras, config.image_size
        # The joint positions an actor sends with each transition: the policy's state input when it reads one;
        # for a pixels-only policy their count is the arm's, known from its first transition (see `add`).
        if state_size is None:
            state_size = config.state_dim or (config.action_dim if config.action_space == "joint_delta" else 0)
        self.frames = np.zeros((capacity, channels, size, size), np.uint8)
        self.states = np.zeros((capacity, state_size), np.float32)
        self.actions = np.zeros((capacity, config.action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.episode = np.full(capacity, -1, np.int64)  # globally unique episode key; -1 = empty slot
        self.step = np.zeros(capacity, np.int64)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.intervention = np.zeros(capacity, bool)
        self.context = np.zeros(capacity, bool)  # read for the rows around it, never sampled
        self.final: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slot -> final frames/state of its episode
        self.written = 0

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    def nbytes(self) -> int:
        arrays = (self.frames, self.states, self.actions, self.rewards, self.episode, self.step, self.terminated,
                  self.truncated, self.intervention, self.context)
        return sum(a.nbytes for a in arrays) + sum(f.nbytes + s.nbytes for f, s in self.final.values())

    def add(self, t: Transition, episode_key: int, context: bool = False) -> None:
        slot = self.written % self.capacity
        if self.written == 0 and not self.config.state_dim and self.states.shape[1] != len(t.state):
            self.states = np.zeros((self.capacity, len(t.state)), np.float32)
        self.final.pop(slot, None)
        self.frames[slot] = t.frames
        self.states[slot] = t.state
        self.actions[slot] = t.action
        self.rewards[slot] = t.reward
        self.episode[slot], self.step[slot] = episode_key, t.step
        self.terminated[slot], self.truncated[slot], self.intervention[slot] = t.terminated, t.truncated, t.intervention
        self.context[slot] = context
        if (t.terminated or t.truncated) and t.final_frames is not None:
            final_state = t.final_state if t.final_state is not None else t.state
            self.final[slot] = (np.asarray(t.final_frames, np.uint8), np.asarray(final_state, np.float32))
        self.written += 1

    # -- sampling ------------------------------------------------------------------------------
    def _follows(self, slot: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots `offset` steps after (or before, if negative) `slot` in the same episode, and whether stored."""
        other = (slot + offset) % self.capacity
        ok = (self.episode[other] == self.episode[slot]) & (self.step[other] == self.step[slot] + offset)
        return other, ok

    def _stack(self, slot: np.ndarray) -> np.ndarray:
        """[B, 3*F*cams, P, P]: frames of slot and its predecessors, the episode's first repeated."""
        parts, current = [self.frames[slot]], slot
        for k in range(1, self.config.frame_stack):
            before, ok = self._follows(slot, -k)
            current = np.where(ok, before, current)
            parts.insert(0, self.frames[current])
        return np.concatenate(parts, axis=1)

    def _valid(self, slot: np.ndarray) -> np.ndarray:
        """A slot can be sampled once its n-step window is stored or its episode ended within it (never a context
        row)."""
        valid = (self.episode[slot] >= 0) & ~self.context[slot]
        running = valid.copy()  # the window has not met an episode end yet
        finals = np.fromiter(self.final, np.int64, len(self.final))
        for j in range(self.n_step):
            at, ok = self._follows(slot, j)
            valid &= ~running | ok
            ends = running & ok & (self.terminated[at] | self.truncated[at])
            truncated_only = ends & ~self.terminated[at]  # bootstraps: needs the episode's final frame
            valid &= ~truncated_only | np.isin(at, finals)
            running &= ~ends
        _, after = self._follows(slot, self.n_step)
        return valid & (~running | after)

    def has_window(self) -> bool:
        """Whether any stored slot can be sampled (its n-step window is complete): `sample` then succeeds."""
        return bool(len(self)) and bool(self._valid(np.arange(len(self))).any())

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        if len(self) == 0:
            raise ValueError("cannot sample an empty replay buffer")
        slots = np.empty(0, np.int64)
        for _ in range(50):
            candidates = rng.integers(0, len(self), size=batch_size * 2)
            slots = np.concatenate([slots, candidates[self._valid(candidates)]])
            if len(slots) >= batch_size:
                break
        if len(slots) < batch_size:  # few valid slots among many: draw from the exact set of them
            valid = np.flatnonzero(self._valid(np.arange(len(self))))
            if len(valid) == 0:
                raise ValueError("replay buffer holds no complete n-step window yet")
            slots = rng.choice(valid, size=batch_size)
        slots = slots[:batch_size]

        reward = np.zeros(batch_size, np.float32)
        discount = np.ones(batch_size, np.float32)
        alive = np.ones(batch_size, bool)
        next_slot = slots.copy()
        use_final = np.zeros(batch_size, bool)
        for j in range(self.n_step):
            at, _ = self._follows(slots, j)
            reward += np.where(alive, discount * self.rewards[at], 0.0)
            discount = np.where(alive, discount * self.gamma, discount)
            term, trunc = alive & self.terminated[at], alive & self.truncated[at] & ~self.terminated[at]
            discount = np.where(term, 0.0, discount)
            next_slot = np.where(term | trunc, at, next_slot)
            use_final |= term | trunc
            alive &= ~(term | trunc)
        after, _ = self._follows(slots, self.n_step)
        next_slot = np.where(alive, after, next_slot)

        next_pixels = self._stack(next_slot)
        next_state = self.states[next_slot].copy()
        channels = 3 * self.config.num_cameras
        for row in np.flatnonzero(use_final):
            final = self.final.get(int(next_slot[row]))
            if final is not None:  # shift the ended stack by one and append the final frame
                next_pixels[row] = np.concatenate([next_pixels[row, channels:], final[0]], axis=0)
                next_state[row] = final[1]
        uses_state = self.config.state_dim > 0
        return Batch(pixels=torch.from_numpy(self._stack(slots)), action=torch.from_numpy(self.actions[slots]),
                     reward=torch.from_numpy(reward).unsqueeze(1), discount=torch.from_numpy(discount).unsqueeze(1),
                     next_pixels=torch.from_numpy(next_pixels),
                     state=torch.from_numpy(self.states[slots]) if uses_state else None,
                     next_state=torch.from_numpy(next_state) if uses_state else None,
                     demo=torch.from_numpy(self.intervention[slots]))


class MixedSampler:
    """RLPD-style batches: `demo_ratio` of each batch from interventions/demos, the rest online."""

    def __init__(self, online: ReplayBuffer, demos: ReplayBuffer, demo_ratio: float = 0.5, seed: int = 0):
        if not 0.0 <= demo_ratio <= 1.0:
            raise ValueError(f"demo_ratio must be within [0, 1], got {demo_ratio}")
        self.online, self.demos, self.demo_ratio = online, demos, demo_ratio
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> Batch:
        n_demo = int(round(batch_size * self.demo_ratio)) if len(self.demos) else 0
        n_demo = batch_size if len(self.online) == 0 else n_demo
        parts = [b.sample(n, self.rng) for b, n in ((self.online, batch_size - n_demo), (self.demos, n_demo)) if n]
        return concat_batches(*parts)
