"""Genesis sim node: the Panda, its ros2_control forward position controller and its cameras, in one process.

It behaves like the hardware an actor drives, so the same actor runs on both:
  /forward_position_controller/commands (sub)  std_msgs/Float64MultiArray joint position targets in
                                               `joints` order; refused (logged, never applied) when the
                                               length is wrong, a value is NaN/inf or outside the limits
  /joint_states (pub)                          sensor_msgs/JointState
  camera/image_raw, camera/camera_info (pub)   sensor_msgs/Image (rgb8) + CameraInfo; more cameras as
                                               camera_1/..., camera_2/...
  sim/step (pub)                               std_msgs/String JSON per control step: episode, step, reward,
                                               success, terminated, truncated, episode_return, stamp
                                               (control/steps.py), RELIABLE KEEP_LAST 100: read in order
  sim/episodes (pub)                           std_msgs/String JSON per finished episode (episode, steps,
                                               return, success, terminated, truncated, reason), latched
                                               history (KEEP_LAST 1000)
  /clock (pub)                                 simulated time, for use_sim_time
  sim/reset (srv)                              std_srvs/Trigger: start a new episode now
  /robot_description (pub, latched)            std_msgs/String: the Panda URDF (Genesis's), as a real arm's
                                               robot_state_publisher latches it (ee_delta actors' kinematics)
  ~/status (pub, latched)                      compact JSON state

Modes (parameter `lockstep`):
  false  real time: physics advances one control period every 1/control_hz seconds toward the newest
         accepted target, like a real arm.
  true   lock-step: physics advances one control period per accepted command, then publishes the new
         observation (every topic of one step carries the same stamp), so training runs as fast as the
         CPU allows. The newest observation is re-sent each second until a command answers it.
         `lockstep_max_hz` > 0 caps the steps per second (each command still gets its step): experience
         then arrives no faster than a learner can train on it.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from hilserl import names
from hilserl.control.steps import StepReport
from hilserl.health import OK, WARN, Report
from hilserl.names import camera_image_topics, camera_prefix
from hilserl.nodes.diagnostics import Diagnostics, StatusTopic
from hilserl.nodes.image_conv import rgb_to_image_msg
from hilserl.nodes.markers import EndEffectorTrail, task_markers
from hilserl.nodes.params import SIM_PARAMS, ParameterError, declare
from hilserl.nodes.qos import CLOCK, EPISODE_LOG, LATCHED, STEP_REPORTS, STREAM
from hilserl.nodes.runtime import run_node
from hilserl.robot import JOINTS

SLOW_SIM_RATIO = 0.8  # a real-time sim below this real-time factor is a WARN


class SimNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("sim")
        p = declare(self, SIM_PARAMS)  # exits with one line on a bad value, before Genesis loads
        from hilserl.sim.task import PandaTask, variant_config  # Genesis loads here, not at import

        self.lockstep: bool = p["lockstep"]
        self.paced = self.lockstep and p["lockstep_max_hz"] > 0
        self.command_waiting = False
        self.seed: int = p["seed"]
        self.max_episodes: int = p["max_episodes"]
        try:
            config = variant_config(p["variant"], task=p["task"], image_size=p["image_size"],
                                    num_cameras=p["num_cameras"], episode_steps=p["episode_steps"])
        except ValueError as err:  # a combination the parameter table cannot express
            raise ParameterError(f"sim: invalid parameters: {err}") from None
        self.task = PandaTask(config)
        self.control_dt = self.task.config.control_dt
        self.joint_pub = self.create_publisher(JointState, names.JOINT_STATES_TOPIC, STREAM)
        self.image_pubs, self.info_pubs = [], []
        for i, topic in enumerate(camera_image_topics(self.task.config.num_cameras)):
            self.image_pubs.append(self.create_publisher(Image, topic, STREAM))
            self.info_pubs.append(self.create_publisher(CameraInfo, f"{camera_prefix(i)}/camera_info", STREAM))
        self.step_pub = self.create_publisher(String, names.STEP_TOPIC, STEP_REPORTS)
        self.episodes_pub = self.create_publisher(String, names.SIM_EPISODES_TOPIC, EPISODE_LOG)
        self.clock_pub = self.create_publisher(Clock, names.CLOCK_TOPIC, CLOCK)
        self.status_pub = StatusTopic(self)  # latched, publishes on change only
        self.markers_pub = self.create_publisher(MarkerArray, names.MARKERS_TOPIC, STREAM)
        self.trail, self.intervening = EndEffectorTrail(), False
        self.create_subscription(Bool, names.INTERVENTION_TOPIC, lambda msg: setattr(self, "intervening", msg.data),
                                 LATCHED)
        self.create_subscription(Float64MultiArray, names.COMMAND_TOPIC, self.on_command, STREAM)
        self.create_service(Trigger, names.RESET_SERVICE, self.on_reset)
        # The arm's URDF, latched as robot_state_publisher does on hardware: an ee_delta actor's kinematics.
        from hilserl.nodes.robot_description import panda_urdf

        self.description_pub = self.create_publisher(String, names.ROBOT_DESCRIPTION_TOPIC, LATCHED)
        self.description_pub.publish(String(data=panda_urdf()))

        self.episode, self.sim_time = 0, 0.0
        self.refused, self.applied = 0, 0
        self.target: np.ndarray | None = None
        self.successes: list[bool] = []
        self.wall_started, self.sim_started = time.monotonic(), 0.0
        self.start_episode()
        self.diagnostics = Diagnostics(self, self.health)
        self.create_timer(1.0, self.publish_status)  # compact, 1 Hz: readable with `ros2 topic echo`
        if self.lockstep:
            self.create_timer(1.0, self.republish)
            if self.paced:  # commands wait for this timer instead of stepping at once
                self.create_timer(1.0 / p["lockstep_max_hz"], self.paced_step)
        else:
            self.create_timer(1.0 / p["control_hz"], self.realtime_step)
        mode = "lock-step" if self.lockstep else "real-time"
        self.get_logger().info(f"sim ready: task {p['task']} ({p['variant']}), {mode}, "
                               f"{self.task.config.num_cameras} camera(s) {p['image_size']}px")

    # -- episodes ------------------------------------------------------------------------------
    def start_episode(self) -> None:
        self.obs = self.task.reset(seed=self.seed + self.episode)
        self.sim_time += self.control_dt  # a reset is a new step: its observation gets a new stamp
        self.step_index, self.episode_return = 0, 0.0
        self.last_report = dict(episode=self.episode, step=0, reward=0.0, terminated=False, truncated=False,
                                success=False, episode_return=0.0)
        self.target = None
        self.trail.clear()
        self.publish_observation()

    def finished(self) -> bool:
        return self.max_episodes > 0 and self.episode >= self.max_episodes

    def on_reset(self, request, response):
        if self.step_index > 0:
            self.end_episode(success=False, reason="reset requested", terminated=False, truncated=False)
        else:
            self.start_episode()
        response.success, response.message = True, f"episode {self.episode} started"
        return response

    def end_episode(self, success: bool, reason: str, terminated: bool, truncated: bool) -> None:
        self.successes.append(success)
        self.episodes_pub.publish(String(data=json.dumps(
            {"episode": self.episode, "steps": self.step_index, "return": self.episode_return, "success": success,
             "terminated": terminated, "truncated": truncated, "reason": reason})))
        rate = sum(self.successes) / len(self.successes)
        self.get_logger().info(f"episode {self.episode} ended ({reason}): success={success}, "
                               f"return={self.episode_return:.2f}, success rate so far {rate:.2f}")
        self.episode += 1
        if self.finished():
            self.get_logger().info(f"{self.max_episodes} episodes done; sim holds")
            self.publish_status()
            return
        self.start_episode()

    # -- commands and stepping -----------------------------------------------------------------
    def on_command(self, msg: Float64MultiArray) -> None:
        targets = np.asarray(msg.data, dtype=np.float64)
        reason = self.task.validate_command(targets)
        if reason:
            self.refused += 1
            self.get_logger().warning(f"command refused, not applied: {reason}", throttle_duration_sec=1.0)
            self.publish_status()
            return
        self.target = targets
        if self.lockstep and not self.finished():
            if self.paced:
                self.command_waiting = True
            else:
                self.advance()

    def paced_step(self) -> None:
        if self.command_waiting and not self.finished():
            self.command_waiting = False
            self.advance()

    def realtime_step(self) -> None:
        if self.finished():
            return
        if self.target is None:  # no command yet: hold the current pose, like a controller at start-up
            self.target = self.obs.joint_positions.copy()
        self.advance()

    def advance(self) -> None:
        result = self.task.step(self.target)
        self.applied += 1
        self.obs, self.step_index = result.observation, self.step_index + 1
        self.sim_time += self.control_dt
        self.episode_return += float(result.reward)
        self.last_report = dict(episode=self.episode, step=self.step_index, reward=float(result.reward),
                                terminated=bool(result.terminated), truncated=bool(result.truncated),
                                success=bool(result.success), episode_return=self.episode_return)
        self.publish_observation()
        if result.terminated or result.truncated:
            self.end_episode(bool(result.success), "terminated" if result.terminated else "time limit",
                             bool(result.terminated), bool(result.truncated))

    # -- publishing ----------------------------------------------------------------------------
    def stamp(self):
        from builtin_interfaces.msg import Time

        sec = int(math.floor(self.sim_time))
        return Time(sec=sec, nanosec=int(round((self.sim_time - sec) * 1e9)) % 1_000_000_000)

    def publish_observation(self) -> None:
        stamp = self.stamp()
        self.clock_pub.publish(Clock(clock=stamp))
        joints = JointState(name=list(JOINTS), position=self.obs.joint_positions.tolist(),
                            velocity=self.obs.joint_velocities.tolist())
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        for i, rgb in enumerate(self.obs.images):
            image = Image()
            rgb_to_image_msg(rgb, image)
            image.header.stamp, image.header.frame_id = stamp, f"{camera_prefix(i)}_optical_frame"
            self.image_pubs[i].publish(image)
            self.info_pubs[i].publish(self.camera_info(rgb.shape[1], rgb.shape[0], stamp, image.header.frame_id))
        report = StepReport(**self.last_report, stamp=(stamp.sec, stamp.nanosec))
        self.step_pub.publish(String(data=report.to_json()))
        self.trail.add(self.obs.ee_position, self.intervening)
        self.markers_pub.publish(task_markers(self.trail, self.obs.target_position, self.obs.cube_position,
                                              self.obs.cube_quaternion, self.intervening, stamp=stamp))

    def camera_info(self, width: int, height: int, stamp, frame_id: str) -> CameraInfo:
        fov = math.radians(self.task.config.camera_fov)
        f = 0.5 * height / math.tan(0.5 * fov)
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.header.stamp, info.header.frame_id = stamp, frame_id
        info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, width / 2, 0.0, 0.0, f, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.d = [0.0] * 5
        return info

    def republish(self) -> None:
        """Lock-step: re-send the current step (same stamp) so a late actor can answer it."""
        if not self.finished():
            self.publish_observation()

    def real_time_factor(self) -> float:
        wall = time.monotonic() - self.wall_started
        return (self.sim_time - self.sim_started) / wall if wall > 0 else 0.0

    def health(self) -> Report:
        """The real-time factor (a slow real-time sim is WARN) and refused commands."""
        rtf = self.real_time_factor()
        values = {"mode": "lockstep" if self.lockstep else "realtime", "real_time_factor": rtf,
                  "episode": self.episode, "step": self.step_index, "commands_applied": self.applied,
                  "commands_refused": self.refused,
                  "success_rate": sum(self.successes) / len(self.successes) if self.successes else ""}
        if self.finished():
            return Report(OK, f"done: {len(self.successes)} episodes, holding", values)
        if not self.lockstep and self.applied > 10 and rtf < SLOW_SIM_RATIO:
            return Report(WARN, f"sim runs at {rtf:.2f}x real time: slower than the arm it stands in for", values)
        if self.refused and self.refused >= self.applied:
            return Report(WARN, f"{self.refused} commands refused (out of limits or wrong length)", values)
        return Report(OK, f"episode {self.episode} step {self.step_index}, {rtf:.2f}x real time", values)

    def publish_status(self) -> None:
        status = {"node": "sim", "episode": self.episode, "step": self.step_index, "applied": self.applied,
                  "refused": self.refused, "real_time_factor": round(self.real_time_factor(), 3),
                  "success_rate": (sum(self.successes) / len(self.successes)) if self.successes else None,
                  "episodes_done": len(self.successes), "mode": "lockstep" if self.lockstep else "realtime"}
        self.status_pub.publish(String(data=json.dumps(status)))


def main(argv: list[str]) -> int:
    return run_node(SimNode, argv)
