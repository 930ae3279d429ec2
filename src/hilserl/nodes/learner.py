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
  Protecting a pretrained policy: load_demos (bool, true): CHECKPOINT/demos.safetensors, when present, fills
      the demonstration buffer at start; actor_warmup_updates: critic-only updates first (and again after a
      rollback); bc_weight: behaviour cloning on demonstration/intervention rows; encoder_lr_scale: the
      encoder's learning rate relative to the rest. guard (bool, true) with guard_min_episodes, guard_window,
      guard_margin, guard_alpha: republish the best version when a newer one is clearly worse
      (training/guard.py).
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
from hilserl.replay.demos import DEMOS_FILE, read_demos
from hilserl.replay.episode_buffer import GAMMA, N_STEP, MixedSampler, ReplayBuffer
from hilserl.training import guard as guard_defaults
from hilserl.training.loop import (ACTOR_WARMUP_UPDATES, BATCH_SIZE, BC_WEIGHT, CHECKPOINT_EVERY_UPDATES, DEMO_RATIO,
                                   ENCODER_LR_SCALE, UTD_RATIO, WARMUP_TRANSITIONS, TrainingLoop, TrainSchedule,
                                   scale_learning_rate, set_torch_threads)
from hilserl.training.guard import EpisodeVersions, PublishGuard
from hilserl.training.state import (find_training_state, load_training_state, restore_agent, save_training_state,
                                    snapshot_agent)

DEMO_EPISODE_KEYS = 1 << 40  # replay episode keys of the checkpoint's demonstrations start here
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
        self.declare_parameter("load_demos", True)
        self.declare_parameter("actor_warmup_updates", ACTOR_WARMUP_UPDATES)
        self.declare_parameter("bc_weight", BC_WEIGHT)
        self.declare_parameter("encoder_lr_scale", ENCODER_LR_SCALE)
        self.declare_parameter("guard", True)
        self.declare_parameter("guard_min_episodes", guard_defaults.MIN_EPISODES)
        self.declare_parameter("guard_window", guard_defaults.WINDOW)
        self.declare_parameter("guard_margin", guard_defaults.MARGIN)
        self.declare_parameter("guard_alpha", guard_defaults.ALPHA)
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
        self.guard, self.guard_warning = None, ""
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
        if get("load_demos"):
            self.load_demos(Path(self.get_parameter("checkpoint").value) / DEMOS_FILE)
        scale_learning_rate(self.agent.encoder_opt, get("encoder_lr_scale"))
        if get("guard"):
            self.guard = PublishGuard(min_episodes=get("guard_min_episodes"), window=get("guard_window"),
                                      margin=get("guard_margin"), alpha=get("guard_alpha"))
            self.episode_versions = EpisodeVersions(self.guard)
        self.episode_keys: dict[tuple[str, int], int] = {}
        schedule = TrainSchedule(batch_size=get("batch_size"), utd_ratio=get("utd_ratio"),
                                 warmup_transitions=get("warmup_transitions"),
                                 publish_every_updates=get("publish_every_updates"),
                                 publish_every_seconds=get("publish_every_seconds"),
                                 checkpoint_every_updates=get("checkpoint_every_updates"),
                                 actor_warmup_updates=get("actor_warmup_updates"), bc_weight=get("bc_weight"))
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
        self.receiver = TransitionReceiver(self, self.state_dir / "journal", self.store_batch,
                                           lambda: self.agent.config.fingerprint())
        self.buffer_sizes = {"online": len(self.online), "interventions": len(self.demos)}

    def load_demos(self, path: Path) -> None:
        """The checkpoint's demonstrations go to the demonstration buffer: RLPD mixes them in from the start."""
        if not path.is_file():
            self.get_logger().info(f"no demonstrations at {path}: the demonstration buffer starts empty")
            return
        transitions = read_demos(path, self.agent.config)
        for t in transitions:
            self.demos.add(t, DEMO_EPISODE_KEYS + t.episode)  # never an actor's episode key
        self.get_logger().info(f"loaded {len(transitions)} demonstration transitions "
                               f"({len({t.episode for t in transitions})} episodes) from {path}")

    def store_batch(self, actor_id: str, transitions: list) -> None:
        with self.buffer_lock:
            if self.guard is not None:
                self.episode_versions.add(actor_id, transitions)
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
                    self.apply_guard()
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

    def apply_guard(self) -> None:
        """When the guard finds the newest versions clearly worse than the best one: training goes back to the
        best version's state (all networks: the encoder and critic are a pair with the actor), the actor waits
        for the critic again, and the best tensors go out under a new version number."""
        if self.guard is None:
            return
        with self.buffer_lock:
            rollback = self.guard.check()
        if rollback is None:
            return
        restore_agent(self.agent, rollback.snapshot)
        self.loop.hold_actor()
        self.guard_warning = rollback.reason
        self.get_logger().warning(f"guard: {rollback.reason}; republishing v{rollback.best_version}'s weights")
        self.publish_weights(reason=f"rollback to v{rollback.best_version}", copy_of=rollback.best_version)

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

    def publish_weights(self, reason: str, copy_of: int | None = None) -> None:
        """The one publish path: start-up, checkpoint swap, training and guard rollbacks all come through here."""
        with self.lock:
            self.weights_version += 1
            if self.guard is not None:
                snapshot = None if copy_of is not None else snapshot_agent(self.agent)
                with self.buffer_lock:
                    self.guard.published(self.weights_version, snapshot, copy_of=copy_of)
                self.guard_warning = self.guard_warning if copy_of is not None else ""
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
