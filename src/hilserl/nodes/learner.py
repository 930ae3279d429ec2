"""Learner node: loads a checkpoint, trains, and publishes the whole inference state as one message.

The training logic is hilserl.training.learner.LearnerCore (plain Python + torch); this node wires it to
parameters, topics and a training thread.

Topics
  /policy_weights  std_msgs/UInt8MultiArray  RELIABLE, TRANSIENT_LOCAL, KEEP_LAST 1 (latched): a late
                   actor gets the newest version on joining.
  /transitions, /transitions_ack  the actors' experience (see nodes/transitions.py)
  ~/status         std_msgs/String (latched, JSON): weights version, digest, what the learner is doing.
  /diagnostics     the core's health() once a second
Parameters: LEARNER_PARAMS in nodes/params.py (`ros2 param describe /learner <name>` shows each). Setting `checkpoint` at
run time loads that checkpoint and publishes it as the next version (hot swap of a pretrained policy).
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from hilserl.names import WEIGHTS_TOPIC
from hilserl.nodes.diagnostics import Diagnostics, StatusTopic
from hilserl.nodes.params import LEARNER_PARAMS as PARAMS
from hilserl.nodes.params import ParameterError, declare, torch_device
from hilserl.nodes.qos import LATCHED
from hilserl.nodes.runtime import run_node
from hilserl.nodes.wire import bytes_to_msg_data

class LearnerNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("learner")
        params = declare(self, PARAMS)  # exits with one line on a bad value, before torch loads
        if params["guard_window"] < params["guard_min_episodes"]:
            raise ParameterError(f"learner: invalid parameter guard_window:={params['guard_window']}: allowed: at "
                                 f"least guard_min_episodes ({params['guard_min_episodes']})")
        from hilserl.training.learner import LearnerCore, LearnerSettings

        self.weights_pub = self.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        settings = LearnerSettings.from_values(params)
        self.core = LearnerCore(params["checkpoint"], settings, publish=self.publish_payload,
                                state_dir=self.state_dir(params) if settings.training else None,
                                run_id=params["run_id"], device=torch_device("learner", params["device"]),
                                log=self.get_logger().info, warn=self.get_logger().warning)
        self.receiver = None
        if settings.training:
            from hilserl.nodes.transitions import TransitionReceiver

            self.receiver = TransitionReceiver(self, self.core.intake)
        self.core.publish_weights(reason="resumed" if self.core.resumed else "start-up")
        from hilserl.metrics import metrics_for_node

        self.metrics = metrics_for_node(self)
        self.diagnostics = Diagnostics(self, self.core.health)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.stop_training = threading.Event()
        self.trainer = None
        if settings.training:
            self.create_timer(1.0, lambda: self.publish_status("training"))
            self.trainer = threading.Thread(target=self.train_forever, name="training", daemon=True)
            self.trainer.start()

    def state_dir(self, params: dict) -> Path:
        if params["state_dir"]:
            return Path(params["state_dir"])
        if params["run_dir"]:
            return Path(params["run_dir"]) / "learner"
        path = Path(tempfile.mkdtemp(prefix="hilserl-learner-"))
        self.get_logger().warning(f"no state_dir or run_dir: training state and journal go to {path}; "
                                  "a restarted learner will not resume this run")
        return path

    # -- training thread -----------------------------------------------------------------------
    def train_forever(self) -> None:
        while not self.stop_training.is_set():
            try:
                done = self.core.train_step()
            except Exception:  # the core keeps the message for /diagnostics; the node and its weights stay up
                self.get_logger().error(f"training stopped: {self.core.training_error}")
                self.publish_status("training stopped")
                return
            if done and self.metrics is not None:
                self.metrics.log(self.core.learner_step, {f"train/{k}": v for k, v in self.core.last_metrics().items()})
            if not done:
                self.stop_training.wait(0.05)

    def close(self) -> None:
        if self.trainer is not None:
            self.stop_training.set()
            self.trainer.join(timeout=30)
            self.core.save_state()
            self.get_logger().info(f"training state saved to {self.core.state_dir / 'state'}")

    # -- publishing ----------------------------------------------------------------------------
    def publish_payload(self, payload: bytes, meta, reason: str) -> None:
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(payload)
        self.weights_pub.publish(msg)
        self.publish_status(reason)

    def publish_status(self, activity: str) -> None:
        stored = self.receiver.stored_through if self.receiver is not None else None
        self.status_pub.publish(String(data=json.dumps(self.core.status(activity, stored))))

    def on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "checkpoint" and param.value:
                try:
                    self.core.swap_checkpoint(param.value)
                except (ValueError, OSError) as err:  # WeightsError is a ValueError
                    self.get_logger().error(f"checkpoint {param.value} not loaded, keeping the current one: {err}")
                    return SetParametersResult(successful=False, reason=str(err))
                self.call_soon(lambda: self.core.publish_weights(f"checkpoint {param.value}"))
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

