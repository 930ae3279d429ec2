"""What the actor checks before acting, in plain Python: weights that fit the arm, and fresh sensors that show
the same step (lock-step)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hilserl.control.steps import Stamp, StampMatcher, StepLedger, StepReport


def incompatibility(config, joints: Sequence[str], image_topics: Sequence[str]) -> str | None:
    """Why a policy config cannot see this arm (None = it can); what its actions need: control/arm_command.py."""
    if config.state_dim not in (0, len(joints)):
        return f"policy reads {config.state_dim} state values; this actor provides {len(joints)} joint positions"
    if config.num_cameras != len(image_topics):
        return f"policy sees {config.num_cameras} camera(s); `image_topics` names {len(image_topics)}"
    return None


def observation_problem(now: float, frames: Mapping[str, tuple], image_topics: Sequence[str],
                        joint_state: tuple | None, stale_after: float, lockstep: bool) -> str | None:
    """Why the newest observation cannot be acted on (None = it can). `frames[topic]` and `joint_state` are
    (received monotonic time, stamp, value); lock-step has no staleness (the sim waits for the actor)."""
    for topic in image_topics:
        if topic not in frames:
            return f"no image received yet on {topic}"
        age = now - frames[topic][0]
        if not lockstep and age > stale_after:
            return f"image on {topic} is stale ({age:.2f} s old, limit {stale_after} s)"
    if joint_state is None:
        return "no joint_states received yet"
    age = now - joint_state[0]
    if not lockstep and age > stale_after:
        return f"joint_states is stale ({age:.2f} s old, limit {stale_after} s)"
    return None


class Observations:
    """The newest image per camera and the newest joint positions, each kept as (received monotonic time,
    stamp, value), and which simulation step they show in lock-step."""

    def __init__(self, joints: Sequence[str], image_topics: Sequence[str], lockstep: bool):
        self.joints, self.image_topics, self.lockstep = list(joints), list(image_topics), lockstep
        self.frames: dict[str, tuple[float, Stamp, np.ndarray]] = {}
        self.joint_state: tuple[float, Stamp, np.ndarray] | None = None
        self.matcher = StampMatcher()

    def add_image(self, topic: str, received: float, stamp: Stamp, rgb: np.ndarray) -> None:
        self.frames[topic] = (received, stamp, rgb)

    def add_joint_state(self, received: float, stamp: Stamp, names: Sequence[str],
                        positions: Sequence[float]) -> str | None:
        """Keep the positions of `joints` in their order; returns why the message cannot be used, else None."""
        index = {name: i for i, name in enumerate(names)}
        missing = [j for j in self.joints if j not in index]
        if missing or len(positions) != len(names):
            return f"joint_states lacks positions for {missing or 'some joints'}"
        self.joint_state = (received, stamp, np.array([positions[index[j]] for j in self.joints]))
        return None

    def problem(self, now: float, stale_after: float) -> str | None:
        return observation_problem(now, self.frames, self.image_topics, self.joint_state, stale_after, self.lockstep)

    def current_report(self, ledger: StepLedger, uses_reports: bool) -> tuple[bool, StepReport | None]:
        """(ready, the sim's report for the observation to act on; None without a sim).

        Lock-step: ready once every sensor shows the same new step and, with a sim, its report is in; the step
        counts as acted on only once `take()` says so.
        """
        if not self.lockstep:
            return True, ledger.newest
        stamp = self.matcher.common([self.frames[t][1] for t in self.image_topics] + [self.joint_state[1]])
        report = ledger.at_stamp(stamp) if stamp is not None else None
        if stamp is None or (report is None and uses_reports):
            return False, None
        return True, report

    def take(self) -> None:
        """Lock-step: the step every sensor shows is acted on; the next action waits for a new one."""
        if self.lockstep:
            self.matcher.last = self.joint_state[1]

    @property
    def shown_at(self) -> float:
        """When the newest observation began to arrive (monotonic s): its first sensor message's arrival."""
        return min([self.frames[t][0] for t in self.image_topics] + [self.joint_state[0]])

    @property
    def images(self) -> list[np.ndarray]:
        return [self.frames[t][2] for t in self.image_topics]

    @property
    def q(self) -> np.ndarray:
        return self.joint_state[2]
