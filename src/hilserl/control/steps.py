"""The sim's per-step reports (`sim/step`) and lock-step stamp matching, in plain Python.

The sim publishes one report per step: episode index, step index, reward, flags, the episode's return so
far and the stamp of that step's observation. `StepLedger` keeps them by (episode, step) until the actor
takes them, so the outcome of an action is read from every step that followed it, never from "the latest
message", and a terminal report is never lost to a newer one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

Stamp = tuple[int, int]  # (sec, nanosec) of the observation's header


@dataclass(frozen=True)
class StepReport:
    episode: int
    step: int  # 0 = the episode's first observation (after a reset)
    reward: float  # of the step that led to this observation (0 at step 0)
    terminated: bool
    truncated: bool
    success: bool
    episode_return: float  # the sim's sum of rewards of this episode through this step
    stamp: Stamp

    @property
    def key(self) -> tuple[int, int]:
        return (self.episode, self.step)

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated

    @classmethod
    def from_json(cls, text: str) -> "StepReport":
        """Raises ValueError (with the reason) on anything malformed."""
        try:
            info = json.loads(text)
            return cls(episode=int(info["episode"]), step=int(info["step"]), reward=float(info["reward"]),
                       terminated=bool(info["terminated"]), truncated=bool(info["truncated"]),
                       success=bool(info["success"]), episode_return=float(info["episode_return"]),
                       stamp=(int(info["stamp"][0]), int(info["stamp"][1])))
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as err:
            raise ValueError(f"not a step report: {type(err).__name__}: {err}") from None

    def to_json(self) -> str:
        return json.dumps({"episode": self.episode, "step": self.step, "reward": self.reward,
                           "success": self.success, "terminated": self.terminated, "truncated": self.truncated,
                           "episode_return": self.episode_return, "stamp": list(self.stamp)})


class StepLedger:
    """Step reports by (episode, step), kept until taken; `keep` bounds the untaken ones (terminals stay)."""

    def __init__(self, keep: int = 1000):
        self.keep = keep
        self.reports: dict[tuple[int, int], StepReport] = {}
        self.cursor: tuple[int, int] | None = None  # every report at or before this key has been taken
        self.newest: StepReport | None = None

    def add(self, report: StepReport) -> None:
        if self.cursor is not None and report.key <= self.cursor:
            return  # taken already: a lock-step sim re-sends its current step
        self.reports[report.key] = report
        if self.newest is None or report.key > self.newest.key:
            self.newest = report
        while len(self.reports) > self.keep:  # drop the oldest report that does not end an episode
            oldest = next((k for k in sorted(self.reports) if not self.reports[k].ended), None)
            if oldest is None:
                break
            del self.reports[oldest]

    def at_stamp(self, stamp: Stamp) -> StepReport | None:
        """The report of the observation with this stamp, if it has arrived (taken or not)."""
        if self.newest is not None and self.newest.stamp == stamp:
            return self.newest
        return next((r for r in self.reports.values() if r.stamp == stamp), None)

    def take_through(self, key: tuple[int, int]) -> list[StepReport]:
        """Every untaken report up to and including `key`, in order."""
        taken = sorted((k for k in self.reports if k <= key))
        self.cursor = max(self.cursor, key) if self.cursor is not None else key
        return [self.reports.pop(k) for k in taken]


class StampMatcher:
    """Lock-step: act once per simulation step, when every sensor shows that same step."""

    def __init__(self):
        self.last: Stamp | None = None  # the step decided on last; the caller sets it

    def common(self, stamps: Iterable[Stamp]) -> Stamp | None:
        """The stamp all sensors share, if they share one not acted on yet (`last`), else None."""
        unique = set(stamps)
        if len(unique) != 1:
            return None
        stamp = unique.pop()
        return None if stamp == self.last else stamp
