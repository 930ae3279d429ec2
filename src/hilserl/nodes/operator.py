"""Simulated operator node: a stand-in for the person at the SpaceMouse (decisions: hilserl/sim/operator.py).

It reads what a person at the cell sees and, when the policy stalls, strays out of the safe box or (with
stray_steps) off the expert's course, takes over through the same topics a SpaceMouse driver publishes, so the
actor records an intervention exactly as it would for a person. It never talks to the learner or the actor otherwise.

Topics
  joint_states_topic (sub)   sensor_msgs/JointState: the finger opening and (ee_axes xyz_rpy) the TCP's
                             orientation, for the expert
  markers_topic (sub)        visualization_msgs/MarkerArray from the sim: gripper centre (end_effector),
                             cube and target positions (the ground truth a person sees)
  episode_topic (sub)        std_msgs/String JSON per sim step (control/steps.py): episode and step
  spacenav_twist_topic (pub) geometry_msgs/Twist: the expert's end-effector motion while it drives
  spacenav_joy_topic (pub)   sensor_msgs/Joy: 6 axes (the twist) and 2 buttons (close, open) held as the
                             expert wants the gripper
  ~/status (pub)             std_msgs/String JSON, latched: interventions so far, driving or watching, why,
                             whether it trusts the policy (exam_every) and how many judged episodes it did alone

One decision per sim step, once the three inputs of that step (same header stamp) are in. Letting go
publishes one resting twist with released buttons, then nothing: the actor's teleop_timeout hands back.
Parameters: OPERATOR_PARAMS in nodes/params.py.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from hilserl.control.steps import StepReport
from hilserl.nodes.diagnostics import StatusTopic
from hilserl.nodes.params import OPERATOR_PARAMS, ParameterError, declare
from hilserl.nodes.qos import STEP_REPORTS, STREAM, TELEOP
from hilserl.nodes.runtime import run_node
from hilserl.robot import JOINTS

KEEP_STAMPS = 20  # steps whose inputs are kept while waiting for the rest of that step's inputs


def stamp_of(header) -> tuple[int, int]:
    return (header.stamp.sec, header.stamp.nanosec)


class OperatorNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("operator")
        p = declare(self, OPERATOR_PARAMS)  # exits with one line on a bad value
        from hilserl.kinematics.action_space import EeActionSpace
        from hilserl.sim.expert import ScriptedExpert  # pinocchio loads here
        from hilserl.sim.operator import OperatorSettings, SimulatedOperator
        from hilserl.sim.task import variant_config

        try:
            settings = OperatorSettings(
                stall_steps=p["stall_steps"], progress_epsilon=p["progress_epsilon"],
                takeover_steps=p["takeover_steps"], max_interventions_per_episode=p["max_interventions_per_episode"],
                demo_episodes=p["demo_episodes"], demo_noise=p["demo_noise"], stray_steps=p["stray_steps"],
                stray_fraction=p["stray_fraction"], exam_every=p["exam_every"], trust_window=p["trust_window"],
                trust_level=p["trust_level"], trust_forgives=p["trust_forgives"],
                twist_scale=p["twist_scale"], safe_lower=tuple(p["safe_lower"]), safe_upper=tuple(p["safe_upper"]))
            space = EeActionSpace(p["ee_axes"], p["ee_step"], p["ee_rot_step"])
        except ValueError as err:
            raise ParameterError(f"operator: invalid parameters: {err}") from None
        expert = ScriptedExpert(None, space=space, config=variant_config(p["variant"], task=p["task"]))
        self.operator = SimulatedOperator(settings, expert)
        # Inputs of recent steps by stamp: a step is decided once all three are in, and only once.
        self.joints: dict[tuple[int, int], np.ndarray] = {}
        self.scenes: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.reports: dict[tuple[int, int], StepReport] = {}
        self.decided: set[tuple[int, int]] = set()
        self.last_reason = ""

        self.twist_pub = self.create_publisher(Twist, p["spacenav_twist_topic"], TELEOP)
        self.joy_pub = self.create_publisher(Joy, p["spacenav_joy_topic"], TELEOP)
        self.status_pub = StatusTopic(self)
        self.create_subscription(JointState, p["joint_states_topic"], self.on_joint_state, STREAM)
        self.create_subscription(MarkerArray, p["markers_topic"], self.on_markers, STREAM)
        self.create_subscription(String, p["episode_topic"], self.on_step_report, STEP_REPORTS)
        self.publish_status("watching")
        self.get_logger().info(f"operator ready: task {p['task']} ({p['variant']}), takes over after "
                               f"{settings.stall_steps} steps without progress or outside the safe box, "
                               f"drives {settings.takeover_steps} steps")

    # -- inputs --------------------------------------------------------------------------------
    def on_joint_state(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        if any(name not in index for name in JOINTS):
            self.get_logger().error(f"joint states lack {[n for n in JOINTS if n not in index]}",
                                    throttle_duration_sec=5.0)
            return
        self.remember(self.joints, stamp_of(msg.header), np.array([msg.position[index[n]] for n in JOINTS]))

    def on_markers(self, msg: MarkerArray) -> None:
        seen = {m.ns: m for m in msg.markers if m.action == Marker.ADD}
        if not {"end_effector", "cube", "target"} <= seen.keys():
            return  # a task without a cube or target: nothing to judge progress by
        position = {ns: np.array([seen[ns].pose.position.x, seen[ns].pose.position.y, seen[ns].pose.position.z])
                    for ns in ("end_effector", "cube", "target")}
        o = seen["cube"].pose.orientation
        position["cube_quaternion"] = np.array([o.x, o.y, o.z, o.w])
        self.remember(self.scenes, stamp_of(seen["cube"].header), position)

    def on_step_report(self, msg: String) -> None:
        try:
            report = StepReport.from_json(msg.data)
        except ValueError as err:
            self.get_logger().error(f"malformed {msg.data[:80]!r} on the episode topic: {err}",
                                    throttle_duration_sec=5.0)
            return
        self.remember(self.reports, report.stamp, report)

    def remember(self, table: dict, stamp: tuple[int, int], value) -> None:
        table[stamp] = value
        while len(table) > KEEP_STAMPS:
            table.pop(next(iter(table)))
        if stamp not in self.decided and stamp in self.joints and stamp in self.scenes and stamp in self.reports:
            self.decide(stamp)

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, stamp: tuple[int, int]) -> None:
        from hilserl.sim.operator import LET_GO, TAKE_OVER, SceneView

        self.decided.add(stamp)
        if len(self.decided) > KEEP_STAMPS:
            self.decided.discard(min(self.decided))
        report, scene = self.reports[stamp], self.scenes[stamp]
        if report.ended:  # the last step of an episode: nobody acts on it, but the operator saw how it went
            trust = self.operator.episode_ended(report.episode, report.success)
            if trust:
                self.get_logger().info(f"after episode {report.episode}: {trust}")
            if trust is not None:  # judged: the status shows the count
                self.publish_status("watching")
            return
        starts = report.episode != self.operator.episode
        decision = self.operator.step(SceneView(
            episode=report.episode, step=report.step, tcp=scene["end_effector"], cube_position=scene["cube"],
            cube_quaternion=scene["cube_quaternion"], target_position=scene["target"],
            joint_positions=self.joints[stamp]))
        if starts and self.operator.examining:
            self.get_logger().info(f"episode {report.episode} is an exam: the policy works alone")
        if not decision.publishes:
            return
        self.publish_spacemouse(decision.twist, decision.buttons)
        if decision.kind == TAKE_OVER:
            self.last_reason = decision.reason
            self.get_logger().info(f"taking over at episode {report.episode} step {report.step}: {decision.reason}")
            self.publish_status("driving")
        elif decision.kind == LET_GO:
            self.get_logger().info(f"letting go at episode {report.episode} step {report.step}: {decision.reason}")
            self.publish_status("watching")

    def publish_spacemouse(self, twist: np.ndarray, buttons: tuple[int, int]) -> None:
        msg = Twist()
        (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z) = (
            float(v) for v in twist)
        joy = Joy(axes=[float(v) for v in twist], buttons=list(buttons))
        joy.header.stamp = self.get_clock().now().to_msg()
        self.twist_pub.publish(msg)
        self.joy_pub.publish(joy)

    def publish_status(self, state: str) -> None:
        op = self.operator
        self.status_pub.publish(String(data=json.dumps(
            {"node": "operator", "state": state, "episode": op.episode, "interventions": op.interventions_total,
             "interventions_this_episode": op.interventions, "last_reason": self.last_reason,
             "trusting": op.trusting, "judged_done_alone": f"{sum(op.judged)}/{len(op.judged)}"})))


def main(argv: list[str]) -> int:
    return run_node(OperatorNode, argv)
