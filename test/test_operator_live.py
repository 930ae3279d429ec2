"""The simulated operator in the lock-step loop (real processes, Fast DDS, Genesis): sim + learner (no updates)
+ actor + operator, with a freshly initialised ee_delta policy that does not reach the target.

The operator sees the policy stall, takes over through /spacenav/twist and /spacenav/joy, drives the gripper
toward the target with the scripted expert, and lets go; the actor flags those steps as interventions.
What happened is read from the sim's markers (the gripper, the target, and "HUMAN" while the actor reports
a person in control) and from the actor's episode summaries.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rosutil import NodeProcess, init_checkpoint, wait_for

STARTUP = 240.0  # Genesis compiles its kernels on a machine's first scene build
IMAGE_SIZE = 48
TAKEOVER_STEPS = 8
# Eager: 3 cm closer within 5 steps, or it takes over (the untrained policy's drift and the arm's sag under
# gravity come to less than that).
# Every second episode is an exam: the policy works alone and the operator judges it.
OPERATOR = {"stall_steps": 5, "progress_epsilon": 0.03, "takeover_steps": TAKEOVER_STEPS,
            "max_interventions_per_episode": 2, "exam_every": 2}


def scene(msg) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(gripper, target, a person in control) from one sim/markers MarkerArray."""
    from visualization_msgs.msg import Marker

    added = {m.ns: m for m in msg.markers if m.action == Marker.ADD}
    if "end_effector" not in added or "target" not in added:
        return None
    def at(ns):
        p = added[ns].pose.position
        return np.array([p.x, p.y, p.z])
    return at("end_effector"), at("target"), "intervention" in added


def takeovers(frames: list) -> list[list]:
    """Runs of consecutive frames marked HUMAN."""
    runs, current = [], []
    for frame in frames:
        if frame[2]:
            current.append(frame)
        elif current:
            runs.append(current)
            current = []
    return runs


def test_the_operator_takes_over_a_stalled_policy_and_hands_back(ros_graph, tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    env, procs, probe = ros_graph
    checkpoint = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "4", "--action-space", "ee_delta",
                                 "--image-size", str(IMAGE_SIZE), "--hidden-dim", "64",
                                 "--uniform-exploration-steps", "0")["path"]
    latched_log = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.subscribe(MarkerArray, "/sim/markers", QoSProfile(depth=100))
    probe.subscribe(String, "/actor/episodes", latched_log)
    probe.subscribe(String, "/operator/status", latched)

    def start(command: str, params: dict) -> None:
        procs.append(NodeProcess(command, params, env, tmp_path))

    start("sim", {"lockstep": True, "lockstep_max_hz": 10.0, "image_size": IMAGE_SIZE, "episode_steps": 40})
    start("learner", {"checkpoint": checkpoint, "state_dir": str(tmp_path / "learner"),
                      "warmup_transitions": 100000})
    start("actor", {"lockstep": True, "deterministic": True, "send_transitions": False})
    start("operator", OPERATOR)

    def handed_back():
        frames = [f for m in probe.messages("/sim/markers") if (f := scene(m)) is not None]
        runs = takeovers(frames)
        return len(runs) >= 1 and not frames[-1][2] and (frames, runs)
    frames, runs = wait_for(handed_back, STARTUP, "the operator to take over and hand back", procs, interval=0.5)

    # The operator drove the gripper toward the target: over its first takeover the distance fell by far
    # more than the policy's own drift (the expert moves up to ee_step = 2 cm a step).
    run = runs[0]
    start_distance = np.linalg.norm(run[0][0] - run[0][1])
    end_distance = np.linalg.norm(run[-1][0] - run[-1][1])
    assert len(run) >= TAKEOVER_STEPS - 2, f"a takeover of only {len(run)} steps"
    assert start_distance - end_distance > 0.05, f"{start_distance:.3f} m -> {end_distance:.3f} m while driven"

    # The actor reports the interventions; the operator says why it took over.
    wait_for(lambda: any(e["intervention_rate"] > 0 for e in probe.json_messages("/actor/episodes")), 120,
             "an actor episode with interventions", procs, interval=0.5)
    status = json.loads(probe.messages("/operator/status")[-1].data)
    reason = status["last_reason"]
    assert status["interventions"] >= 1 and ("stalled" in reason or "safe box" in reason), status
    operator_log = procs[-1].log()
    assert "taking over at episode" in operator_log and "letting go at episode" in operator_log

    # The second episode it sees is an exam: the policy stalls all the way, nobody takes over, and the operator
    # judges it not done alone.
    def exam_summary():
        exams = [int(n) for n in re.findall(r"episode (\d+) is an exam", procs[-1].log())]
        summaries = {e["episode"]: e for e in probe.json_messages("/actor/episodes")}
        return exams and exams[0] in summaries and summaries[exams[0]]
    exam = wait_for(exam_summary, 120, "an exam episode's summary", procs, interval=0.5)
    assert exam["intervention_rate"] == 0.0 and not exam["success"], exam
    judged = wait_for(lambda: (s := json.loads(probe.messages("/operator/status")[-1].data)).get(
        "judged_done_alone", "0/0") != "0/0" and s, 30, "the exam judged in the operator's status", procs)
    assert judged["judged_done_alone"] == "0/1" and not judged["trusting"], judged
