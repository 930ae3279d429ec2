"""The actor's control-step cost with end-effector actions: p50/p99 at one torch thread, on this CPU.

In one run, step by step alternately (so load from other processes on the shared CPU hits both alike):
  joint_delta  what the actor does today: push the camera frame onto the frame stack, the shipped policy's
               deterministic action, joint targets = clip(q + action x scale), the Float64MultiArray
               (the baseline)
  ee_delta     the same frame stack and inference, then the `ee_delta` kinematics (Pinocchio forward
               kinematics, workspace clip, damped-least-squares IK; hilserl.kinematics.ee_control) and
               both commands: the Float64MultiArray of joint targets and the PoseStamped of the TCP target
The ee action is the policy's output cut to [dx, dy, dz, gripper] (the shipped checkpoint is a joint-delta
policy; the network's cost does not depend on what its outputs mean). The joint positions wander over the
run so IK always has work to do. Target: ee_delta p99 <= TARGET_P99_MS; reported, not enforced (shared CPU).

    .venv/bin/python bench/actor_step.py [--steps 2000] [--checkpoint checkpoints/reach]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (shared CPU)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from hilserl.kinematics.action_space import EeActionSpace  # noqa: E402
from hilserl.kinematics.panda import panda_controller  # noqa: E402
from hilserl.policies.observation import FrameStacker, joint_state_vector  # noqa: E402
from hilserl.robot import ACTION_SCALE, HOME, JOINT_LOWER, JOINT_UPPER, action_to_targets  # noqa: E402
from hilserl.weights.checkpoint import load_inference_policy  # noqa: E402

TARGET_P99_MS = 3.0
WARMUP = 50


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "reach"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    policy = load_inference_policy(args.checkpoint).eval()
    config = policy.config
    stacker = FrameStacker(config)
    controller = panda_controller(EeActionSpace("xyz"))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(config.image_size, config.image_size, 3), dtype=np.uint8)
    q = np.asarray(HOME, dtype=np.float64)
    pose = PoseStamped()
    pose.header.frame_id = "panda_link0"

    def infer(q: np.ndarray) -> np.ndarray:
        stacked = stacker.push([frame] * config.num_cameras)
        return policy.act(stacked, joint_state_vector(config, q), deterministic=True, step=0)

    def joint_step(q: np.ndarray) -> np.ndarray:
        action = infer(q)
        targets = action_to_targets(q, action[:len(q)], ACTION_SCALE, JOINT_LOWER, JOINT_UPPER)
        Float64MultiArray(data=targets.tolist())
        return targets

    def ee_step(q: np.ndarray) -> np.ndarray:
        output = infer(q)
        command = controller.command(q, np.append(output[:3], output[-1]))
        Float64MultiArray(data=command.joint_targets.tolist())
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = command.target_position.tolist()
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = command.target_quaternion.tolist()
        return command.joint_targets

    times: dict[str, list[float]] = {"joint_delta": [], "ee_delta": []}
    iterations = []
    for i in range(WARMUP + args.steps):
        q = np.clip(np.asarray(HOME) + 0.3 * np.sin(0.01 * i + np.arange(len(HOME))), JOINT_LOWER, JOINT_UPPER)
        for name, step in (("joint_delta", joint_step), ("ee_delta", ee_step)):
            start = time.perf_counter()
            step(q)
            if i >= WARMUP:
                times[name].append(time.perf_counter() - start)
        if i >= WARMUP:
            iterations.append(controller.command(q, np.array([1.0, -1.0, 1.0, 0.0])).ik.iterations)
    kinematics = []
    for i in range(args.steps):  # the kinematics alone, for the breakdown
        q = np.clip(np.asarray(HOME) + 0.3 * np.sin(0.01 * i + np.arange(len(HOME))), JOINT_LOWER, JOINT_UPPER)
        start = time.perf_counter()
        controller.command(q, np.array([1.0, -1.0, 1.0, 0.0]))
        kinematics.append(time.perf_counter() - start)

    base50, base99 = percentiles(times["joint_delta"])
    print(f"actor control step, {args.steps} steps, 1 torch thread, policy {config.policy} "
          f"{config.image_size}px x{config.frame_stack} frames (checkpoint {args.checkpoint})")
    print(f"{'step':<14}{'p50 ms':>9}{'p99 ms':>9}{'p99 / joint_delta p99':>24}")
    for name, label in (("joint_delta", "joint_delta"), ("ee_delta", "ee_delta")):
        p50, p99 = percentiles(times[name])
        print(f"{label:<14}{p50:>9.3f}{p99:>9.3f}{p99 / base99:>24.2f}")
    k50, k99 = percentiles(kinematics)
    print(f"{'kinematics':<14}{k50:>9.3f}{k99:>9.3f}{k99 / base99:>24.2f}   "
          f"(IK iterations per step: median {int(np.median(iterations))}, max {max(iterations)})")
    p99 = percentiles(times["ee_delta"])[1]
    verdict = "meets" if p99 <= TARGET_P99_MS else "misses"
    print(f"ee_delta p99 {p99:.3f} ms {verdict} the target of {TARGET_P99_MS} ms (shared CPU: figures are noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
