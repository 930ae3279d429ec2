"""A node's health as plain data: a level, a one-line message and key/values.

Each node's core answers `health() -> Report`; hilserl/nodes/diagnostics.py turns reports into
`diagnostic_msgs/DiagnosticStatus` and publishes them. Nothing here imports rclpy or torch.

Levels mean: OK = doing its job; WARN = not (yet) doing it, with the reason (waiting for weights, stale
sensors, slow control loop, recently rejected weights); ERROR = cannot do it without a person (no usable
weights because every payload was rejected, training stopped on an exception).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}
REJECTION_WARN_S = 30.0  # a rejected payload (weights, transitions) keeps an otherwise running node at WARN this long


@dataclass
class Report:
    level: int
    message: str
    values: dict[str, object] = field(default_factory=dict)


class RateMeter:
    """Achieved rate and jitter of a periodic event, over the last `window` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self.ticks: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.ticks.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.ticks and now - self.ticks[0] > self.window:
            self.ticks.popleft()

    def rate(self, now: float | None = None) -> float:
        """Events per second; 0 when fewer than two events fell in the window."""
        self._trim(time.monotonic() if now is None else now)
        if len(self.ticks) < 2:
            return 0.0
        return (len(self.ticks) - 1) / max(self.ticks[-1] - self.ticks[0], 1e-9)

    def jitter(self, now: float | None = None) -> float:
        """Standard deviation of the intervals between events, in seconds (0 with fewer than 3 events)."""
        self._trim(time.monotonic() if now is None else now)
        if len(self.ticks) < 3:
            return 0.0
        intervals = [b - a for a, b in zip(self.ticks, list(self.ticks)[1:])]
        mean = sum(intervals) / len(intervals)
        return math.sqrt(sum((x - mean) ** 2 for x in intervals) / len(intervals))
