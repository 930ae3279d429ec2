"""Learner node: loads a checkpoint, trains, and publishes the whole inference state as one message.

Topics
  /policy_weights  std_msgs/UInt8MultiArray  RELIABLE, TRANSIENT_LOCAL, KEEP_LAST 1 (latched): a late
                   actor gets the newest version on joining.
  ~/status         std_msgs/String (latched, JSON): weights version, digest, what the learner is doing.
Parameters
  checkpoint (str, required): checkpoint directory. Setting it at run time loads that checkpoint and
      publishes it as the next version (hot swap of a pretrained policy).
  publish_every_updates (int, 100), publish_every_seconds (float, 0 = off): weights cadence in training.
  run_id (str, '' = new): names this learner run in every weights message; actors take a new run's
      weights even when its version number is lower.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt8MultiArray

from hilserl.metrics import metrics_for_node
from hilserl.nodes.diagnostics import Diagnostics, StatusTopic, learner_report
from hilserl.nodes.runtime import run_node
from hilserl.nodes.wire import bytes_to_msg_data
from hilserl.policies import build_agent
from hilserl.robot import WEIGHTS_TOPIC
from hilserl.weights.checkpoint import load_agent_weights, read_config_file
from hilserl.weights.codec import WeightsError, encode_weights

LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST, depth=1)


class LearnerNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("learner")
        self.declare_parameter("checkpoint", "")
        self.declare_parameter("publish_every_updates", 100)
        self.declare_parameter("publish_every_seconds", 0.0)
        self.declare_parameter("run_id", "")
        checkpoint = self.get_parameter("checkpoint").value
        if not checkpoint:
            raise SystemExit("learner: parameter 'checkpoint' is required "
                             "(python -m hilserl learner --ros-args -p checkpoint:=DIR)")
        self.run_id = self.get_parameter("run_id").value or uuid.uuid4().hex[:12]
        self.weights_pub = self.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        self.lock = threading.Lock()  # guards the agent between training and publishing
        self.weights_version = 0
        self.learner_step = 0
        self.last_digest = ""
        self.last_publish_time = 0.0
        self.agent = self.load_checkpoint(checkpoint)
        self.publish_weights(reason="start-up")
        self.metrics = metrics_for_node(self)
        self.diagnostics = Diagnostics(self, learner_report)
        self.add_on_set_parameters_callback(self.on_set_parameters)

    # -- weights -------------------------------------------------------------------------------
    def load_checkpoint(self, checkpoint: str):
        config, _ = read_config_file(checkpoint)
        agent = build_agent(config)
        for note in load_agent_weights(agent, checkpoint):
            self.get_logger().info(note)
        self.get_logger().info(f"loaded {config.policy} checkpoint {checkpoint} (config {config.fingerprint()})")
        return agent

    def publish_weights(self, reason: str) -> None:
        """The one publish path: start-up, checkpoint swap and training all come through here."""
        with self.lock:
            self.weights_version += 1
            payload, meta = encode_weights(self.agent.inference.state_dict(), config=self.agent.config,
                                           weights_version=self.weights_version,
                                           learner_step=self.learner_step, run_id=self.run_id)
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(payload)
        self.weights_pub.publish(msg)
        self.last_digest, self.last_publish_time = meta.digest, time.monotonic()
        self.get_logger().info(f"published weights v{meta.weights_version} ({reason}): {len(payload)} bytes, "
                               f"{len(self.agent.inference.state_dict())} tensors, digest {meta.digest}")
        self.publish_status(reason)

    def publish_status(self, activity: str) -> None:
        status = {"node": "learner", "run_id": self.run_id, "weights_version": self.weights_version,
                  "digest": self.last_digest, "learner_step": self.learner_step, "activity": activity,
                  "policy": self.agent.config.policy}
        self.status_pub.publish(String(data=json.dumps(status)))

    def on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "checkpoint" and param.value:
                try:
                    agent = self.load_checkpoint(param.value)
                except (WeightsError, ValueError, OSError) as err:
                    self.get_logger().error(f"checkpoint {param.value} not loaded, keeping the current one: {err}")
                    return SetParametersResult(successful=False, reason=str(err))
                if agent.config.fingerprint() != self.agent.config.fingerprint():
                    reason = "the new checkpoint's policy config differs; start a new learner run for it"
                    self.get_logger().error(f"checkpoint {param.value} not loaded: {reason}")
                    return SetParametersResult(successful=False, reason=reason)
                with self.lock:
                    self.agent = agent
                self.call_soon(lambda: self.publish_weights(f"checkpoint {param.value}"))
        return SetParametersResult(successful=True)

    def call_soon(self, callback) -> None:
        """Run `callback` once from the executor, after the current callback returns."""
        timer = None

        def fire():
            self.destroy_timer(timer)
            callback()
        timer = self.create_timer(0.01, fire)


def main(argv: list[str]) -> int:
    return run_node(LearnerNode, argv)
