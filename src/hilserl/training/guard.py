"""Guarded publishing: keep the best weights version and publish it again when a newer one is clearly worse.

Plain Python, no ROS and no torch. The learner tells the guard what it published (with an opaque snapshot
of the training state at that moment) and which version produced each finished episode; the guard answers
whether to roll back, and to which snapshot.

The rule, in numbers:
  best      the version with the highest lower confidence bound (Wilson, 95%) on its success rate among
            those seen over at least `min_episodes` episodes; the first published version is best until
            another beats it. A lower bound rewards evidence: 5/5 (bound 0.57) does not displace 19/20 (0.76).
  recent    the newest `window` episodes produced by versions published after the best was last published
  rollback  when `recent` holds at least `min_episodes` episodes, its success rate is at least `margin` below
            the best's, and a one-sided Fisher exact test says "recent succeeds less often than best" at level
            `alpha`. Both conditions: the drop must be large (margin) and unlikely to be chance (alpha).
            E.g. best 19/20: 1/5 recent rolls back (p 0.002), 3/5 does not (p 0.09); best 5/5: 0/5 rolls back
            (p 0.004), 2/5 does not (p 0.08).

After a rollback the best snapshot is published under a new version number; episodes of that new number
count towards the best version (same tensors), and `recent` starts empty again.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hilserl.control.episode import acting_version

MIN_EPISODES = 5
WINDOW = 10
MARGIN = 0.2
ALPHA = 0.05
MAX_SNAPSHOTS = 4  # candidates kept beside the best (each is a copy of the training state)


def wilson_lower_bound(successes: int, episodes: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for a success rate; 0 with no episodes."""
    if episodes == 0:
        return 0.0
    p = successes / episodes
    centre = p + z * z / (2 * episodes)
    spread = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes))
    return (centre - spread) / (1 + z * z / episodes)


def fisher_less(k_recent: int, n_recent: int, k_best: int, n_best: int) -> float:
    """One-sided Fisher exact p-value for "recent succeeds less often than best": the probability, with the
    successes of both samples pooled and shared out at random, of `k_recent` or fewer landing in recent."""
    total, successes = n_recent + n_best, k_recent + k_best
    denominator = math.comb(total, n_recent)
    return sum(math.comb(successes, k) * math.comb(total - successes, n_recent - k)
               for k in range(0, k_recent + 1)) / denominator


@dataclass
class VersionRecord:
    successes: int = 0
    episodes: int = 0

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")


@dataclass
class Rollback:
    best_version: int
    snapshot: Any
    reason: str


@dataclass
class PublishGuard:
    min_episodes: int = MIN_EPISODES
    window: int = WINDOW
    margin: float = MARGIN
    alpha: float = ALPHA
    max_snapshots: int = MAX_SNAPSHOTS
    records: dict[int, VersionRecord] = field(default_factory=dict)
    aliases: dict[int, int] = field(default_factory=dict)  # republished version -> the version it copies
    snapshots: dict[int, Any] = field(default_factory=dict)
    best: int | None = None
    line_start: int = 0  # the version number under which the best was last published
    recent: deque = field(default_factory=deque)  # (version, success) of versions after line_start
    rollbacks: int = 0
    last_event: str = ""

    def __post_init__(self) -> None:
        if self.min_episodes < 1 or self.window < self.min_episodes or not 0 <= self.margin <= 1 \
                or not 0 < self.alpha < 1:
            raise ValueError(f"invalid guard settings: min_episodes {self.min_episodes}, window {self.window}, "
                             f"margin {self.margin}, alpha {self.alpha}")
        self.recent = deque(maxlen=self.window)

    def origin(self, version: int) -> int:
        return self.aliases.get(version, version)

    def published(self, version: int, snapshot: Any, copy_of: int | None = None) -> None:
        """`version` went out; `snapshot` is what a rollback to it restores. `copy_of`: a republished version."""
        if copy_of is not None:
            self.aliases[version] = self.origin(copy_of)
            self.line_start, self.recent = version, deque(maxlen=self.window)
            return
        self.records.setdefault(version, VersionRecord())
        self.snapshots[version] = snapshot
        if self.best is None:  # episodes heard before (a resumed run's journal) belong to no line of ours
            self.best, self.line_start, self.recent = version, version, deque(maxlen=self.window)
        candidates = sorted(v for v in self.snapshots if v != self.best)
        for old in candidates[:max(0, len(candidates) - self.max_snapshots)]:
            del self.snapshots[old]  # too old to become best without its episodes ever being enough

    def episode(self, version: int, success: bool) -> None:
        """An episode ended; `version` produced it (the version that acted most of its steps)."""
        origin = self.origin(version)
        record = self.records.setdefault(origin, VersionRecord())
        record.episodes += 1
        record.successes += int(success)
        if version > self.line_start and origin != self.best:
            self.recent.append((version, bool(success)))
        self._promote(origin)

    def _promote(self, version: int) -> None:
        record, best = self.records[version], self.records.get(self.best)
        if version == self.best or version not in self.snapshots or record.episodes < self.min_episodes:
            return
        if best is None or wilson_lower_bound(record.successes, record.episodes) > \
                wilson_lower_bound(best.successes, best.episodes):
            previous, self.best = self.best, version
            self.last_event = (f"v{version} is the new best: {record.successes}/{record.episodes} episodes "
                               f"(was v{previous})")
            self.recent = deque(((v, s) for v, s in self.recent if v > version), maxlen=self.window)
            self.line_start = max(self.line_start, version)

    def check(self) -> Rollback | None:
        """A rollback to the best version when the recent episodes are clearly worse; else None."""
        best = self.records.get(self.best)
        if best is None or best.episodes == 0 or len(self.recent) < self.min_episodes:
            return None
        k, n = sum(s for _, s in self.recent), len(self.recent)
        if k / n > best.rate - self.margin:
            return None
        p = fisher_less(k, n, best.successes, best.episodes)
        if p >= self.alpha:
            return None
        versions = sorted({v for v, _ in self.recent})
        self.rollbacks += 1
        self.last_event = (f"rollback to v{self.best}: versions {versions} succeeded {k}/{n} of their newest episodes, "
                           f"v{self.best} {best.successes}/{best.episodes} (one-sided Fisher p={p:.3g})")
        return Rollback(self.best, self.snapshots[self.best], self.last_event)

    def report(self) -> dict[str, Any]:
        """Values for /diagnostics."""
        best = self.records.get(self.best, VersionRecord())
        k = sum(s for _, s in self.recent)
        return {"guard/best_version": self.best or 0, "guard/best_success": f"{best.successes}/{best.episodes}",
                "guard/recent_success": f"{k}/{len(self.recent)}", "guard/rollbacks": self.rollbacks,
                "guard/last_event": self.last_event}


class EpisodeVersions:
    """Which weights version produced each episode, from the transitions as they arrive: the version that
    chose most of the policy's actions in it (an episode can straddle a weights update; ties go to the newer).
    An episode a person drove for most of its steps (a demonstration, or a rescue from early on) is theirs, not
    any version's: it is not credited, so demonstrations never make the version they ran beside look good."""

    def __init__(self, guard: PublishGuard):
        self.guard = guard
        self.counts: dict[tuple[str, int], dict[int, int]] = {}  # (stream, episode) -> {version: policy steps}
        self.steps: dict[tuple[str, int], int] = {}  # (stream, episode) -> steps so far, everyone's

    def add(self, stream: str, transitions) -> int:
        """Feed a batch of one stream's transitions; returns how many episodes it credited."""
        credited = 0
        for t in transitions:
            key = (stream, t.episode)
            votes = self.counts.setdefault(key, {})
            self.steps[key] = self.steps.get(key, 0) + 1
            if not t.intervention:
                votes[t.weights_version] = votes.get(t.weights_version, 0) + 1
            if t.terminated or t.truncated:
                votes, steps = self.counts.pop(key), self.steps.pop(key)
                version = acting_version(votes)
                # 0: no policy weights acted (e.g. an actor that predates the field)
                if version is not None and version > 0 and 2 * sum(votes.values()) >= steps:
                    self.guard.episode(version, t.success)
                    credited += 1
        return credited
