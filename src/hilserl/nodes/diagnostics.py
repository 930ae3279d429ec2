"""Node health on `/diagnostics` (what rqt_robot_monitor and diagnostic_aggregator read), plus a compact
latched `~/status` that publishes only on change.

Each node (or its core) answers its health through one method returning a hilserl.health.Report; this
module only formats and publishes it. A node adds it in a few lines:

    self.status_pub = StatusTopic(self)               # instead of create_publisher(String, "~/status", ...)
    self.diagnostics = Diagnostics(self, self.health)  # health() -> Report, called once a second

`Diagnostics` publishes one `DiagnosticStatus` named after the node (e.g. "actor_0/actor") with the
report's level, one-line message and key/values. The levels are described in hilserl/health.py.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import String

from hilserl.health import ERROR, LEVEL_NAMES, OK, STALE, WARN, RateMeter, Report  # noqa: F401 - re-exported
from hilserl.names import DIAGNOSTICS_TOPIC, STATUS_TOPIC
from hilserl.nodes.qos import DIAGNOSTICS as DIAGNOSTICS_QOS
from hilserl.nodes.qos import LATCHED

PERIOD_S = 1.0
STATUS_MIN_INTERVAL_S = 0.2  # ~/status publishes at most 5 times a second; the newest state always goes out


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
    """Publishes `report()` (a node's health method) on /diagnostics every `period` seconds."""

    def __init__(self, node, report: Callable[[], Report], period: float = PERIOD_S):
        self.node, self.report = node, report
        self.name = node.get_fully_qualified_name().lstrip("/")
        self.hardware_id = socket.gethostname()
        self.pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        try:
            report = self.report()
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

    def __init__(self, node, topic: str = STATUS_TOPIC, min_interval: float = STATUS_MIN_INTERVAL_S):
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
