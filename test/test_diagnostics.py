"""/diagnostics from real learner and actor processes: levels, reasons, weights version and digest.

The node wiring these tests need is listed in hilserl/nodes/diagnostics.py's docstring.
"""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pytest

from hilserl.nodes.diagnostics import ERROR, OK, WARN, RateMeter, Report, format_value, to_status
from rosutil import init_checkpoint, NodeProcess, Probe, ros_env, unique_domain_id, wait_for

STARTUP = 90.0


# -- pure parts ------------------------------------------------------------------------------------
def test_rate_meter_rate_jitter_and_window():
    meter = RateMeter(window=2.0)
    assert meter.rate(0.0) == 0.0 and meter.jitter(0.0) == 0.0
    for i in range(11):
        meter.tick(i * 0.1)
    assert meter.rate(1.0) == pytest.approx(10.0) and meter.jitter(1.0) == pytest.approx(0.0, abs=1e-9)
    irregular = RateMeter(window=10.0)
    for t in (0.0, 0.1, 0.3, 0.4, 0.6):
        irregular.tick(t)
    assert irregular.rate(0.6) == pytest.approx(4 / 0.6) and irregular.jitter(0.6) == pytest.approx(0.05)
    assert meter.rate(5.0) == 0.0  # every tick older than the window: a stopped loop reads 0 Hz


def test_status_conversion():
    status = to_status("actor_0/actor", Report(WARN, "waiting", {"x": 0.123456, "ok": True, "none": None,
                                                                 "d": {"a": 1}}))
    assert status.level == bytes([WARN]) and status.name == "actor_0/actor" and status.message == "waiting"
    assert {kv.key: kv.value for kv in status.values} == {"x": "0.1235", "ok": "True", "none": "", "d": '{"a":1}'}
    assert format_value(3) == "3"


# -- real processes --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    return init_checkpoint(tmp_path_factory.mktemp("ckpt"), "drqv2", "--seed", "5")


class Monitor:
    """What rqt_robot_monitor would show: the newest DiagnosticStatus per name."""

    def __init__(self, probe: Probe):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.probe = probe
        self.arrays = probe.subscribe(DiagnosticArray, "/diagnostics",
                                      QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def latest(self, name: str) -> dict | None:
        with self.probe.lock:
            statuses = [s for _, array in self.arrays for s in array.status if s.name == name]
        if not statuses:
            return None
        s = statuses[-1]
        return {"level": s.level[0], "message": s.message, "values": {kv.key: kv.value for kv in s.values}}

    def wait(self, name: str, predicate, what: str, procs) -> dict:
        return wait_for(lambda: (s := self.latest(name)) is not None and predicate(s) and s, STARTUP, what, procs)


def test_actor_waiting_is_warn_rejected_only_is_error_then_ok_with_the_learners_weights(tmp_path, checkpoint):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String, UInt8MultiArray

    from hilserl.nodes.image_conv import rgb_to_image_msg
    from hilserl.nodes.wire import bytes_to_msg_data
    from hilserl.robot import HOME, JOINTS

    domain = unique_domain_id()
    env = ros_env(domain)
    probe = Probe(domain)
    monitor = Monitor(probe)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    status = probe.subscribe(String, "/actor/status", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))
    procs: list[NodeProcess] = []
    try:
        procs.append(NodeProcess("actor", {"control_hz": 10.0}, env, tmp_path))
        waiting = monitor.wait("actor", lambda s: True, "the actor's first diagnostics", procs)
        assert waiting["level"] == WARN and "waiting for weights on /policy_weights" in waiting["message"]
        assert waiting["values"]["state"] == "WAITING" and waiting["values"]["weights_version"] == ""

        # Only a bad payload so far: the actor cannot run without a person fixing the learner.
        rogue = probe.node.create_publisher(UInt8MultiArray, "/policy_weights", latched)
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(pickle.dumps({"w": np.zeros(3)}))
        rogue.publish(msg)
        error = monitor.wait("actor", lambda s: s["level"] == ERROR, "ERROR after a rejected payload", procs)
        assert "no usable weights" in error["message"] and "pickle" in error["message"]
        probe.node.destroy_publisher(rogue)

        procs.append(NodeProcess("learner", {"checkpoint": checkpoint["path"]}, env, tmp_path))
        learner = monitor.wait("learner", lambda s: s["values"].get("weights_version") == "1",
                               "the learner's diagnostics", procs)
        assert learner["level"] == OK and learner["values"]["weights_digest"] == checkpoint["inference_digest"]
        assert learner["values"]["policy"] == "drqv2" and "v1" in learner["message"]

        # Sensors flow: the actor runs the learner's weights.
        image, joints = Image(), JointState(name=list(JOINTS), position=list(HOME))
        rgb_to_image_msg(np.zeros((84, 84, 3), dtype=np.uint8), image)
        image_pub = probe.node.create_publisher(Image, "/camera/image_raw", 10)
        joint_pub = probe.node.create_publisher(JointState, "/joint_states", 10)

        def sensors():
            image_pub.publish(image)
            joint_pub.publish(joints)
        timer = probe.node.create_timer(0.05, sensors)
        running = monitor.wait("actor", lambda s: s["level"] == OK and float(s["values"]["control_rate_hz"]) > 0,
                               "the actor OK and commanding", procs)
        values = running["values"]
        assert values["state"] == "RUNNING" and values["weights_version"] == "1"
        assert values["weights_digest"] == checkpoint["inference_digest"]
        assert values["weights_digest"][:12] in running["message"]
        # Rates are measured on a loaded machine: check they are reported and sane, not how fast they are.
        assert 0 < float(values["control_rate_hz"]) <= 20.0 and float(values["control_jitter_ms"]) >= 0
        assert values["intervening"] == "False" and values["intervention_rate"] == "0"

        # ~/status is compact: steady running publishes nothing new.
        time.sleep(0.5)
        before = len(status)
        time.sleep(2.0)
        assert len(status) == before, [json.loads(m.data)["state"] for _, m in status[before:]]

        # Sensors stop: HOLDING is a WARN that names the stale input.
        probe.node.destroy_timer(timer)
        holding = monitor.wait("actor", lambda s: s["values"]["state"] == "HOLDING", "HOLDING after sensors stop",
                               procs)
        assert holding["level"] == WARN and "stale" in holding["message"]
    finally:
        for p in procs:
            p.stop()
        probe.close()
