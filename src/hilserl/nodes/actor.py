"""Actor node: waits for the learner's weights, then commands the arm through ros2_control.

It never commands the arm with weights it did not receive: until a payload from `/policy_weights` has
been decoded, checked and loaded whole, the control loop publishes nothing (state WAITING). Later
payloads replace the policy atomically or are rejected with the old weights kept (see weights/loader.py).

Topics
  /policy_weights (sub)  std_msgs/UInt8MultiArray, RELIABLE + TRANSIENT_LOCAL + KEEP_LAST 1 (latched)
  image_topics (sub)     sensor_msgs/Image, one per camera
  /joint_states (sub)    sensor_msgs/JointState
  command_topic (pub)    std_msgs/Float64MultiArray: a forward command controller's joint position targets,
                         target = clip(q + action * action_scale, joint_lower, joint_upper) in `joints` order
  ~/weights_loaded (pub) std_msgs/String JSON, latched: version, run and the digest computed from the
                         actor's own modules after loading
  ~/status (pub)         std_msgs/String JSON, latched: WAITING / RUNNING / HOLDING and why
  episode_topic (sub)    std_msgs/String JSON per step from the sim (reward, success, episode flags)
  teleop_topic (sub)     sensor_msgs/Joy: while the dead-man button is held the person's axes replace the
                         policy's action (flagged as an intervention); label buttons end an episode
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from hilserl.control.episode import EpisodeRecorder, Intervention, TeleopReading, Transition

from hilserl.metrics import metrics_for_node
from hilserl.nodes.diagnostics import Diagnostics, RateMeter, StatusTopic, actor_report
from hilserl.nodes.image_conv import image_msg_to_rgb
from hilserl.nodes.runtime import run_node
from hilserl.policies.config import PolicyConfig
from hilserl.policies.observation import FrameStacker, joint_state_vector
from hilserl.robot import (ACTION_SCALE, CAMERA_TOPIC, COMMAND_TOPIC, JOINT_LOWER, JOINT_STATES_TOPIC, JOINT_UPPER,
                           JOINTS, WEIGHTS_TOPIC, action_to_targets)
from hilserl.weights.checkpoint import read_config_file
from hilserl.weights.loader import WeightsReceiver, module_digests

LATCHED = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     history=HistoryPolicy.KEEP_LAST, depth=1)
# Lock-step simulation must not lose an observation (the sim waits for the command it answers), so
# those subscriptions are reliable; hardware cameras publish best effort, which sensor-data QoS accepts.
LOCKSTEP_SENSORS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                              history=HistoryPolicy.KEEP_LAST, depth=5)
COMMANDS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST, depth=1)

WAITING, RUNNING, HOLDING = "WAITING", "RUNNING", "HOLDING"


class ActorNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("actor")
        p = self.declare_parameter
        p("policy_config", "")
        p("weights_topic", WEIGHTS_TOPIC)
        p("image_topics", [CAMERA_TOPIC])
        p("joint_states_topic", JOINT_STATES_TOPIC)
        p("command_topic", COMMAND_TOPIC)
        p("joints", list(JOINTS))
        p("joint_lower", list(JOINT_LOWER))
        p("joint_upper", list(JOINT_UPPER))
        p("action_scale", list(ACTION_SCALE))
        p("control_hz", 10.0)
        p("deterministic", False)
        p("stale_after", 0.5)
        p("lockstep", False)
        p("seed", 0)
        p("episode_topic", "sim/step")  # per-step reward/success/episode flags (the sim's); absent on hardware
        p("reset_service", "")  # e.g. sim/reset: called when a person labels an episode with a button
        p("max_episode_steps", 0)  # 0 = episodes end by the sim's flags or a person's label only
        p("teleop_topic", "/joy")
        p("teleop_axes", list(range(len(JOINTS))))  # joy axis per action dimension
        p("teleop_scale", 1.0)
        p("deadman_button", 0)
        p("success_button", 1)
        p("failure_button", 2)
        p("teleop_timeout", 0.5)
        p("send_transitions", True)  # stream experience to the learner (acknowledged, resent, spilled to disk)
        p("transition_batch", 16)
        p("spill_dir", "")  # '' = runs/actor_spill/<namespace_name>
        get = lambda name: self.get_parameter(name).value  # noqa: E731
        self.joints: list[str] = list(get("joints"))
        self.lower, self.upper = np.array(get("joint_lower")), np.array(get("joint_upper"))
        self.action_scale = np.array(get("action_scale"))
        for name, values in (("joint_lower", self.lower), ("joint_upper", self.upper), ("action_scale", self.action_scale)):
            if len(values) != len(self.joints):
                raise SystemExit(f"actor: parameter {name} has {len(values)} values for {len(self.joints)} joints")
        self.deterministic: bool = get("deterministic")
        self.stale_after: float = get("stale_after")
        self.lockstep: bool = get("lockstep")
        self.generator = torch.Generator().manual_seed(int(get("seed")))
        self.max_episode_steps: int = get("max_episode_steps")
        self.intervention = Intervention(axes=list(get("teleop_axes")), deadman_button=get("deadman_button"),
                                         success_button=get("success_button"), failure_button=get("failure_button"),
                                         scale=get("teleop_scale"), timeout=get("teleop_timeout"))
        if len(self.intervention.axes) != len(self.joints):
            raise SystemExit(f"actor: teleop_axes names {len(self.intervention.axes)} axes for {len(self.joints)} joints")
        self.recorder = EpisodeRecorder(self.on_transition)
        self.transitions_made = 0
        self.pending_label: str | None = None
        self.episode_summaries: list[dict] = []
        self.transition_sender = None
        if get("send_transitions"):
            from hilserl.nodes.transitions import TransitionSender, safe_name

            actor_id = self.get_fully_qualified_name()
            spill = get("spill_dir") or f"runs/actor_spill/{safe_name(actor_id)}"
            self.transition_sender = TransitionSender(self, actor_id, lambda: self.receiver.meta.config_fingerprint,
                                                      Path(spill), batch_size=get("transition_batch"))

        self.image_topics: list[str] = list(get("image_topics"))
        expected = None
        if get("policy_config"):
            expected, _ = read_config_file(get("policy_config"))
            problem = self.incompatibility(expected)
            if problem:
                raise SystemExit(f"actor: policy_config {get('policy_config')}: {problem}")
        self.receiver = WeightsReceiver(expected, compatible=self.incompatibility)
        self.stacker: FrameStacker | None = None
        self.frames: dict[str, tuple[float, object, np.ndarray]] = {}  # topic -> (received, stamp, rgb)
        self.joint_state: tuple[float, object, np.ndarray] | None = None
        self.step_info: tuple[float, object, dict] | None = None
        self.step_info_used = True
        self.last_acted_stamp = None
        self.state, self.reason = WAITING, f"waiting for weights on {get('weights_topic')}"
        self.commands_sent = 0
        self.rejected = 0
        self.last_rejection = ""

        self.command_pub = self.create_publisher(Float64MultiArray, get("command_topic"), COMMANDS)
        self.loaded_pub = self.create_publisher(String, "~/weights_loaded", LATCHED)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        self.intervention_pub = self.create_publisher(Bool, "intervention", LATCHED)  # the sim's markers
        self.intervening = False
        self.control_rate = RateMeter()
        self.metrics = metrics_for_node(self)
        self.diagnostics = Diagnostics(self, actor_report())
        self.create_subscription(UInt8MultiArray, get("weights_topic"), self.on_weights, LATCHED)
        sensors = LOCKSTEP_SENSORS if self.lockstep else qos_profile_sensor_data
        for topic in self.image_topics:
            self.create_subscription(Image, topic, lambda msg, t=topic: self.on_image(t, msg), sensors)
        self.create_subscription(JointState, get("joint_states_topic"), self.on_joint_state, sensors)
        self.create_subscription(String, get("episode_topic"), self.on_step_info, sensors)
        self.create_subscription(Joy, get("teleop_topic"), self.on_joy, qos_profile_sensor_data)
        self.reset_client = self.create_client(Trigger, get("reset_service")) if get("reset_service") else None
        if not self.lockstep:
            self.create_timer(1.0 / float(get("control_hz")), self.control_step)
        self.create_timer(1.0, self.publish_status)  # StatusTopic sends only what changed
        self.publish_status()
        self.get_logger().info(self.reason)

    # -- weights -------------------------------------------------------------------------------
    def incompatibility(self, config: PolicyConfig) -> str | None:
        if config.action_dim != len(self.joints):
            return f"policy has {config.action_dim} actions but `joints` names {len(self.joints)}"
        if config.state_dim not in (0, len(self.joints)):
            return f"policy reads {config.state_dim} state values; this actor provides {len(self.joints)} joint positions"
        if config.num_cameras != len(self.image_topics):
            return f"policy sees {config.num_cameras} camera(s); `image_topics` names {len(self.image_topics)}"
        return None

    def on_weights(self, msg: UInt8MultiArray) -> None:
        started = time.perf_counter()
        offer = self.receiver.offer(msg.data)
        if offer.status == "rejected":
            self.rejected += 1
            self.last_rejection = offer.reason
            self.publish_status()
            self.get_logger().error(f"weights rejected, keeping "
                                    f"{'v%d' % self.receiver.meta.weights_version if self.receiver.ready else 'none'}: "
                                    f"{offer.reason}")
            return
        if offer.status == "ignored":
            self.get_logger().info(f"weights ignored: {offer.reason}")
            return
        meta = self.receiver.meta
        if self.stacker is None or self.stacker.config != meta.config:
            self.stacker = FrameStacker(meta.config)
        loaded = {"weights_version": meta.weights_version, "run_id": meta.run_id, "learner_step": meta.learner_step,
                  "digest": self.receiver.loaded_digest, "config_fingerprint": meta.config_fingerprint,
                  "module_digests": module_digests(self.receiver.policy),
                  "load_ms": round((time.perf_counter() - started) * 1e3, 2)}
        self.loaded_pub.publish(String(data=json.dumps(loaded)))
        self.get_logger().info(offer.reason)
        if self.state == WAITING:
            self.set_state(RUNNING, f"weights v{meta.weights_version} loaded")

    # -- sensors -------------------------------------------------------------------------------
    def on_image(self, topic: str, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ValueError as err:
            self.set_state(HOLDING, f"{topic}: {err}")
            return
        self.frames[topic] = (time.monotonic(), stamp_key(msg.header.stamp), rgb)
        if self.lockstep:
            self.control_step()

    def on_joint_state(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.joints if j not in index]
        if missing or len(msg.position) != len(msg.name):
            self.set_state(HOLDING, f"joint_states lacks positions for {missing or 'some joints'}")
            return
        q = np.array([msg.position[index[j]] for j in self.joints])
        self.joint_state = (time.monotonic(), stamp_key(msg.header.stamp), q)
        if self.lockstep:
            self.control_step()

    def on_step_info(self, msg: String) -> None:
        try:
            info = json.loads(msg.data)
            stamp = tuple(info["stamp"])
            for key in ("reward", "terminated", "truncated", "success", "step"):
                info[key]
        except (ValueError, KeyError, TypeError) as err:
            self.get_logger().error(f"malformed {msg.data[:80]!r} on the episode topic: {err}",
                                    throttle_duration_sec=5.0)
            return
        self.step_info, self.step_info_used = (time.monotonic(), stamp, info), False
        if self.lockstep:
            self.control_step()

    def on_joy(self, msg: Joy) -> None:
        label = self.intervention.update(TeleopReading(time.monotonic(), tuple(msg.axes), tuple(msg.buttons)))
        if label:
            self.pending_label = label

    def on_transition(self, transition: Transition) -> None:
        self.transitions_made += 1
        if self.transition_sender is not None:
            self.transition_sender.add(transition)

    # -- control -------------------------------------------------------------------------------
    def observation_problem(self, now: float) -> str | None:
        for topic in self.image_topics:
            if topic not in self.frames:
                return f"no image received yet on {topic}"
            age = now - self.frames[topic][0]
            if not self.lockstep and age > self.stale_after:
                return f"image on {topic} is stale ({age:.2f} s old, limit {self.stale_after} s)"
        if self.joint_state is None:
            return "no joint_states received yet"
        age = now - self.joint_state[0]
        if not self.lockstep and age > self.stale_after:
            return f"joint_states is stale ({age:.2f} s old, limit {self.stale_after} s)"
        return None

    def control_step(self) -> None:
        if not self.receiver.ready:
            return  # WAITING: nothing is commanded before weights arrive
        now = time.monotonic()
        problem = self.observation_problem(now)
        if problem:
            self.set_state(HOLDING, problem)
            self.stacker.reset()  # a gap in the stream starts a fresh frame stack
            self.recorder.pending = None  # and the action before it has no known outcome
            return
        if self.lockstep:
            if self.step_info is None:
                return
            stamps = {self.frames[t][1] for t in self.image_topics} | {self.joint_state[1], self.step_info[1]}
            if len(stamps) != 1 or stamps == {self.last_acted_stamp}:
                return  # wait until every sensor shows the same, new simulation step
            self.last_acted_stamp = stamps.pop()
        if self.state != RUNNING:
            self.set_state(RUNNING, "sensors fresh, commanding")
        q = self.joint_state[2]
        meta = self.receiver.meta
        stacked = self.stacker.push([self.frames[t][2] for t in self.image_topics])
        newest = stacked[-3 * meta.config.num_cameras:]
        if self.record_outcome(newest, q):
            return  # that observation ended the episode: nothing to command in it
        human = self.intervention.human_action(now)
        if (human is not None) != self.intervening:
            self.intervening = human is not None
            self.intervention_pub.publish(Bool(data=self.intervening))
        if human is not None:
            action = human
        else:
            action = self.receiver.policy.act(stacked, joint_state_vector(meta.config, q),
                                               deterministic=self.deterministic, step=meta.learner_step,
                                               generator=self.generator)
        targets = action_to_targets(q, action, self.action_scale, self.lower, self.upper)
        self.command_pub.publish(Float64MultiArray(data=targets.tolist()))
        self.commands_sent += 1
        self.control_rate.tick(now)
        self.recorder.acted(newest, q, action, intervention=human is not None, weights_version=meta.weights_version)

    def record_outcome(self, newest: np.ndarray, q: np.ndarray) -> bool:
        """Close the previous action's transition with what followed; True when the episode ended here."""
        info = None
        if self.step_info is not None and not self.step_info_used:
            info, self.step_info_used = self.step_info[2], True
        label, self.pending_label = self.pending_label, None
        if info is not None and info["step"] == 0 and self.recorder.stats.steps > 0:
            self.finish_episode(self.recorder.end_episode(success=False))  # the sim reset under us
        reward = float(info["reward"]) if info else 0.0
        terminated = bool(info and info["terminated"]) or label is not None
        truncated = bool(info and info["truncated"]) or (
            self.max_episode_steps > 0 and self.recorder.stats.steps >= self.max_episode_steps)
        success = bool(info and info["success"]) or label == "success"
        summary = self.recorder.outcome(reward, terminated, truncated, success, next_frames=newest, next_state=q)
        if summary is None and label is not None:  # labelled with no action awaiting its outcome
            if self.recorder.stats.steps == 0:  # nothing happened in this episode yet: no episode to label
                self.get_logger().warning(f"{label} label ignored: the episode has no steps yet")
                return False
            summary = self.recorder.end_episode(success)
        if summary is None:
            return False
        self.finish_episode(summary)
        if label is not None and self.reset_client is not None:
            self.reset_client.call_async(Trigger.Request())
        return True

    def finish_episode(self, summary: dict) -> None:
        self.stacker.reset()
        self.episode_summaries.append(summary)
        if self.metrics:
            self.metrics.log(summary["episode"], {f"episode/{k}": summary[k]
                                                  for k in ("return", "success", "intervention_rate", "steps")})
        self.get_logger().info(f"episode {summary['episode']} done: success={summary['success']} "
                               f"return={summary['return']:.2f} steps={summary['steps']} "
                               f"interventions={summary['intervention_rate']:.0%}")
        self.publish_status()

    def set_state(self, state: str, reason: str) -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason = state, reason
            if state == HOLDING:  # rclpy wants one severity per call site
                self.get_logger().warning(f"{state}: {reason}")
            else:
                self.get_logger().info(f"{state}: {reason}")
            self.publish_status()

    def publish_status(self) -> None:
        meta = self.receiver.meta
        status = {"node": self.get_fully_qualified_name(), "state": self.state, "reason": self.reason,
                  "weights_version": meta.weights_version if meta else None,
                  "digest": self.receiver.loaded_digest,
                  "rejected": self.rejected, "last_rejection": self.last_rejection,
                  "episodes": len(self.episode_summaries),
                  "last_episode": self.episode_summaries[-1] if self.episode_summaries else None}
        self.status_pub.publish(String(data=json.dumps(status)))


def stamp_key(stamp) -> tuple[int, int]:
    return (stamp.sec, stamp.nanosec)


def main(argv: list[str]) -> int:
    return run_node(ActorNode, argv)
