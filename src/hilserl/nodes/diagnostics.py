"""Node health on `/diagnostics` (what rqt_robot_monitor and diagnostic_aggregator read), plus a compact
latched `~/status` that publishes only on change.

A node adds it in a few lines (the actor's; the learner passes `learner_report`, the sim `sim_report`):

    from hilserl.nodes.diagnostics import Diagnostics, RateMeter, StatusTopic, actor_report
    self.status_pub = StatusTopic(self)            # instead of create_publisher(String, "~/status", ...)
    self.control_rate = RateMeter()                # and self.control_rate.tick(now) per command sent
    self.diagnostics = Diagnostics(self, actor_report())

`Diagnostics` calls the report function once a second and publishes one `DiagnosticStatus` named after
the node (e.g. "actor_0/actor") with a level, a one-line message and key/values. The report functions
for hilserl's nodes live here, so every node's health reads the same way; they use these node attributes:

  actor    state, reason, receiver (WeightsReceiver), commands_sent, rejected, last_rejection,
           episode_summaries, recorder, intervention, transitions_made, lockstep,
           control_rate (RateMeter, ticked once per command sent)
  learner  weights_version, last_digest, last_publish_time, learner_step, run_id, agent.config.policy;
           while training also loop (hilserl.training.loop.TrainingLoop: updates/s, losses from
           counters.last_metrics, transitions_seen), buffer_sizes (dict name -> int, or a method
           returning one) and training_error (str, '' = fine)
  sim      lockstep, episode, step_index, applied, refused, successes, real_time_factor(), finished()
  teleop   state (KeyboardState)

Levels mean: OK = doing its job; WARN = not (yet) doing it, with the reason (waiting for weights, stale
sensors, slow control loop, recently rejected weights); ERROR = cannot do it without a person (no usable
weights because every payload was rejected, training stopped on an exception).
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}

DIAGNOSTICS_TOPIC = "/diagnostics"
PERIOD_S = 1.0
STATUS_MIN_INTERVAL_S = 0.2  # ~/status publishes at most 5 times a second; the newest state always goes out
SLOW_CONTROL_RATIO = 0.8  # achieved control rate below this fraction of control_hz is a WARN
SLOW_SIM_RATIO = 0.8  # a real-time sim below this real-time factor is a WARN
REJECTION_WARN_S = 30.0  # a rejected weights payload keeps an otherwise running actor at WARN this long

# Like diagnostic_updater: reliable, volatile, a short queue (each array replaces the previous one).
DIAGNOSTICS_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                             history=HistoryPolicy.KEEP_LAST, depth=10)
LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST, depth=1)


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


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return ""
    return str(value)


def to_status(name: str, report: Report, hardware_id: str = "") -> DiagnosticStatus:
    status = DiagnosticStatus(name=name, message=report.message, hardware_id=hardware_id)
    status.level = bytes([report.level])
    status.values = [KeyValue(key=k, value=format_value(v)) for k, v in report.values.items()]
    return status


class Diagnostics:
    """Publishes `report(node)` on /diagnostics every `period` seconds."""

    def __init__(self, node, report: Callable[[object], Report], period: float = PERIOD_S):
        self.node, self.report = node, report
        self.name = node.get_fully_qualified_name().lstrip("/")
        self.hardware_id = socket.gethostname()
        self.pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        try:
            report = self.report(self.node)
        except Exception as err:  # a broken report must show up on the monitor, not kill the node
            report = Report(ERROR, f"diagnostics report failed: {type(err).__name__}: {err}")
        array = DiagnosticArray(status=[to_status(self.name, report, self.hardware_id)])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(array)


class StatusTopic:
    """A latched `~/status` that only publishes changed content, at most every `min_interval` seconds.

    Drop-in for the node's status publisher: `.publish(String(...))`. A change that comes too soon is
    held and published by a timer, so the newest state always goes out and `ros2 topic echo` stays quiet.
    """

    def __init__(self, node, topic: str = "~/status", min_interval: float = STATUS_MIN_INTERVAL_S):
        self.node, self.min_interval = node, min_interval
        self.pub = node.create_publisher(String, topic, LATCHED)
        self.last_data: str | None = None
        self.last_time = -math.inf
        self.pending: str | None = None
        self.timer = None

    def publish(self, msg: String) -> None:
        if msg.data == (self.pending if self.pending is not None else self.last_data):
            return
        now = time.monotonic()
        if now - self.last_time >= self.min_interval:
            self.pending = None
            self._send(msg.data, now)
        else:
            self.pending = msg.data
            if self.timer is None:
                self.timer = self.node.create_timer(self.min_interval, self._flush)

    def _flush(self) -> None:
        if self.pending is not None:
            data, self.pending = self.pending, None
            self._send(data, time.monotonic())
        else:
            self.node.destroy_timer(self.timer)
            self.timer = None

    def _send(self, data: str, now: float) -> None:
        self.pub.publish(String(data=data))
        self.last_data, self.last_time = data, now


# -- the reports -----------------------------------------------------------------------------------
class actor_report:  # noqa: N801 - used like a function: Diagnostics(node, actor_report())
    """Actor health: WAITING/HOLDING are WARN with their reason; RUNNING is OK unless the loop is slow."""

    def __init__(self):
        self.rejected_seen, self.rejected_at = 0, -math.inf
        self.digest_seen = None

    def __call__(self, node) -> Report:
        now = time.monotonic()
        meta = node.receiver.meta
        if node.receiver.loaded_digest != self.digest_seen:  # a load supersedes earlier rejections
            self.digest_seen, self.rejected_seen, self.rejected_at = node.receiver.loaded_digest, node.rejected, -math.inf
        elif node.rejected > self.rejected_seen:
            self.rejected_seen, self.rejected_at = node.rejected, now
        meter = getattr(node, "control_rate", None)
        asked = float(node.get_parameter("control_hz").value)
        rate = meter.rate(now) if meter else 0.0
        stats = node.recorder.stats
        summaries = node.episode_summaries
        recent = summaries[-20:]
        values = {
            "state": node.state, "reason": node.reason,
            "weights_version": meta.weights_version if meta else "",
            "weights_digest": node.receiver.loaded_digest or "",
            "weights_run_id": meta.run_id if meta else "", "learner_step": meta.learner_step if meta else "",
            "weights_rejected": node.rejected, "last_rejection": node.last_rejection,
            "control_hz": asked, "control_rate_hz": rate,
            "control_jitter_ms": 1e3 * meter.jitter(now) if meter else 0.0,
            "commands_sent": node.commands_sent,
            "intervening": node.intervention.human_action(now) is not None,
            "intervention_rate": stats.interventions / stats.steps if stats.steps else 0.0,
            "episode": stats.episode, "episode_steps": stats.steps, "episode_return": stats.episode_return,
            "episodes": len(summaries),
            "last_episode_return": summaries[-1]["return"] if summaries else "",
            "last_episode_success": summaries[-1]["success"] if summaries else "",
            "success_rate_last_20": sum(bool(s["success"]) for s in recent) / len(recent) if recent else "",
            "transitions": node.transitions_made,
            "unacked_batches": node.transition_sender.unacked_count if node.transition_sender else 0,
        }
        if node.state == "WAITING":
            if node.rejected:
                return Report(ERROR, f"no usable weights: {node.rejected} payload(s) rejected, last: "
                                     f"{node.last_rejection}", values)
            return Report(WARN, node.reason, values)
        if node.state == "HOLDING":
            return Report(WARN, f"holding: {node.reason}", values)
        if now - self.rejected_at < REJECTION_WARN_S:
            return Report(WARN, f"running weights v{meta.weights_version}; a newer payload was rejected: "
                                f"{node.last_rejection}", values)
        if not node.lockstep and meter and len(meter.ticks) >= 3 and rate < SLOW_CONTROL_RATIO * asked:
            return Report(WARN, f"control loop at {rate:.1f} Hz, below the {asked:g} Hz asked", values)
        return Report(OK, f"running weights v{meta.weights_version} ({node.receiver.loaded_digest[:12]})", values)


def learner_report(node) -> Report:
    """Learner health: OK while weights are out and training (if any) runs; ERROR if training died."""
    since = time.monotonic() - node.last_publish_time if node.last_publish_time else None
    loop = getattr(node, "loop", None)  # hilserl.training.loop.TrainingLoop, once training runs
    meter = getattr(node, "update_rate", None)
    values: dict[str, object] = {
        "weights_version": node.weights_version, "weights_digest": node.last_digest, "run_id": node.run_id,
        "policy": node.agent.config.policy,
        "learner_step": loop.counters.learner_step if loop else node.learner_step,
        "seconds_since_publish": since if since is not None else "",
        "updates_per_s": loop.counters.updates_per_second() if loop else (meter.rate() if meter else 0.0),
    }
    if loop:
        values["transitions_seen"] = loop.counters.transitions_seen
    buffers = getattr(node, "buffer_sizes", None)
    values |= {f"buffer/{k}": v for k, v in ((buffers() if callable(buffers) else buffers) or {}).items()}
    losses = loop.counters.last_metrics if loop else getattr(node, "losses", None)
    values |= {f"loss/{k}": v for k, v in (losses or {}).items()}
    guard = getattr(node, "guard", None)  # hilserl.training.guard.PublishGuard, when guarded publishing is on
    if guard is not None:
        values |= guard.report()
    error = getattr(node, "training_error", "")
    if error:
        return Report(ERROR, f"training stopped: {error}", values)
    if getattr(node, "guard_warning", ""):
        return Report(WARN, f"weights v{node.weights_version} republished: {node.guard_warning}", values)
    if node.weights_version == 0:
        return Report(WARN, "no weights published yet", values)
    return Report(OK, f"weights v{node.weights_version} ({node.last_digest[:12]}) published "
                      f"{since:.0f} s ago", values)


def sim_report(node) -> Report:
    """Sim health: the real-time factor (a slow real-time sim is WARN) and refused commands."""
    rtf = node.real_time_factor()
    values = {"mode": "lockstep" if node.lockstep else "realtime", "real_time_factor": rtf,
              "episode": node.episode, "step": node.step_index, "commands_applied": node.applied,
              "commands_refused": node.refused,
              "success_rate": sum(node.successes) / len(node.successes) if node.successes else ""}
    if node.finished():
        return Report(OK, f"done: {len(node.successes)} episodes, holding", values)
    if not node.lockstep and node.applied > 10 and rtf < SLOW_SIM_RATIO:
        return Report(WARN, f"sim runs at {rtf:.2f}x real time: slower than the arm it stands in for", values)
    if node.refused and node.refused >= node.applied:
        return Report(WARN, f"{node.refused} commands refused (out of limits or wrong length)", values)
    return Report(OK, f"episode {node.episode} step {node.step_index}, {rtf:.2f}x real time", values)


def teleop_report(node) -> Report:
    return Report(OK, "dead-man held: human in control" if node.state.deadman else "dead-man released",
                  {"deadman": node.state.deadman})
