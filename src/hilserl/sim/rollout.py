"""Episodes in the Genesis task, with observations built exactly as the actor node builds them.

Pretraining, `infer --sim` and the benchmark all run episodes through `run_episode`: camera frames go
through one `FrameStacker`, joint positions through `joint_state_vector`, and a policy acts through
`InferencePolicy.act`, so what a checkpoint sees here is what it sees behind ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hilserl.kinematics.panda import panda_controller
from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy
from hilserl.policies.observation import FrameStacker, joint_state_vector
from hilserl.sim.task import Observation, PandaTask, action_to_targets

# (observation, stacked pixels, step index) -> action in [-1, 1]^action_dim
Controller = Callable[[Observation, np.ndarray, int], np.ndarray]


@dataclass
class Episode:
    seed: int
    frames: list[np.ndarray] = field(default_factory=list)  # newest frame of each stack [3*cams, P, P]; T+1
    states: list[np.ndarray] = field(default_factory=list)  # joint positions (8,) float32; T+1
    actions: list[np.ndarray] = field(default_factory=list)  # executed actions (ee_delta: after clipping); T
    labels: list[np.ndarray] = field(default_factory=list)  # expert actions at the same states; T (or none)
    rewards: list[float] = field(default_factory=list)
    video: list[np.ndarray] = field(default_factory=list)  # camera 0 frames at render size, when recorded
    success: bool = False
    terminated: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))


def policy_controller(policy: InferencePolicy, *, deterministic: bool, step: int = 0,
                      generator: torch.Generator | None = None) -> Controller:
    """The actor node's decision: stacked pixels + joint positions -> `InferencePolicy.act`."""
    def act(obs: Observation, pixels: np.ndarray, t: int) -> np.ndarray:
        state = joint_state_vector(policy.config, obs.joint_positions)
        return policy.act(pixels, state, deterministic=deterministic, step=step, generator=generator)
    return act


def command_for(config: PolicyConfig) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(joint positions, action) -> (the sim's joint targets, the executed action to store), in the config's
    action space: joint deltas directly, end-effector deltas through the Panda's kinematics as the actor does."""
    if config.action_space == "joint_delta":
        return lambda q, action: (action_to_targets(q, action), action)
    controller = panda_controller(config.ee_action_space())

    def ee_command(q: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        command = controller.command(q, action)
        return command.joint_targets, command.executed_action
    return ee_command


def run_episode(task: PandaTask, config: PolicyConfig, seed: int, controller: Controller,
                labeler: Callable[[Observation], np.ndarray] | None = None, record_video: bool = False,
                on_step: Callable[[int], None] | None = None) -> Episode:
    """One episode from `task.reset(seed)` until it terminates or is truncated.

    `controller` chooses the executed action; `labeler` (the expert) labels every visited state.
    """
    stacker = FrameStacker(config)
    command = command_for(config)
    obs = task.reset(seed=seed)
    episode = Episode(seed=seed)
    frame_channels = 3 * config.num_cameras
    t, result = 0, None
    while True:
        pixels = stacker.push(obs.images)
        episode.frames.append(pixels[-frame_channels:])
        episode.states.append(np.asarray(obs.joint_positions, dtype=np.float32))
        if record_video:
            episode.video.append(obs.images[0])
        if result is not None and (result.terminated or result.truncated):
            episode.success, episode.terminated = bool(result.success), bool(result.terminated)
            return episode
        action = np.clip(np.asarray(controller(obs, pixels, t), dtype=np.float64), -1.0, 1.0)
        if labeler is not None:
            episode.labels.append(np.asarray(labeler(obs), dtype=np.float32))
        targets, executed = command(obs.joint_positions, action)
        result = task.step(targets)
        episode.actions.append(np.asarray(executed, dtype=np.float32))
        episode.rewards.append(float(result.reward))
        obs, t = result.observation, t + 1
        if on_step is not None:
            on_step(t)
