"""The sim node as an actor sees it: well-formed messages, commands applied, bad commands refused unapplied."""

from __future__ import annotations

import json
import math

import numpy as np

from hilserl.robot import HOME, JOINT_UPPER, JOINTS
from rosutil import NodeProcess, Probe, ros_env, unique_domain_id, wait_for

STARTUP = 240.0  # a machine's first Genesis scene build compiles kernels


def test_sim_node_messages_commands_and_refusals(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float64MultiArray, String

    domain = unique_domain_id()
    probe = Probe(domain)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    stream = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    joints = probe.subscribe(JointState, "/joint_states", stream)
    images = probe.subscribe(Image, "/camera/image_raw", stream)
    infos = probe.subscribe(CameraInfo, "/camera/camera_info", stream)
    steps = probe.subscribe(String, "/sim/step", stream)
    status = probe.subscribe(String, "/sim/status", latched)
    command = probe.node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", stream)
    sim = NodeProcess("sim", {"lockstep": True, "seed": 3}, ros_env(domain), tmp_path)
    try:
        wait_for(lambda: joints and images and infos and steps, STARTUP, "the first observation", [sim])
        js, image, info = joints[-1][1], images[-1][1], infos[-1][1]
        assert list(js.name) == list(JOINTS) and len(js.position) == len(JOINTS) == len(js.velocity)
        assert (image.width, image.height, image.encoding, image.step) == (84, 84, "rgb8", 84 * 3)
        assert len(image.data) == 84 * 84 * 3 and info.k[0] > 0 and info.width == 84
        assert image.header.stamp == js.header.stamp
        first = json.loads(steps[-1][1].data)
        assert first["step"] == 0 and not first["terminated"]

        def sim_status():
            return json.loads(status[-1][1].data) if status else {}

        q0 = np.array(js.position)
        bad = {"wrong length": [0.0] * 3, "NaN": [math.nan] + list(HOME[1:]),
               "out of limits": [JOINT_UPPER[0] + 0.5] + list(q0[1:])}
        for index, values in enumerate(bad.values(), start=1):
            command.publish(Float64MultiArray(data=values))
            wait_for(lambda: sim_status().get("refused", 0) >= index, 20, f"refusal {index}", [sim])
        assert sim_status()["applied"] == 0
        assert "command refused, not applied" in sim.log()

        # A valid target moves joint 1 toward it, one control period per command (lock-step).
        target = q0.copy()
        target[0] += 0.3
        for k in range(8):
            count = len(steps)
            command.publish(Float64MultiArray(data=target.tolist()))
            wait_for(lambda: len(steps) > count, 30, f"step {k + 1}", [sim])
        moved = np.array(joints[-1][1].position)
        assert abs(moved[0] - target[0]) < abs(q0[0] - target[0]) * 0.5, (q0[0], moved[0], target[0])
        assert json.loads(steps[-1][1].data)["step"] == 8
    finally:
        sim.stop()
        probe.close()
