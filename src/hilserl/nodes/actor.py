"""Actor node: waits for the learner's weights, then commands the arm through ros2_control.

It never commands the arm with weights it did not receive: until a payload from `/policy_weights` has
been decoded, checked and loaded whole, the control loop publishes nothing (state WAITING). Later
payloads replace the policy atomically or are rejected with the old weights kept (see weights/loader.py).
The control step, episode rules, stamp matching and health are plain Python in hilserl/control/ (core.py).
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
A reward classifier (`reward_classifier`) may end an episode as a success (control/reward.py); with
`record_frames_dir` every observation's frames are written there, labelled by the success button.
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
from hilserl.control.core import ActorCore
from hilserl.control.episode import TeleopReading, Transition
from hilserl.control.health import HOLDING, RUNNING, WAITING, ActorHealth
from hilserl.control.rules import EpisodeRules, episode_line, episode_metrics
from hilserl.control.sensors import Observations, incompatibility
from hilserl.control.steps import StepReport
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
        from hilserl.control.policy import ActorPolicy, expected_config  # torch loads here
        from hilserl.metrics import metrics_for_node

        self.lockstep, self.image_topics = p["lockstep"], p["image_topics"]
        self.rules = EpisodeRules(self.on_transition, self.finish_episode, p["max_episode_steps"],
                                  warn=self.get_logger().warning)
        self.health_state = ActorHealth(control_hz=p["control_hz"], lockstep=self.lockstep,
                                        reason=f"waiting for weights on {p['weights_topic']}")
        self.sensors = Observations(self.joints, self.image_topics, self.lockstep)
        self.transition_sender = None
        if p["send_transitions"]:
            from hilserl.nodes.transitions import TransitionSender, safe_name

            actor_id = self.get_fully_qualified_name()
            spill = p["spill_dir"] or f"runs/actor_spill/{safe_name(actor_id)}"
            self.transition_sender = TransitionSender(self, actor_id, lambda: self.policy.config_fingerprint,
                                                      Path(spill), batch_size=p["transition_batch"])
        expected, problem = expected_config(p["policy_config"], self.incompatibility)
        if problem:
            raise SystemExit(f"actor: policy_config {p['policy_config']}: {problem}")
        self.policy = ActorPolicy(expected, self.incompatibility, torch_device("actor", p["device"]), p["seed"],
                                  on_new_config=self.commander.configure)
        self.uses_reports = bool(p["episode_topic"])
        self.core = ActorCore(self.policy, self.sensors, self.rules, self.commander, self.health_state, self.set_state,
                              p["stale_after"], p["deterministic"], self.uses_reports,
                              reward=self.load_reward(p), frame_writer=self.frame_writer(p),
                              teleop_wait=p["teleop_wait"])

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
        elif p["teleop_wait"] > 0:  # a step waiting for a person's reading acts when the wait is over
            self.create_timer(p["teleop_wait"] / 5, self.on_teleop_wait)
        self.create_timer(1.0, self.publish_status)  # StatusTopic sends only what changed
        self.publish_status()
        self.get_logger().info(self.health_state.reason)

    def load_reward(self, p: dict):
        """The reward classifier `reward_classifier` names, loaded strictly (None when '')."""
        if not p["reward_classifier"]:
            return None
        from hilserl.control.reward import ClassifierReward
        from hilserl.weights.codec import WeightsError

        try:
            reward = ClassifierReward.load(p["reward_classifier"], torch_device("actor", p["device"]),
                                           p["reward_threshold"], p["reward_confirm_steps"])
        except WeightsError as err:
            raise SystemExit(f"actor: reward_classifier {p['reward_classifier']}: {err}") from None
        if reward.num_cameras > len(self.image_topics):  # it watches the first of the policy's cameras
            raise SystemExit(f"actor: reward_classifier {p['reward_classifier']} takes {reward.num_cameras} "
                             f"camera(s); image_topics names only {len(self.image_topics)}")
        self.get_logger().info(f"reward classifier {p['reward_classifier']} loaded, digest {reward.digest}: success "
                               f"when p > {reward.decision.threshold} for {p['reward_confirm_steps']} step(s)")
        return reward

    def frame_writer(self, p: dict):
        if not p["record_frames_dir"]:
            return None
        from hilserl.reward.frames import FrameWriter

        writer = FrameWriter(Path(p["record_frames_dir"]).expanduser(), source=f"actor {self.get_fully_qualified_name()}")
        self.get_logger().info(f"recording labelled frames to {writer.folder} from episode {writer.episode}; "
                               "the success button marks success frames and ends no episode")
        return writer

    # -- weights -------------------------------------------------------------------------------
    def incompatibility(self, config) -> str | None:
        return self.commander.problem(config) or incompatibility(config, self.joints, self.image_topics)

    def on_weights(self, msg: UInt8MultiArray) -> None:
        offer, loaded = self.policy.offer(msg.data)
        if offer.status == "rejected":
            self.health_state.weights_rejected(offer.reason)
            self.publish_status()
            kept = f"v{self.policy.receiver.meta.weights_version}" if self.policy.ready else "none"
            self.get_logger().error(f"weights rejected, keeping {kept}: {offer.reason}")
            return
        if offer.status == "ignored":
            self.get_logger().info(f"weights ignored: {offer.reason}")
            return
        self.loaded_pub.publish(String(data=json.dumps(loaded)))
        self.get_logger().info(offer.reason)
        if self.health_state.state == WAITING:
            waiting = self.commander.waiting_reason()
            self.set_state(WAITING if waiting else RUNNING, waiting or f"weights v{loaded['weights_version']} loaded")

    # -- sensors -------------------------------------------------------------------------------
    def on_image(self, topic: str, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ValueError as err:
            self.set_state(HOLDING, f"{topic}: {err}")
            return
        self.sensors.add_image(topic, time.monotonic(), (msg.header.stamp.sec, msg.header.stamp.nanosec), rgb)
        if self.lockstep:
            self.control_step()

    def on_joint_state(self, msg: JointState) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        problem = self.sensors.add_joint_state(time.monotonic(), stamp, msg.name, msg.position)
        if problem:
            self.set_state(HOLDING, problem)
            return
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
        label = self.commander.gamepad(TeleopReading(time.monotonic(), tuple(msg.axes), tuple(msg.buttons)))
        if label:
            self.core.press(label)
        self.on_teleop_wait()

    def on_spacenav_twist(self, msg: Twist) -> None:
        linear, angular = msg.linear, msg.angular
        problem = self.commander.spacenav_twist(time.monotonic(), (linear.x, linear.y, linear.z),
                                                (angular.x, angular.y, angular.z))
        if problem:
            self.get_logger().error(f"SpaceMouse twist ignored: {problem}", throttle_duration_sec=5.0)
        self.on_teleop_wait()

    def on_spacenav_joy(self, msg: Joy) -> None:
        self.commander.spacenav_buttons(TeleopReading(time.monotonic(), tuple(msg.axes), tuple(msg.buttons)))
        self.on_teleop_wait()

    def on_teleop_wait(self) -> None:
        if self.core.awaiting_person:  # lock-step: a step waits for the person's reading, or for the wait's end
            self.control_step()

    def on_robot_description(self, msg: String) -> None:
        self.commander.set_urdf(msg.data)
        self.get_logger().info(f"robot description received ({len(msg.data)} characters)")

    def on_transition(self, transition: Transition) -> None:
        self.health_state.transitions += 1
        if self.transition_sender is not None:
            self.transition_sender.add(transition)

    # -- control -------------------------------------------------------------------------------
    def control_step(self) -> None:
        step = self.core.step(time.monotonic())
        if step is None:
            return
        command, intervening = step
        if intervening != self.intervening:  # the sim marks interventions in its video
            self.intervening = intervening
            self.intervention_pub.publish(Bool(data=intervening))
        if command.joint_targets is not None:
            self.command_pub.publish(Float64MultiArray(data=command.joint_targets.tolist()))
        if command.joint_targets is None:  # cartesian_pose: the Cartesian controller does the rest
            self.publish_pose(*command.pose)

    def publish_pose(self, position: np.ndarray, quaternion: np.ndarray) -> None:
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), self.commander.base_frame
        (p := msg.pose.position).x, p.y, p.z = (float(v) for v in position)
        (o := msg.pose.orientation).x, o.y, o.z, o.w = (float(v) for v in quaternion)
        self.pose_pub.publish(msg)

    def finish_episode(self, summary: dict) -> None:
        self.policy.reset_stack()
        self.core.episode_finished()
        self.health_state.episodes.append(summary)
        self.episodes_pub.publish(String(data=json.dumps(summary)))
        if self.metrics:
            self.metrics.log(summary["episode"], episode_metrics(summary))
        self.get_logger().info(episode_line(summary))
        if "label" in summary and self.reset_client is not None:
            self.reset_client.call_async(Trigger.Request())
        self.publish_status()

    # -- health --------------------------------------------------------------------------------
    def set_state(self, state: str, reason: str) -> None:
        if not self.health_state.enter(state, reason):
            return
        if state == HOLDING:  # rclpy wants one severity per call site
            self.get_logger().warning(f"{state}: {reason}")
        else:
            self.get_logger().info(f"{state}: {reason}")
        self.publish_status()

    def health(self):
        return self.core.report(time.monotonic(), self.transition_sender)

    def close(self) -> None:
        self.core.close()  # recorded frames not yet in a shard

    def publish_status(self) -> None:
        status = self.core.status(self.get_fully_qualified_name(), self.transition_sender)
        self.status_pub.publish(String(data=json.dumps(status)))


def main(argv: list[str]) -> int:
    return run_node(ActorNode, argv)
