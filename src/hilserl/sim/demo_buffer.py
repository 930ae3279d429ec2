"""Episodes for pretraining, stored one frame per step; frame stacks are rebuilt when a batch is sampled.

A stack of `frame_stack` frames per transition would store every frame `frame_stack` times; here each frame
is stored once and a sampled transition gathers its stack by index, repeating the episode's first frame
at the start exactly as `FrameStacker` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hilserl.control.episode import Transition
from hilserl.sim.rollout import Episode


class DemoBuffer:
    def __init__(self, frame_shape: tuple[int, int, int], state_dim: int, action_dim: int, frame_stack: int,
                 capacity: int = 2048):
        self.frame_shape, self.state_dim, self.action_dim = tuple(frame_shape), state_dim, action_dim
        self.frame_stack = frame_stack
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.n_frames = 0
        # Per transition: its observation's frame index, its episode's first frame index, and the rest.
        self.frame_idx = np.zeros(0, dtype=np.int64)
        self.start_idx = np.zeros(0, dtype=np.int64)
        self.actions = np.zeros((0, action_dim), dtype=np.float32)
        self.labels = np.zeros((0, action_dim), dtype=np.float32)
        self.rewards = np.zeros(0, dtype=np.float32)
        self.terminal = np.zeros(0, dtype=bool)
        self.episodes = 0

    def __len__(self) -> int:
        return len(self.frame_idx)

    def add(self, episode: Episode) -> None:
        """Append an episode: T+1 frames and states, T transitions (labels: the expert's, else the actions)."""
        steps = episode.length
        if steps == 0:
            return
        if len(episode.frames) != steps + 1 or len(episode.states) != steps + 1:
            raise ValueError(f"episode has {len(episode.frames)} frames for {steps} actions; expected {steps + 1}")
        self._reserve(self.n_frames + steps + 1)
        first = self.n_frames
        self.frames[first:first + steps + 1] = np.stack(episode.frames)
        self.states[first:first + steps + 1] = np.stack(episode.states)[:, :self.state_dim]
        self.n_frames += steps + 1
        labels = episode.labels if episode.labels else episode.actions
        terminal = np.zeros(steps, dtype=bool)
        terminal[-1] = episode.terminated
        self.frame_idx = np.concatenate([self.frame_idx, first + np.arange(steps)])
        self.start_idx = np.concatenate([self.start_idx, np.full(steps, first)])
        self.actions = np.concatenate([self.actions, np.stack(episode.actions)])
        self.labels = np.concatenate([self.labels, np.stack(labels)])
        self.rewards = np.concatenate([self.rewards, np.asarray(episode.rewards, dtype=np.float32)])
        self.terminal = np.concatenate([self.terminal, terminal])
        self.episodes += 1

    def _reserve(self, n: int) -> None:
        if n <= len(self.frames):
            return
        size = max(n, 2 * len(self.frames))
        frames = np.zeros((size, *self.frame_shape), dtype=np.uint8)
        frames[:self.n_frames] = self.frames[:self.n_frames]
        states = np.zeros((size, self.state_dim), dtype=np.float32)
        states[:self.n_frames] = self.states[:self.n_frames]
        self.frames, self.states = frames, states

    def stacked(self, frame_idx: np.ndarray, start_idx: np.ndarray) -> np.ndarray:
        """uint8 [B, frame_stack * C, H, W]: oldest frame first, clamped to the episode's first frame."""
        offsets = np.arange(-(self.frame_stack - 1), 1)
        idx = np.maximum(frame_idx[:, None] + offsets, start_idx[:, None])
        stacks = self.frames[idx]  # [B, F, C, H, W]
        return stacks.reshape(len(frame_idx), -1, *self.frame_shape[1:])

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        if len(self) == 0:
            raise ValueError("the demonstration buffer is empty: collect expert demos first (--expert-demos > 0)")
        return rng.integers(0, len(self), size=batch_size)

    def bc_batch(self, batch_size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(pixels uint8, joint positions or None, expert labels) for behaviour cloning."""
        i = self.sample_indices(batch_size, rng)
        pixels = torch.from_numpy(self.stacked(self.frame_idx[i], self.start_idx[i]))
        state = torch.from_numpy(self.states[self.frame_idx[i]]) if self.state_dim else None
        return pixels, state, torch.from_numpy(self.labels[i])

    def transitions(self, episodes: int | None = None) -> list[tuple[int, Transition]]:
        """(episode index, Transition) for the first `episodes` stored episodes (all by default), in the form an
        actor sends: the newest frame per step, and the frame and state that ended each episode."""
        out: list[tuple[int, Transition]] = []
        starts = np.flatnonzero(np.r_[True, self.start_idx[1:] != self.start_idx[:-1]]) if len(self) else []
        for key, first in enumerate(starts[:episodes]):
            last = first
            while last + 1 < len(self) and self.start_idx[last + 1] == self.start_idx[first]:
                last += 1
            for i in range(first, last + 1):
                f, end = self.frame_idx[i], bool(i == last)
                terminated = end and bool(self.terminal[i])
                out.append((key, Transition(
                    episode=key, step=i - first, frames=self.frames[f], state=self._state(f), action=self.actions[i],
                    reward=float(self.rewards[i]), terminated=terminated, truncated=end and not terminated,
                    intervention=False, success=terminated,  # the tasks end an episode early on success only
                    final_frames=self.frames[f + 1] if end else None, final_state=self._state(f + 1) if end else None)))
        return out

    def _state(self, frame: int) -> np.ndarray:
        return self.states[frame] if self.state_dim else np.zeros(self.action_dim, np.float32)

    def state_statistics(self, floor: float, frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the stored joint positions (of the first `frames` frames), std floored so a joint
        that never moved (the finger in reach) is not amplified into noise."""
        states = self.states[:self.n_frames if frames is None else frames]
        return states.mean(axis=0), np.maximum(states.std(axis=0), floor)

    # -- persistence (resuming a run) ------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, frames=self.frames[:self.n_frames], states=self.states[:self.n_frames],
                 frame_idx=self.frame_idx, start_idx=self.start_idx, actions=self.actions, labels=self.labels,
                 rewards=self.rewards, terminal=self.terminal, episodes=np.array(self.episodes))
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        with np.load(path) as data:
            if data["frames"].shape[1:] != self.frame_shape:
                raise ValueError(f"{path}: frames of shape {data['frames'].shape[1:]}, "
                                 f"this run uses {self.frame_shape}")
            self.frames, self.states = data["frames"].copy(), data["states"].copy()
            self.n_frames = len(self.frames)
            for name in ("frame_idx", "start_idx", "actions", "labels", "rewards", "terminal"):
                setattr(self, name, data[name].copy())
            self.episodes = int(data["episodes"])


def episode_transitions(episode: Episode, key: int) -> list[Transition]:
    """An episode as the transitions an actor would have sent for it (newest frame per step, final frame)."""
    steps, out = episode.length, []
    for i in range(steps):
        end = i == steps - 1
        out.append(Transition(episode=key, step=i, frames=episode.frames[i], state=episode.states[i],
                              action=episode.actions[i], reward=episode.rewards[i],
                              terminated=end and episode.terminated, truncated=end and not episode.terminated,
                              intervention=False, success=end and episode.success,
                              final_frames=episode.frames[i + 1] if end else None,
                              final_state=episode.states[i + 1] if end else None))
    return out
