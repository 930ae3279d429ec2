"""End-effector actions through the whole ROS loop (lock-step Genesis sim + learner + actors, real processes).

One graph, three actors on the same simulated arm, with a fresh `ee_delta` checkpoint:
  actor            acts in the weights' action space (ee_delta), IK to joint targets; the URDF comes from the
                   sim's latched /robot_description, as from robot_state_publisher on hardware. A SpaceMouse
                   twist of +x for one second (published here on /spacenav/twist) takes over and moves the
                   TCP along +x; the learner stores those steps flagged, with the executed ee action.
  joint_actor      set up for joint_delta: refuses the ee_delta weights and commands nothing.
  cartesian_actor  command_interface cartesian_pose with a box the arm starts outside of: every PoseStamped
                   target is inside that box, in the URDF's base frame.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from rosutil import NodeProcess, init_checkpoint, wait_for
from test_diagnostics import Monitor
from test_sim_learning import journalled

STARTUP = 240.0  # Genesis compiles its kernels on a machine's first scene build
IMAGE_SIZE = 48
LOCKSTEP = {"lockstep": True, "episode_topic": "sim/step", "max_episode_steps": 0, "deterministic": True}
CARTESIAN_BOX = ([0.25, -0.40, 0.01], [0.40, 0.40, 0.60])  # the Panda's TCP starts at x ~ 0.48: outside


def test_spacenav_drives_the_tcp_joint_actor_refuses_cartesian_targets_stay_in_the_box(ros_graph, tmp_path):
    from geometry_msgs.msg import PoseStamped, Twist
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from hilserl.kinematics.panda import panda_arm

    env, procs, probe = ros_graph
    checkpoint = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "2", "--action-space", "ee_delta",
                                 "--image-size", str(IMAGE_SIZE), "--hidden-dim", "64",
                                 "--uniform-exploration-steps", "0")["path"]
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    refuser_status = probe.subscribe(String, "/joint_actor/status", latched)
    refuser_commands = probe.subscribe(Float64MultiArray, "/joint_actor/commands", QoSProfile(depth=10))
    poses = probe.subscribe(PoseStamped, "/cartesian_actor/target_pose", QoSProfile(depth=100))
    probe.subscribe(String, "/sim/step", QoSProfile(depth=100))
    monitor = Monitor(probe)
    state_dir = tmp_path / "learner"

    def start(command: str, params: dict, **kwargs) -> NodeProcess:
        procs.append(NodeProcess(command, params, env, tmp_path, **kwargs))
        return procs[-1]

    start("sim", {"lockstep": True, "lockstep_max_hz": 10.0, "image_size": IMAGE_SIZE, "episode_steps": 30})
    start("learner", {"checkpoint": checkpoint, "state_dir": str(state_dir), "warmup_transitions": 100000})
    start("actor", LOCKSTEP | {"transition_batch": 4, "spill_dir": str(tmp_path / "spill")})
    start("actor", LOCKSTEP | {"action_space": "joint_delta", "command_topic": "/joint_actor/commands",
                               "send_transitions": False}, name="joint_actor", remap={"__node": "joint_actor"})
    start("actor", LOCKSTEP | {"command_interface": "cartesian_pose", "target_pose_topic": "/cartesian_actor/target_pose",
                               "workspace_lower": CARTESIAN_BOX[0], "workspace_upper": CARTESIAN_BOX[1],
                               "send_transitions": False}, name="cartesian_actor", remap={"__node": "cartesian_actor"})
    wait_for(lambda: (a := monitor.latest("actor")) and int(a["values"]["commands_sent"]) > 10, STARTUP,
             "the ee_delta actor commanding the simulated arm", procs)
    wait_for(lambda: len(poses) > 10, 60, "the cartesian_pose actor's target poses", procs)

    # At the start of an episode (the arm at its start pose, far from the box's x limit) a person pushes the
    # SpaceMouse forward (+x) for one second, as the spacenav driver publishes it.
    wait_for(lambda: (r := probe.json_messages("/sim/step")) and r[-1]["step"] == 1 and r[-1]["episode"] > 0, 60,
             "a fresh episode", procs, interval=0.01)
    twist_pub = probe.node.create_publisher(Twist, "/spacenav/twist", QoSProfile(depth=10))
    push = Twist()
    push.linear.x = 1.0
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        twist_pub.publish(push)
        time.sleep(0.05)
    twist_pub.publish(Twist())

    def interventions():
        stored = sorted(journalled(state_dir), key=lambda t: (t.episode, t.step))
        human = [t for t in stored if t.intervention]
        handed_back = human and any(not t.intervention and (t.episode, t.step) > (human[-1].episode, human[-1].step)
                                    for t in stored)
        return len(human) >= 5 and handed_back and stored
    stored = wait_for(interventions, 60, "the learner to store the SpaceMouse steps", procs, interval=0.5)

    # The TCP's motion over the person's steps, from the stored joint positions through the kinematics.
    arm = panda_arm()
    by_step = {(t.episode, t.step): t for t in stored}
    human = [t for t in stored if t.intervention]
    # The sim's position controller has no gravity compensation: an arm told to hold where it is sags ~5 mm
    # per step. The push's direction is its motion relative to that: the mean step while the person held
    # still (zero action, before handing back) is subtracted from each step that asked for +x.
    def moved(t) -> np.ndarray | None:
        following = by_step.get((t.episode, t.step + 1))
        return None if following is None else arm.tcp_pose(following.state).translation - arm.tcp_pose(t.state).translation
    pushing = [d for t in human if t.action[0] > 0.5 and (d := moved(t)) is not None]
    holding = [d for t in human if not t.action.any() and (d := moved(t)) is not None]
    assert len(pushing) >= 5 and holding, f"{len(pushing)} push steps, {len(holding)} holding steps"
    motion = np.sum(pushing, axis=0) - len(pushing) * np.mean(holding, axis=0)
    angle = math.degrees(math.acos(motion[0] / np.linalg.norm(motion)))
    assert np.linalg.norm(motion) > 0.05 and angle <= 10.0, f"TCP moved {motion} ({angle:.1f} deg from +x)"
    assert np.sum(pushing, axis=0)[0] > 0.05  # and forward, holding drift included
    # What is stored is the executed ee action [dx, dy, dz, gripper]: +x, the gripper untouched.
    assert all(t.action.shape == (4,) and np.abs(t.action[1:]).max() < 0.05 for t in human), [t.action for t in human]
    assert max(t.action[0] for t in human) > 0.95

    # The joint_delta actor refused the ee_delta weights, says why, and never commanded the arm.
    status = json.loads(refuser_status[-1][1].data)
    assert status["state"] == "WAITING" and status["rejected"] >= 1 and "ee_delta" in status["last_rejection"]
    diagnosed = monitor.wait("joint_actor", lambda s: s["level"] == 2, "the joint actor's ERROR", procs)
    assert "ee_delta" in diagnosed["message"]
    assert not refuser_commands

    # Every Cartesian target is in its box (the arm starts outside it), in the URDF's base frame.
    targets = probe.messages("/cartesian_actor/target_pose")
    assert {m.header.frame_id for m in targets} == {"panda_link0"}
    positions = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in targets])
    assert (positions >= np.array(CARTESIAN_BOX[0]) - 1e-9).all() and (positions <= np.array(CARTESIAN_BOX[1]) + 1e-9).all()
    assert all(p.alive() for p in procs)


def test_lockstep_executes_a_persons_reading_of_the_step_shown_not_the_one_before(ros_graph, tmp_path):
    """A person (here the probe) answers each step of one episode the sim shows: +x on even steps, -x on odd
    ones. In lock-step the actor waits for that answer (teleop_wait), so every stored intervention step carries
    the answer to its own observation. Acting at once, it would execute and record the answer to the step
    before (the sign flipped), as it did for nearly every step of the simulated operator's demonstrations.
    The person drives to the episode's end; the next episode starts with the policy in control, although their
    last reading is younger than teleop_timeout."""
    from geometry_msgs.msg import Twist
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String

    env, procs, probe = ros_graph
    checkpoint = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "2", "--action-space", "ee_delta",
                                 "--image-size", str(IMAGE_SIZE), "--hidden-dim", "64",
                                 "--uniform-exploration-steps", "0")["path"]
    state_dir = tmp_path / "learner"
    procs.append(NodeProcess("sim", {"lockstep": True, "lockstep_max_hz": 10.0, "image_size": IMAGE_SIZE,
                                     "episode_steps": 30}, env, tmp_path))
    procs.append(NodeProcess("learner", {"checkpoint": checkpoint, "state_dir": str(state_dir),
                                         "warmup_transitions": 100000}, env, tmp_path))
    # A generous wait: the probe answers from a Python thread of the test process, on a loaded machine. A
    # patient hand-back (a person resting for 3 s keeps control) outlasts the sim's reset between episodes.
    procs.append(NodeProcess("actor", LOCKSTEP | {"transition_batch": 4, "spill_dir": str(tmp_path / "spill"),
                                                  "teleop_wait": 0.5, "teleop_timeout": 3.0}, env, tmp_path))
    twist_pub = probe.node.create_publisher(Twist, "/spacenav/twist", QoSProfile(depth=10))
    joy_pub = probe.node.create_publisher(Joy, "/spacenav/joy", QoSProfile(depth=10))
    answered: dict[int, int] = {}  # step -> the sign of x the person gave for it, in the episode driven
    driven = {}

    def answer(msg: String) -> None:
        report = json.loads(msg.data)
        if not driven and report["episode"] > 0 and report["step"] == 0:
            driven["episode"] = report["episode"]  # the first whole episode the person sees
        if report["episode"] != driven.get("episode") or report["terminated"] or report["truncated"]:
            return
        sign = 1 if report["step"] % 2 == 0 else -1
        answered[report["step"]] = sign
        twist = Twist()
        twist.linear.x = 0.6 * sign
        twist_pub.publish(twist)
        joy_pub.publish(Joy(axes=[0.6 * sign, 0.0, 0.0, 0.0, 0.0, 0.0], buttons=[0, 0]))
    probe.node.create_subscription(String, "/sim/step", answer, QoSProfile(depth=100))

    def stored():
        stored = journalled(state_dir)
        return any(t.episode == driven.get("episode", -2) + 1 and t.step >= 10 for t in stored) and stored
    stored = wait_for(stored, STARTUP, "the learner to store the person's episode and the next", procs, interval=0.5)
    human = [t for t in stored if t.intervention and t.episode == driven["episode"]]
    after = [(t.step, t.action) for t in stored if t.intervention and t.episode > driven["episode"]]
    assert not after, f"the person's hand-over carried into the next episode: {after}"
    # The first answer takes over from the next step on; every step driven carries its own step's answer.
    matched = [t.step for t in human if np.sign(t.action[0]) == answered.get(t.step)]
    assert len(matched) >= 0.9 * len(human) and len(human) >= 15, \
        (f"{len(matched)} of {len(human)} driven steps executed the answer to their own observation",
         [(t.step, round(float(t.action[0]), 2)) for t in human])
    assert all(abs(abs(t.action[0]) - 0.6) < 1e-3 for t in human), [(t.step, t.action) for t in human]
    assert all(p.alive() for p in procs)
