"""The actor's health, in plain Python: its state, why, and what /diagnostics shows about it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hilserl.health import ERROR, OK, REJECTION_WARN_S, WARN, RateMeter, Report

WAITING, RUNNING, HOLDING = "WAITING", "RUNNING", "HOLDING"
SLOW_CONTROL_RATIO = 0.8  # achieved control rate below this fraction of control_hz is a WARN
RECENT_EPISODES = 20


@dataclass
class ActorHealth:
    """What the actor is doing, and the Report for it. The node updates the fields; `report()` (for
    /diagnostics) and `status()` (for `~/status`) read them."""

    control_hz: float
    lockstep: bool
    state: str = WAITING
    reason: str = ""
    rejected: int = 0
    last_rejection: str = ""
    commands_sent: int = 0
    transitions: int = 0
    control_rate: RateMeter = field(default_factory=RateMeter)  # ticked once per command sent
    episodes: list[dict] = field(default_factory=list)
    _rejected_seen: int = 0
    _rejected_at: float = -math.inf
    _digest_seen: str | None = None

    def enter(self, state: str, reason: str) -> bool:
        """Switch to `state` for `reason`; True when that changes anything (the node then logs and publishes)."""
        if (state, reason) == (self.state, self.reason):
            return False
        self.state, self.reason = state, reason
        return True

    def weights_rejected(self, reason: str) -> None:
        self.rejected, self.last_rejection = self.rejected + 1, reason

    def status(self, node: str, weights, digest: str | None, outbox) -> dict:
        """What `~/status` shows; `weights`, `digest` and `outbox` as in `report()`."""
        return {"node": node, "state": self.state, "reason": self.reason,
                "weights_version": weights.weights_version if weights else None, "digest": digest,
                "rejected": self.rejected, "last_rejection": self.last_rejection, "episodes": len(self.episodes),
                "transitions_rejected": outbox.rejected_batches if outbox else 0,
                "last_transitions_rejection": outbox.last_rejection if outbox else "",
                "last_episode": self.episodes[-1] if self.episodes else None}

    def report(self, now: float, weights, digest: str | None, intervening: bool, episode_stats, outbox) -> Report:
        """`weights`: the loaded WeightsMeta (or None); `episode_stats`: the recorder's open episode; `outbox`:
        the link to the learner (unacked_count, rejected_batches, last_rejection, rejecting) or None."""
        if digest != self._digest_seen:  # a load supersedes earlier rejections
            self._digest_seen, self._rejected_seen, self._rejected_at = digest, self.rejected, -math.inf
        elif self.rejected > self._rejected_seen:
            self._rejected_seen, self._rejected_at = self.rejected, now
        meter, asked = self.control_rate, self.control_hz
        rate = meter.rate(now)
        stats, recent = episode_stats, self.episodes[-RECENT_EPISODES:]
        values = {
            "state": self.state, "reason": self.reason,
            "weights_version": weights.weights_version if weights else "", "weights_digest": digest or "",
            "weights_run_id": weights.run_id if weights else "", "learner_step": weights.learner_step if weights else "",
            "weights_rejected": self.rejected, "last_rejection": self.last_rejection,
            "control_hz": asked, "control_rate_hz": rate, "control_jitter_ms": 1e3 * meter.jitter(now),
            "commands_sent": self.commands_sent, "intervening": intervening,
            "intervention_rate": stats.interventions / stats.steps if stats.steps else 0.0,
            "episode": stats.episode, "episode_steps": stats.steps, "episode_return": stats.episode_return,
            "episodes": len(self.episodes),
            "last_episode_return": self.episodes[-1]["return"] if self.episodes else "",
            "last_episode_success": self.episodes[-1]["success"] if self.episodes else "",
            "success_rate_last_20": sum(bool(s["success"]) for s in recent) / len(recent) if recent else "",
            "transitions": self.transitions, "unacked_batches": outbox.unacked_count if outbox else 0,
            "transitions_rejected": outbox.rejected_batches if outbox else 0,
            "last_transitions_rejection": outbox.last_rejection if outbox else "",
        }
        if self.state == WAITING:
            if self.rejected:
                return Report(ERROR, f"no usable weights: {self.rejected} payload(s) rejected, last: "
                                     f"{self.last_rejection}", values)
            return Report(WARN, self.reason, values)
        if self.state == HOLDING:
            return Report(WARN, f"holding: {self.reason}", values)
        if outbox is not None and outbox.rejecting:  # the learner refuses what this actor records
            return Report(ERROR, f"the learner rejects this actor's transitions: {outbox.last_rejection}", values)
        if now - self._rejected_at < REJECTION_WARN_S:
            return Report(WARN, f"running weights v{weights.weights_version}; a newer payload was rejected: "
                                f"{self.last_rejection}", values)
        if not self.lockstep and len(meter.ticks) >= 3 and rate < SLOW_CONTROL_RATIO * asked:
            return Report(WARN, f"control loop at {rate:.1f} Hz, below the {asked:g} Hz asked", values)
        return Report(OK, f"running weights v{weights.weights_version} ({(digest or '')[:12]})", values)
