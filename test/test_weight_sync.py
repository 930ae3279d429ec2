"""Weight sync across real processes on real Fast DDS: learner -> /policy_weights -> actor -> arm commands.

The regression this guards: an actor whose encoder stays random because only the actor head arrived.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from hilserl.nodes.image_conv import rgb_to_image_msg
from hilserl.policies.config import PolicyConfig
from hilserl.robot import ACTION_SCALE, HOME, JOINT_LOWER, JOINT_UPPER, JOINTS
from hilserl.weights.checkpoint import load_inference_policy
from hilserl.weights.codec import encode_weights
from hilserl.weights.loader import module_digests
from rosutil import REPO, init_checkpoint, NodeProcess, Probe, ros_env, unique_domain_id, wait_for

STARTUP = 60.0  # a node process imports torch and rclpy, then discovers its peers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, dict]:
    """Two DrQ-v2 checkpoints (different seeds, so different encoders) and a SAC one, via the real CLI."""
    out = {}
    for name, policy, seed in (("a", "drqv2", 1), ("b", "drqv2", 2), ("sac", "sac", 3)):
        out[name] = init_checkpoint(tmp_path_factory.mktemp(f"ckpt_{name}"), policy, "--seed", str(seed))
    return out


@pytest.fixture(scope="module")
def camera_image(tmp_path_factory) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)  # not 84x84: the resize path is exercised
    path = tmp_path_factory.mktemp("img") / "frame.png"
    PILImage.fromarray(rgb).save(path)
    return rgb, str(path)


def infer_reference(checkpoint: str, image_path: str) -> np.ndarray:
    result = subprocess.run([sys.executable, "-m", "hilserl", "infer", "--checkpoint", checkpoint, "--image", image_path],
                            capture_output=True, text=True, cwd=REPO, check=True)
    return np.array(json.loads(result.stdout)["action"])


def expected_command(action: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.clip(q + action * np.array(ACTION_SCALE), JOINT_LOWER, JOINT_UPPER)


class Rig:
    """The test's side of the graph: a camera and joint_states publisher, and listeners on the actor's outputs."""

    def __init__(self, domain_id: int, rgb: np.ndarray):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

        self.probe = Probe(domain_id)
        node = self.probe.node
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.commands = self.probe.subscribe(Float64MultiArray, "/forward_position_controller/commands", 10)
        self.loaded = self.probe.subscribe(String, "/actor/weights_loaded", latched)
        self.status = self.probe.subscribe(String, "/actor/status", latched)
        self.learner_status = self.probe.subscribe(String, "/learner/status", latched)
        self.weights_pub = node.create_publisher(UInt8MultiArray, "/policy_weights", latched)
        self.q = np.array(HOME)
        image, joints = Image(), JointState(name=list(JOINTS), position=self.q.tolist())
        rgb_to_image_msg(rgb, image)
        image_pub = node.create_publisher(Image, "camera/image_raw", 10)
        joint_pub = node.create_publisher(JointState, "/joint_states", 10)

        def publish_sensors():
            stamp = node.get_clock().now().to_msg()
            image.header.stamp = joints.header.stamp = stamp
            image_pub.publish(image)
            joint_pub.publish(joints)
        self.sensor_timer = node.create_timer(0.05, publish_sensors)

    def command_arrays(self) -> list[np.ndarray]:
        return [np.array(m.data) for _, m in list(self.commands)]

    def last_loaded(self) -> dict | None:
        return json.loads(self.loaded[-1][1].data) if self.loaded else None

    def last_status(self) -> dict | None:
        return json.loads(self.status[-1][1].data) if self.status else None

    def publish_payload(self, payload: bytes) -> None:
        from hilserl.nodes.wire import bytes_to_msg_data
        from std_msgs.msg import UInt8MultiArray

        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(payload)
        self.weights_pub.publish(msg)


@pytest.fixture
def graph(tmp_path, camera_image):
    """Start/stop helper for one test: its own ROS domain, its processes, its rig."""
    domain = unique_domain_id()
    env = ros_env(domain)
    procs: list[NodeProcess] = []
    rig = Rig(domain, camera_image[0])

    def start(command: str, params: dict, name: str | None = None) -> NodeProcess:
        proc = NodeProcess(command, params, env, tmp_path, name=name)
        procs.append(proc)
        return proc

    start.procs, start.rig = procs, rig
    yield start
    for p in procs:
        p.stop()
    rig.probe.close()


def test_late_actor_first_command_matches_infer_and_encoder_arrives(graph, checkpoints, camera_image):
    rig, ckpt = graph.rig, checkpoints["a"]
    learner = graph("learner", {"checkpoint": ckpt["path"], "training": False})
    status = wait_for(lambda: rig.learner_status and json.loads(rig.learner_status[-1][1].data), STARTUP,
                      "learner to publish weights v1", graph.procs)
    assert status["weights_version"] == 1 and status["digest"] == ckpt["inference_digest"]

    graph("actor", {"deterministic": True})  # joins after the learner published: latched delivery
    wait_for(lambda: rig.commands, STARTUP, "the late actor's first command", graph.procs)
    first = rig.command_arrays()[0]
    reference = expected_command(infer_reference(ckpt["path"], camera_image[1]), rig.q)
    np.testing.assert_allclose(first, reference, rtol=0, atol=1e-6)

    loaded = rig.last_loaded()
    assert loaded["weights_version"] == 1 and loaded["digest"] == ckpt["inference_digest"]
    # The regression test for the head-only bug: the actor's encoder is the checkpoint's, not a random one.
    from_checkpoint = module_digests(load_inference_policy(ckpt["path"]))
    torch.manual_seed(0)
    from hilserl.policies.inference import InferencePolicy
    random_init = module_digests(InferencePolicy(PolicyConfig()))
    assert loaded["module_digests"]["encoder"] == from_checkpoint["encoder"] != random_init["encoder"]
    assert loaded["module_digests"]["actor"] == from_checkpoint["actor"]
    assert "published weights v1" in learner.log() and ckpt["inference_digest"] in learner.log()


def test_early_actor_waits_then_takes_new_versions(graph, checkpoints, camera_image):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    rig = graph.rig
    actor = graph("actor", {"deterministic": True})
    wait_for(lambda: (rig.last_status() or {}).get("state") == "WAITING", STARTUP, "actor to report WAITING",
             graph.procs)
    time.sleep(3.0)  # sensors are flowing all along; without weights the actor must stay silent
    assert rig.commands == [] and rig.last_status()["state"] == "WAITING"
    assert "waiting for weights" in rig.last_status()["reason"]

    graph("learner", {"checkpoint": checkpoints["a"]["path"], "training": False})
    wait_for(lambda: rig.commands, STARTUP, "commands once the learner appears", graph.procs)
    reference_a = expected_command(infer_reference(checkpoints["a"]["path"], camera_image[1]), rig.q)
    np.testing.assert_allclose(rig.command_arrays()[0], reference_a, atol=1e-6)

    # A new version mid-run: hot-swap the learner's checkpoint; the actor takes v2 up while running.
    client = AsyncParameterClient(rig.probe.node, "learner")
    assert client.wait_for_services(timeout_sec=20)
    future = client.set_parameters([Parameter("checkpoint", value=checkpoints["b"]["path"])])
    wait_for(lambda: future.done(), 20, "parameter set")
    assert future.result().results[0].successful
    wait_for(lambda: (rig.last_loaded() or {}).get("weights_version") == 2, 30, "actor to load v2", graph.procs)
    assert rig.last_loaded()["digest"] == checkpoints["b"]["inference_digest"]
    count = len(rig.commands)
    wait_for(lambda: len(rig.commands) > count + 2, 10, "commands after v2", graph.procs)
    reference_b = expected_command(infer_reference(checkpoints["b"]["path"], camera_image[1]), rig.q)
    np.testing.assert_allclose(rig.command_arrays()[-1], reference_b, atol=1e-6)
    assert not np.allclose(reference_a, reference_b)
    assert actor.alive()


def bad_payloads(checkpoints) -> dict[str, tuple[bytes, str]]:
    """Each bad payload and a phrase the actor's rejection must contain."""
    policy = load_inference_policy(checkpoints["b"]["path"])
    config = policy.config
    state = policy.state_dict()
    good, _ = encode_weights(state, config=config, weights_version=50, learner_step=0, run_id="rogue")
    corrupted = bytearray(good)
    corrupted[-1000] ^= 0xFF
    wrong_shape = dict(state)
    wrong_shape["actor.policy.4.weight"] = torch.zeros(7, config.hidden_dim)
    head_only = {k: v for k, v in state.items() if k.startswith("actor.")}  # the bug this project prevents
    sac = load_inference_policy(checkpoints["sac"]["path"])
    return {
        "corrupted": (bytes(corrupted), "digest"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "wrong_shape": (encode_weights(wrong_shape, config=config, weights_version=51, learner_step=0,
                                       run_id="rogue")[0], "shape"),
        "head_only": (encode_weights(head_only, config=config, weights_version=52, learner_step=0,
                                     run_id="rogue")[0], "missing"),
        "wrong_policy": (encode_weights(sac.state_dict(), config=sac.config, weights_version=53, learner_step=0,
                                        run_id="rogue")[0], "policy 'sac'"),
        "pickle": (pickle.dumps({k: v.numpy() for k, v in state.items()}), "pickle"),
    }


def test_bad_payloads_rejected_actor_keeps_weights_and_runs(graph, checkpoints):
    rig = graph.rig
    graph("learner", {"checkpoint": checkpoints["a"]["path"], "training": False})
    actor = graph("actor", {})
    wait_for(lambda: rig.commands, 2 * STARTUP, "actor commanding", graph.procs)
    digest = rig.last_loaded()["digest"]
    for index, (name, (payload, phrase)) in enumerate(bad_payloads(checkpoints).items(), start=1):
        rig.publish_payload(payload)
        status = wait_for(lambda: (s := rig.last_status()) and s["rejected"] >= index and s, 20,
                          f"rejection of the {name} payload", graph.procs)
        assert phrase in status["last_rejection"], (name, status["last_rejection"])
        count = len(rig.commands)
        wait_for(lambda: len(rig.commands) > count + 1, 10, f"commands to continue after {name}", graph.procs)
    assert rig.last_loaded()["digest"] == digest and rig.last_loaded()["weights_version"] == 1
    assert actor.alive() and rig.last_status()["state"] == "RUNNING"
