"""The actor's bookkeeping, in plain Python: who acts (policy or human), and the transitions that result.

`Intervention` turns the latest teleop reading into a human action while the dead-man is held.
`EpisodeRecorder` pairs each executed action with the observation it was taken in and the outcome that
followed, and hands finished transitions to a sink (the link to the learner). Each transition carries
the newest camera frame(s) only; the learner's buffer rebuilds stacks, so frames are sent and stored once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TeleopReading:
    received: float  # monotonic seconds
    axes: tuple[float, ...]
    buttons: tuple[int, ...]


@dataclass
class Intervention:
    """Maps a Joy reading to a human action; only while the dead-man button is held and the reading fresh."""

    axes: list[int]  # joy axis for each action dimension
    deadman_button: int = 0
    success_button: int = 1
    failure_button: int = 2
    scale: float = 1.0
    timeout: float = 0.5  # a silent teleop device releases control back to the policy
    last: TeleopReading | None = None
    _previous_buttons: tuple[int, ...] = ()

    def update(self, reading: TeleopReading) -> str | None:
        """Store a reading; returns "success"/"failure" on the press (rising edge) of a label button."""
        previous, self._previous_buttons = self._previous_buttons, reading.buttons
        self.last = reading
        for label, button in (("success", self.success_button), ("failure", self.failure_button)):
            if pressed(reading.buttons, button) and not pressed(previous, button):
                return label
        return None

    def success_held(self, now: float) -> bool:
        """The success button is down in a fresh reading (recording frames: they show success)."""
        return held(self.last, now, self.timeout, self.success_button)

    def read_at(self, now: float) -> float | None:
        """When the person in control sent the reading used now; None while the policy is in control."""
        return self.last.received if self.human_action(now) is not None else None

    def release(self) -> None:
        """A new episode starts with the policy in control: the next reading with the dead-man held takes over."""
        self.last = None

    def human_action(self, now: float) -> np.ndarray | None:
        r = self.last
        if r is None or now - r.received > self.timeout or not pressed(r.buttons, self.deadman_button):
            return None
        values = [r.axes[i] if 0 <= i < len(r.axes) else 0.0 for i in self.axes]
        return np.clip(np.asarray(values, dtype=np.float64) * self.scale, -1.0, 1.0)


def pressed(buttons: tuple[int, ...], index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


def held(reading: TeleopReading | None, now: float, timeout: float, index: int) -> bool:
    """Button `index` is down in `reading`, which is at most `timeout` seconds old."""
    return reading is not None and now - reading.received <= timeout and pressed(reading.buttons, index)


@dataclass
class Transition:
    episode: int
    step: int
    frames: np.ndarray  # uint8 [3*cams, P, P]: the newest frame(s) of the observation acted on
    state: np.ndarray  # float32 joint positions at that observation
    action: np.ndarray  # float32, what was executed (the human's during intervention)
    reward: float
    terminated: bool
    truncated: bool
    intervention: bool
    success: bool
    # On the last transition of an episode: the frame(s) and state that ended it (for truncation bootstrap).
    final_frames: np.ndarray | None = None
    final_state: np.ndarray | None = None
    weights_version: int = 0  # the policy weights that chose the action (0: none, e.g. a demonstration)


def acting_version(votes: Mapping[int, int]) -> int | None:
    """The weights version that chose most of an episode's actions (`votes`: version -> actions it chose); a tie
    goes to the newer version, since an episode can straddle a weights update. None without votes. The learner's
    guard credits episodes by this rule, and the actor's episode summaries name the same version."""
    return max(votes, key=lambda v: (votes[v], v)) if votes else None


@dataclass
class EpisodeStats:
    episode: int = 0
    steps: int = 0
    episode_return: float = 0.0
    interventions: int = 0
    versions: Counter = field(default_factory=Counter)  # weights version -> policy steps it chose


class EpisodeRecorder:
    """Acted-on observation + action, then the outcome that followed -> one Transition to `sink`."""

    def __init__(self, sink: Callable[[Transition], None]):
        self.sink = sink
        self.pending: tuple[np.ndarray, np.ndarray, np.ndarray, bool, int, int] | None = None
        self.stats = EpisodeStats()
        self.last_closed: dict = {"steps": 0, "interventions": 0}  # the summary end_episode last returned

    def acted(self, frames: np.ndarray, state: np.ndarray, action: np.ndarray, intervention: bool,
              weights_version: int = 0) -> None:
        self.pending = (frames, state.astype(np.float32), action.astype(np.float32), intervention, self.stats.steps,
                        weights_version)
        self.stats.steps += 1
        self.stats.interventions += int(intervention)
        if not intervention:
            self.stats.versions[weights_version] += 1

    def outcome(self, reward: float, terminated: bool, truncated: bool, success: bool,
                next_frames: np.ndarray | None = None, next_state: np.ndarray | None = None) -> dict | None:
        """The result of the pending action. Returns the episode summary when this ended the episode."""
        if self.pending is None:
            return None
        frames, state, action, intervention, step, weights_version = self.pending
        self.pending = None
        done = terminated or truncated
        self.stats.episode_return += reward
        self.sink(Transition(episode=self.stats.episode, step=step, frames=frames, state=state, action=action,
                             reward=float(reward), terminated=terminated, truncated=truncated,
                             intervention=intervention, success=success,
                             final_frames=next_frames if done else None,
                             final_state=None if not done or next_state is None else next_state.astype(np.float32),
                             weights_version=weights_version))
        return self.end_episode(success) if done else None

    def end_episode(self, success: bool) -> dict:
        s = self.stats
        summary = {"episode": s.episode, "steps": s.steps, "return": s.episode_return, "success": success,
                   "interventions": s.interventions,
                   "intervention_rate": s.interventions / s.steps if s.steps else 0.0,
                   # a person's steps cast no vote here: their weights chose nothing
                   "weights_version": acting_version(s.versions)}
        self.stats = EpisodeStats(episode=s.episode + 1)
        self.pending = None
        self.last_closed = summary
        return summary
