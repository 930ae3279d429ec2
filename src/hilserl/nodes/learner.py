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
  training (bool, true), state_dir (str), batch_size, utd_ratio, warmup_transitions, demo_ratio,
      buffer_capacity, gamma, n_step, checkpoint_every_updates, torch_threads: online learning from the
      actors' `/transitions` (see nodes/transitions.py); a restart on the same state_dir resumes the run.
      Each save also writes STATE_DIR/checkpoint/, an ordinary checkpoint of the trained agent: `infer` runs
      it, and a new learner can start from it.
"""

from __future__ import annotations

import json
import threading
import time
import tempfile
import uuid
from pathlib import Path

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
from hilserl.weights.checkpoint import load_agent_weights, read_config_file, save_checkpoint
from hilserl.weights.codec import WeightsError, encode_weights
from hilserl.nodes.transitions import TransitionReceiver, write_durably
from hilserl.replay.episode_buffer import GAMMA, N_STEP, MixedSampler, ReplayBuffer
from hilserl.training.loop import (BATCH_SIZE, CHECKPOINT_EVERY_UPDATES, DEMO_RATIO, UTD_RATIO, WARMUP_TRANSITIONS,
                                   TrainingLoop, TrainSchedule, set_torch_threads)
from hilserl.training.state import find_training_state, load_training_state, save_training_state

LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST, depth=1)


class LearnerNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("learner")
        self.declare_parameter("checkpoint", "")
        self.declare_parameter("publish_every_updates", 100)
        self.declare_parameter("publish_every_seconds", 0.0)
        self.declare_parameter("run_id", "")
        self.declare_parameter("training", True)  # false: publish the checkpoint only (no updates)
        self.declare_parameter("state_dir", "")  # journal + training state; a restart resumes from it
        self.declare_parameter("batch_size", BATCH_SIZE)
        self.declare_parameter("utd_ratio", UTD_RATIO)
        self.declare_parameter("warmup_transitions", WARMUP_TRANSITIONS)
        self.declare_parameter("demo_ratio", DEMO_RATIO)
        self.declare_parameter("checkpoint_every_updates", CHECKPOINT_EVERY_UPDATES)
        self.declare_parameter("buffer_capacity", 50_000)
        self.declare_parameter("gamma", GAMMA)
        self.declare_parameter("n_step", N_STEP)
        self.declare_parameter("torch_threads", 0)
        checkpoint = self.get_parameter("checkpoint").value
        if not checkpoint:
            raise SystemExit("learner: parameter 'checkpoint' is required "
                             "(python -m hilserl learner --ros-args -p checkpoint:=DIR)")
        self.run_id = self.get_parameter("run_id").value or uuid.uuid4().hex[:12]
        self.weights_pub = self.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        self.lock = threading.RLock()  # guards the agent between training and publishing
        self.weights_version = 0
        self.learner_step = 0
        self.last_digest = ""
        self.last_publish_time = 0.0
        self.agent = self.load_checkpoint(checkpoint)
        self.training_error = ""
        self.loop = None
        self.resumed = False
        if self.get_parameter("training").value:
            self.setup_training()
        self.publish_weights(reason="resumed" if self.resumed else "start-up")
        self.metrics = metrics_for_node(self)
        self.diagnostics = Diagnostics(self, learner_report)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        if self.loop is not None:
            self.create_timer(1.0, lambda: self.publish_status("training"))
            self.stop_training = threading.Event()
            self.trainer = threading.Thread(target=self.train_forever, name="training", daemon=True)
            self.trainer.start()

    # -- training ------------------------------------------------------------------------------
    def setup_training(self) -> None:
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        set_torch_threads(get("torch_threads"))
        config = self.agent.config
        if not self.has_parameter("run_dir"):
            self.declare_parameter("run_dir", "")
        if get("state_dir"):
            self.state_dir = Path(get("state_dir"))
        elif get("run_dir"):
            self.state_dir = Path(get("run_dir")) / "learner"
        else:
            self.state_dir = Path(tempfile.mkdtemp(prefix="hilserl-learner-"))
            self.get_logger().warning(f"no state_dir or run_dir: training state and journal go to {self.state_dir}; "
                                      "a restarted learner will not resume this run")
        self.buffer_lock = threading.Lock()
        capacity = get("buffer_capacity")
        self.online = ReplayBuffer(config, capacity, get("gamma"), get("n_step"))
        self.demos = ReplayBuffer(config, capacity, get("gamma"), get("n_step"))  # interventions
        self.sampler = MixedSampler(self.online, self.demos, get("demo_ratio"))
        self.episode_keys: dict[tuple[str, int], int] = {}
        schedule = TrainSchedule(batch_size=get("batch_size"), utd_ratio=get("utd_ratio"),
                                 warmup_transitions=get("warmup_transitions"),
                                 publish_every_updates=get("publish_every_updates"),
                                 publish_every_seconds=get("publish_every_seconds"),
                                 checkpoint_every_updates=get("checkpoint_every_updates"))
        self.loop = TrainingLoop(self.agent, self.sample, schedule, publish=self.publish_weights, save=self.save_state)
        run_file = self.state_dir / "run.json"
        self.resumed = run_file.is_file()
        if self.resumed:  # a restart: same run, versions continue upward from the last one published
            run = json.loads(run_file.read_text())
            self.run_id, self.weights_version = run["run_id"], run["weights_version"]
            source = "the checkpoint (no training state saved yet)"
            if find_training_state(self.state_dir / "state") is not None:
                counters = load_training_state(self.state_dir / "state", self.agent)
                self.loop.counters.learner_step = self.learner_step = counters["learner_step"]
                source = counters["state_dir"]
            self.get_logger().info(f"resumed run {self.run_id}: networks from {source}, learner step "
                                   f"{self.learner_step}; the next weights are v{self.weights_version + 1}")
        self.receiver = TransitionReceiver(self, self.state_dir / "journal", self.store_batch, lambda: self.agent.config)
        self.buffer_sizes = {"online": len(self.online), "interventions": len(self.demos)}

    def store_batch(self, actor_id: str, transitions: list) -> None:
        with self.buffer_lock:
            for t in transitions:
                key = self.episode_keys.setdefault((actor_id, t.episode), len(self.episode_keys))
                self.online.add(t, key)
                if t.intervention:
                    self.demos.add(t, key)
            self.buffer_sizes = {"online": len(self.online), "interventions": len(self.demos)}
        if self.loop is not None:
            self.loop.transitions_added(len(transitions))

    def sample(self, batch_size: int):
        with self.buffer_lock:
            return self.sampler.sample(batch_size)

    def train_forever(self) -> None:
        while not self.stop_training.is_set():
            try:
                with self.lock:
                    done = self.loop.train_some(len(self.online), max_updates=1)
                    self.learner_step = self.loop.counters.learner_step
            except ValueError as err:  # e.g. no complete n-step window yet
                self.training_error, done = "", 0
                self.get_logger().info(f"not training yet: {err}", throttle_duration_sec=10.0)
            except Exception as err:  # keep the node (and its published weights) alive; say why
                self.training_error, done = f"{type(err).__name__}: {err}", 0
                self.get_logger().error(f"training step failed: {self.training_error}", throttle_duration_sec=5.0)
            if done:
                if self.metrics is not None:
                    self.metrics.log(self.learner_step, {f"train/{k}": v for k, v in self.loop.counters.last_metrics.items()})
            else:
                self.stop_training.wait(0.05)

    def save_state(self) -> None:
        with self.lock:
            counters = {"run_id": self.run_id, "weights_version": self.weights_version,
                        "learner_step": self.loop.counters.learner_step}
            save_training_state(self.state_dir / "state", self.agent, counters)
            save_checkpoint(self.agent, self.agent.config, self.state_dir / "checkpoint",
                            step=counters["learner_step"], extra={"trained_by": counters})

    def close(self) -> None:
        if self.loop is not None:
            self.stop_training.set()
            self.trainer.join(timeout=30)
            self.save_state()
            self.get_logger().info(f"training state saved to {self.state_dir / 'state'}")

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
        if self.loop is not None:  # durable before it is sent: a restart never reuses a version number
            write_durably(self.state_dir / "run.json",
                          json.dumps({"run_id": self.run_id, "weights_version": self.weights_version}).encode())
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
        if self.loop is not None:
            status |= {"transitions_stored": self.loop.counters.transitions_seen, "buffers": self.buffer_sizes,
                       "stored_through": dict(self.receiver.stored_through), "resumed": self.resumed,
                       "training_error": self.training_error}
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
                    if self.loop is not None:
                        self.loop.agent = agent
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
