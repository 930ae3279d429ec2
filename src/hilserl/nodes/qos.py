"""The QoS profiles of hilserl's topics, one place each (names of the topics: hilserl/names.py)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def _profile(durability: DurabilityPolicy, depth: int) -> QoSProfile:
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=durability,
                      history=HistoryPolicy.KEEP_LAST, depth=depth)


# Latched: a subscriber that joins late gets the newest message (weights, ~/status, intervention).
LATCHED = _profile(DurabilityPolicy.TRANSIENT_LOCAL, 1)
# A latched history: a late subscriber gets every finished episode so far (sim/episodes, ~/episodes).
EPISODE_LOG = _profile(DurabilityPolicy.TRANSIENT_LOCAL, 1000)
# The sim's sensor streams. Lock-step simulation must not lose an observation (the sim waits for the
# command it answers), so they are reliable; hardware cameras publish best effort, which SENSOR_DATA accepts.
STREAM = _profile(DurabilityPolicy.VOLATILE, 5)
SENSOR_DATA = qos_profile_sensor_data
# sim/step: every step's report is read in order by (episode, step), so none may be overwritten before
# the actor takes it, a terminal one least of all; 100 steps is 10 s of a 10 Hz arm.
STEP_REPORTS = _profile(DurabilityPolicy.VOLATILE, 100)
# Position targets: only the newest matters.
COMMANDS = _profile(DurabilityPolicy.VOLATILE, 1)
# /transitions and /transitions_ack: batches are acknowledged and resent, the queue absorbs bursts.
TRANSITIONS = _profile(DurabilityPolicy.VOLATILE, 100)
# Like the joy package: reliable, volatile, a short queue; the actor reads only the newest.
TELEOP = _profile(DurabilityPolicy.VOLATILE, 10)
# Like diagnostic_updater: reliable, volatile, a short queue (each array replaces the previous one).
DIAGNOSTICS = _profile(DurabilityPolicy.VOLATILE, 10)
CLOCK = QoSProfile(depth=1)
