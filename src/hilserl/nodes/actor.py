"""Actor node: waits for the learner's weights, then commands the arm through ros2_control.

It never commands the arm with weights it did not receive: until a payload from `/policy_weights` has
been decoded, checked and loaded whole, the control loop publishes nothing (state WAITING). Later
payloads replace the policy atomically or are rejected with the old weights kept (see weights/loader.py).
Episode rules and lock-step matching are plain Python in hilserl/control/; this node wires them.
Parameters: ACTOR_PARAMS in nodes/params.py (`ros2 param describe /actor <name>` shows each).

Topics
  /policy_weights (sub)  std_msgs/UInt8MultiArray, RELIABLE + TRANSIENT_LOCAL + KEEP_LAST 1 (latched)
  image_topics (sub)     sensor_msgs/Image, one per camera
  /joint_states (sub)    sensor_msgs/JointState
  command_topic (pub)    std_msgs/Float64MultiArray: a forward command controller's joint position targets in
                         `joints` order (joint_delta: clip(q + action * action_scale, limits); ee_delta: IK)
  target_pose_topic (pub) geometry_msgs/PoseStamped: ee_delta with command_interface cartesian_pose, instead
  robot_description_topic (sub) std_msgs/String URDF, latched (ee_delta, unless the `urdf` file is given)
  /spacenav/twist, /spacenav/joy (sub) a SpaceMouse: ee_delta interventions (control/teleop_ee.py)
  ~/weights_loaded (pub) std_msgs/String JSON, latched: version, run and the digest computed from the
                         actor's own modules after loading
  ~/status (pub)         std_msgs/String JSON, latched: WAITING / RUNNING / HOLDING and why
  ~/episodes (pub)       std_msgs/String JSON per finished episode, latched history (KEEP_LAST 1000)
  episode_topic (sub)    std_msgs/String JSON per sim step (control/steps.py), RELIABLE KEEP_LAST 100
  teleop_topic (sub)     sensor_msgs/Joy: while the dead-man button is held the person's axes replace the
                         policy's action (flagged as an intervention); label buttons end an episode
How actions become commands, per action space: control/arm_command.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from hilserl import names
from hilserl.control.arm_command import ArmCommander
from hilserl.control.episode import TeleopReading, Transition
from hilserl.control.health import HOLDING, RUNNING, WAITING, ActorHealth
from hilserl.control.rules import EpisodeRules
from hilserl.control.sensors import incompatibility, observation_problem
from hilserl.control.steps import StampMatcher, StepReport
from hilserl.nodes.diagnostics import Diagnostics, StatusTopic
from hilserl.nodes.image_conv import image_msg_to_rgb
from hilserl.nodes.params import ACTOR_PARAMS as PARAMS
from hilserl.nodes.params import PER_JOINT_DEFAULTS, declare, per_joint, torch_device
from hilserl.nodes.qos import COMMANDS, EPISODE_LOG, LATCHED, SENSOR_DATA, STEP_REPORTS, STREAM
from hilserl.nodes.runtime import run_node
from hilserl.robot import JOINTS

class ActorNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("actor")
        p = self.params = declare(self, PARAMS)  # exits with one line on a bad value, before torch loads
        self.joints: list[str] = p["joints"]
        specs = {s.name: s for s in PARAMS}
        for name, table in PER_JOINT_DEFAULTS.items():  # stored back: `ros2 param get` shows what is used
            p[name] = per_joint(specs[name], p[name], self.joints, dict(zip(JOINTS, table)))
            self.set_parameters([Parameter(name, value=p[name])])
        self.commander = ArmCommander(p, np.array(p["joint_lower"]), np.array(p["joint_upper"]),
                                      np.array(p["action_scale"]))
        import torch

        from hilserl.metrics import metrics_for_node
        from hilserl.weights.checkpoint import read_config_file
        from hilserl.weights.loader import WeightsReceiver

        self.lockstep, self.image_topics = p["lockstep"], p["image_topics"]
        self.generator = torch.Generator().manual_seed(p["seed"])
        self.rules = EpisodeRules(self.on_transition, self.finish_episode, p["max_episode_steps"],
                                  warn=self.get_logger().warning)
        self.health_state = ActorHealth(control_hz=p["control_hz"], lockstep=self.lockstep,
                                        reason=f"waiting for weights on {p['weights_topic']}")
        self.matcher = StampMatcher()
        self.transition_sender = None
        if p["send_transitions"]:
            from hilserl.nodes.transitions import TransitionSender, safe_name

            actor_id = self.get_fully_qualified_name()
            spill = p["spill_dir"] or f"runs/actor_spill/{safe_name(actor_id)}"
            self.transition_sender = TransitionSender(self, actor_id, lambda: self.receiver.meta.config_fingerprint,
                                                      Path(spill), batch_size=p["transition_batch"])
        expected = None
        if p["policy_config"]:
            expected, _ = read_config_file(p["policy_config"])
            problem = self.incompatibility(expected)
            if problem:
                raise SystemExit(f"actor: policy_config {p['policy_config']}: {problem}")
        self.receiver = WeightsReceiver(expected, compatible=self.incompatibility,
                                        device=torch_device("actor", p["device"]))
        self.stacker = None
        self.frames: dict[str, tuple[float, object, np.ndarray]] = {}  # topic -> (received, stamp, rgb)
        self.joint_state: tuple[float, object, np.ndarray] | None = None
        self.uses_reports = bool(p["episode_topic"])

        self.command_pub = self.create_publisher(Float64MultiArray, p["command_topic"], COMMANDS)
        if p["command_interface"] == "cartesian_pose":
            self.pose_pub = self.create_publisher(PoseStamped, p["target_pose_topic"], COMMANDS)
        self.loaded_pub = self.create_publisher(String, names.WEIGHTS_LOADED_TOPIC, LATCHED)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        self.episodes_pub = self.create_publisher(String, names.EPISODES_TOPIC, EPISODE_LOG)
        self.intervention_pub = self.create_publisher(Bool, names.INTERVENTION_TOPIC, LATCHED)  # the sim's markers
        self.intervening = False
        self.metrics = metrics_for_node(self)
        self.diagnostics = Diagnostics(self, self.health)
        self.create_subscription(UInt8MultiArray, p["weights_topic"], self.on_weights, LATCHED)
        sensors = STREAM if self.lockstep else SENSOR_DATA
        for topic in self.image_topics:
            self.create_subscription(Image, topic, lambda msg, t=topic: self.on_image(t, msg), sensors)
        self.create_subscription(JointState, p["joint_states_topic"], self.on_joint_state, sensors)
        if self.uses_reports:
            self.create_subscription(String, p["episode_topic"], self.on_step_report, STEP_REPORTS)
        self.create_subscription(Joy, p["teleop_topic"], self.on_joy, SENSOR_DATA)
        self.create_subscription(Twist, p["spacenav_twist_topic"], self.on_spacenav_twist, SENSOR_DATA)
        self.create_subscription(Joy, p["spacenav_joy_topic"], self.on_spacenav_joy, SENSOR_DATA)
        if not p["urdf"]:
            self.create_subscription(String, p["robot_description_topic"], self.on_robot_description, LATCHED)
        self.reset_client = self.create_client(Trigger, p["reset_service"]) if p["reset_service"] else None
        if not self.lockstep:
            self.create_timer(1.0 / p["control_hz"], self.control_step)
        self.create_timer(1.0, self.publish_status)  # StatusTopic sends only what changed
        self.publish_status()
        self.get_logger().info(self.health_state.reason)

    # -- weights -------------------------------------------------------------------------------
    def incompatibility(self, config) -> str | None:
        return self.commander.problem(config) or incompatibility(config, self.joints, self.image_topics)

    def on_weights(self, msg: UInt8MultiArray) -> None:
        from hilserl.policies.observation import FrameStacker
        from hilserl.weights.loader import module_digests

        started = time.perf_counter()
        offer, h = self.receiver.offer(msg.data), self.health_state
        if offer.status == "rejected":
            h.rejected, h.last_rejection = h.rejected + 1, offer.reason
            self.publish_status()
            kept = f"v{self.receiver.meta.weights_version}" if self.receiver.ready else "none"
            self.get_logger().error(f"weights rejected, keeping {kept}: {offer.reason}")
            return
        if offer.status == "ignored":
            self.get_logger().info(f"weights ignored: {offer.reason}")
            return
        meta = self.receiver.meta
        if self.stacker is None or self.stacker.config != meta.config:
            self.stacker = FrameStacker(meta.config)
            self.commander.configure(meta.config)
        loaded = {"weights_version": meta.weights_version, "run_id": meta.run_id, "learner_step": meta.learner_step,
                  "digest": self.receiver.loaded_digest, "config_fingerprint": meta.config_fingerprint,
                  "module_digests": module_digests(self.receiver.policy),
                  "load_ms": round((time.perf_counter() - started) * 1e3, 2)}
        self.loaded_pub.publish(String(data=json.dumps(loaded)))
        self.get_logger().info(offer.reason)
        if h.state == WAITING:
            waiting = self.commander.waiting_reason()
            self.set_state(WAITING if waiting else RUNNING, waiting or f"weights v{meta.weights_version} loaded")

    # -- sensors -------------------------------------------------------------------------------
    def on_image(self, topic: str, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ValueError as err:
            self.set_state(HOLDING, f"{topic}: {err}")
            return
        self.frames[topic] = (time.monotonic(), (msg.header.stamp.sec, msg.header.stamp.nanosec), rgb)
        if self.lockstep:
            self.control_step()

    def on_joint_state(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [j for j in self.joints if j not in index]
        if missing or len(msg.position) != len(msg.name):
            self.set_state(HOLDING, f"joint_states lacks positions for {missing or 'some joints'}")
            return
        q = np.array([msg.position[index[j]] for j in self.joints])
        self.joint_state = (time.monotonic(), (msg.header.stamp.sec, msg.header.stamp.nanosec), q)
        if self.lockstep:
            self.control_step()

    def on_step_report(self, msg: String) -> None:
        try:
            self.rules.report(StepReport.from_json(msg.data))
        except ValueError as err:
            self.get_logger().error(f"malformed {msg.data[:80]!r} on the episode topic: {err}",
                                    throttle_duration_sec=5.0)
            return
        if self.lockstep:
            self.control_step()

    def on_joy(self, msg: Joy) -> None:
        teleop = self.commander.teleop  # None until the weights say which action space a person drives in
        label = teleop.update(TeleopReading(time.monotonic(), tuple(msg.axes), tuple(msg.buttons))) if teleop else None
        if label:
            self.rules.press(label)

    def on_spacenav_twist(self, msg: Twist) -> None:
        linear, angular = msg.linear, msg.angular
        problem = self.commander.spacenav_twist(time.monotonic(), (linear.x, linear.y, linear.z),
                                                (angular.x, angular.y, angular.z))
        if problem:
            self.get_logger().error(f"SpaceMouse twist ignored: {problem}", throttle_duration_sec=5.0)

    def on_spacenav_joy(self, msg: Joy) -> None:
        self.commander.spacenav_buttons(TeleopReading(time.monotonic(), tuple(msg.axes), tuple(msg.buttons)))

    def on_robot_description(self, msg: String) -> None:
        self.commander.set_urdf(msg.data)
        self.get_logger().info(f"robot description received ({len(msg.data)} characters)")

    def on_transition(self, transition: Transition) -> None:
        self.health_state.transitions += 1
        if self.transition_sender is not None:
            self.transition_sender.add(transition)

    # -- control -------------------------------------------------------------------------------
    def current_report(self) -> tuple[bool, StepReport | None]:
        """(ready, the sim's report for the observation to act on; None without a sim).

        Lock-step: ready once every sensor shows the same new step and, with a sim, its report is in.
        """
        if not self.lockstep:
            return True, self.rules.ledger.newest
        stamp = self.matcher.common([self.frames[t][1] for t in self.image_topics] + [self.joint_state[1]])
        report = self.rules.ledger.at_stamp(stamp) if stamp is not None else None
        if stamp is None or (report is None and self.uses_reports):
            return False, None
        self.matcher.last = stamp
        return True, report

    def control_step(self) -> None:
        if not self.receiver.ready:
            return  # WAITING: nothing is commanded before weights arrive
        waiting = self.commander.waiting_reason()
        if waiting:  # an ee_delta arm without its URDF: nothing is commanded either
            self.set_state(WAITING, waiting)
            return
        now = time.monotonic()
        problem = observation_problem(now, self.frames, self.image_topics, self.joint_state,
                                      self.params["stale_after"], self.lockstep)
        if problem:
            self.set_state(HOLDING, problem)
            self.stacker.reset()  # a gap in the stream starts a fresh frame stack
            self.rules.drop_pending()
            return
        ready, report = self.current_report()
        if not ready:
            return  # wait until every sensor (and the sim's report) shows the same, new simulation step
        if self.health_state.state != RUNNING:
            self.set_state(RUNNING, "sensors fresh, commanding")
        q, meta = self.joint_state[2], self.receiver.meta
        stacked = self.stacker.push([self.frames[t][2] for t in self.image_topics])
        newest = stacked[-3 * meta.config.num_cameras:]
        if not self.rules.observe(report, newest, q):
            return
        human = self.commander.human_action(now)
        if (human is not None) != self.intervening:
            self.intervening = human is not None
            self.intervention_pub.publish(Bool(data=self.intervening))
        from hilserl.policies.observation import joint_state_vector

        action = human if human is not None else self.receiver.policy.act(
            stacked, joint_state_vector(meta.config, q), deterministic=self.params["deterministic"],
            step=meta.learner_step, generator=self.generator)
        command = self.commander.command(q, action)
        if command.joint_targets is not None:
            self.command_pub.publish(Float64MultiArray(data=command.joint_targets.tolist()))
        if command.joint_targets is None:  # cartesian_pose: the Cartesian controller does the rest
            self.publish_pose(*command.pose)
        self.health_state.commands_sent += 1
        self.health_state.control_rate.tick(now)
        self.rules.acted(newest, q, command.executed, intervention=human is not None,
                        weights_version=meta.weights_version)

    def publish_pose(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), self.commander.base_frame
        (p := msg.pose.position).x, p.y, p.z = (float(v) for v in position)
        (o := msg.pose.orientation).x, o.y, o.z, o.w = (float(v) for v in quaternion)
        self.pose_pub.publish(msg)

    def finish_episode(self, summary: dict) -> None:
        if self.stacker is not None:
            self.stacker.reset()
        self.health_state.episodes.append(summary)
        self.episodes_pub.publish(String(data=json.dumps(summary)))
        if self.metrics:
            self.metrics.log(summary["episode"], {f"episode/{k}": summary[k]
                                                  for k in ("return", "success", "intervention_rate", "steps")})
        self.get_logger().info(f"episode {summary['episode']} done: success={summary['success']} "
                               f"return={summary['return']:.2f} steps={summary['steps']} "
                               f"interventions={summary['intervention_rate']:.0%}")
        if "label" in summary and self.reset_client is not None:
            self.reset_client.call_async(Trigger.Request())
        self.publish_status()

    # -- health --------------------------------------------------------------------------------
    def set_state(self, state: str, reason: str) -> None:
        h = self.health_state
        if (state, reason) != (h.state, h.reason):
            h.state, h.reason = state, reason
            if state == HOLDING:  # rclpy wants one severity per call site
                self.get_logger().warning(f"{state}: {reason}")
            else:
                self.get_logger().info(f"{state}: {reason}")
            self.publish_status()

    def health(self):
        return self.health_state.report(time.monotonic(), self.receiver.meta, self.receiver.loaded_digest,
                                        self.commander.human_action(time.monotonic()) is not None,
                                        self.rules.recorder.stats,
                                        self.transition_sender)

    def publish_status(self) -> None:
        meta, h, sender = self.receiver.meta, self.health_state, self.transition_sender
        status = {"node": self.get_fully_qualified_name(), "state": h.state, "reason": h.reason,
                  "weights_version": meta.weights_version if meta else None, "digest": self.receiver.loaded_digest,
                  "rejected": h.rejected, "last_rejection": h.last_rejection, "episodes": len(h.episodes),
                  "transitions_rejected": sender.rejected_batches if sender else 0,
                  "last_transitions_rejection": sender.last_rejection if sender else "",
                  "last_episode": h.episodes[-1] if h.episodes else None}
        self.status_pub.publish(String(data=json.dumps(status)))


def main(argv: list[str]) -> int:
    return run_node(ActorNode, argv)
