"""Genesis task throughput: environment steps per second with rendering, measured in this process.

Each measurement is a function returning a `Row`; `main` runs the selected ones and prints one table whose
ratios are against the physics-only loop of the same scene, measured in the same run:
  physics     the single-env scene stepped without rendering (the baseline)
  direct      `PandaTask.step` with one 84x84 camera, single env (target >= 30 env steps/s)
  batched     `PandaTask.step_batch` with `--n-envs` environments in one scene (env steps/s over all envs)
A measurement that goes through ROS (the sim node in lock-step) registers itself in MEASUREMENTS the same
way and reports in the same table.

    .venv/bin/python bench/sim_throughput.py [--steps 200] [--n-envs 4] [--only direct,batched]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TARGET_SINGLE_ENV = 30.0  # env steps/s, single env, one 84x84 camera
WARMUP_STEPS = 25  # the first renders of a process are slow; not counted


@dataclass
class Row:
    name: str
    env_steps_per_s: float
    n_envs: int
    steps: int
    note: str = ""


def hold_targets(task, observations) -> np.ndarray:
    return np.stack([o.joint_positions for o in observations])


def timed_steps(task, steps: int) -> float:
    """Seconds for `steps` control steps holding the current pose, resetting environments that end."""
    observations = task.reset_batch(list(range(task.n)))
    for _ in range(WARMUP_STEPS):
        observations = [r.observation for r in task.step_batch(hold_targets(task, observations))]
    observations = task.reset_batch(list(range(task.n)))
    started = time.perf_counter()
    for _ in range(steps):
        results = task.step_batch(hold_targets(task, observations))
        observations = [r.observation for r in results]
        ended = [e for e, r in enumerate(results) if r.terminated or r.truncated]
        if ended:
            for e, obs in zip(ended, task.reset_batch([10_000 + e for e in ended], envs_idx=ended)):
                observations[e] = obs
    return time.perf_counter() - started


def measure_physics(task, steps: int) -> Row:
    """The same scene's physics for the same number of control periods, no rendering, no observations."""
    task.reset_batch(list(range(task.n)))
    substeps = task.config.substeps
    started = time.perf_counter()
    for _ in range(steps):
        for _ in range(substeps):
            task.scene.step(update_visualizer=False)
    elapsed = time.perf_counter() - started
    return Row("physics", steps * task.n / elapsed, task.n, steps, f"{substeps} physics steps per env step")


def measure_direct(task, steps: int) -> Row:
    elapsed = timed_steps(task, steps)
    cfg = task.config
    return Row("direct", steps / elapsed, 1, steps, f"{cfg.num_cameras} camera(s) {cfg.image_size}px, render + state")


def measure_batched(n_envs: int, steps: int, base_config) -> Row:
    import dataclasses

    from hilserl.sim.task import PandaTask

    task = PandaTask(dataclasses.replace(base_config, n_envs=n_envs))
    elapsed = timed_steps(task, steps)
    return Row("batched", steps * n_envs / elapsed, n_envs, steps, "one physics call, one render per env")


# name -> how to run it given (single-env task, args). Other measurements (e.g. ROS lock-step) add an entry.
MEASUREMENTS: dict[str, Callable[..., Row]] = {
    "physics": lambda task, args: measure_physics(task, args.steps),
    "direct": lambda task, args: measure_direct(task, args.steps),
    "batched": lambda task, args: measure_batched(args.n_envs, max(args.steps // args.n_envs, 20), task.config),
}
TARGET_ROS_VS_DIRECT = 0.8


def measure_ros(task, args) -> Row:
    """The sim node in lock-step, in its own process, answered over Fast DDS by a zero-compute commander here:
    every observation it publishes is answered with a hold-pose command. Env steps/s of the whole loop."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "src"))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from hilserl.nodes.dds import configure_transport

    configure_transport()
    domain = 30 + os.getpid() % 60
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    sim = subprocess.Popen([sys.executable, "-m", "hilserl", "sim", "--ros-args", "-p", "lockstep:=true",
                            "-p", f"image_size:={args.image_size}", "-p", f"num_cameras:={args.num_cameras}"],
                           env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("bench_commander", context=context)
    qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5)
    command = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", qos)
    answered: list[float] = []

    def answer(msg: JointState) -> None:
        answered.append(time.perf_counter())
        command.publish(Float64MultiArray(data=list(msg.position)))

    node.create_subscription(JointState, "/joint_states", answer, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 300
        while len(answered) < WARMUP_STEPS + args.steps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        if len(answered) < WARMUP_STEPS + args.steps:
            raise SystemExit(f"ros: only {len(answered)} lock-step answers in 300 s; is the sim node starting?")
        timed = answered[WARMUP_STEPS:WARMUP_STEPS + args.steps]
        rate = (len(timed) - 1) / (timed[-1] - timed[0])
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        sim.terminate()
        sim.wait(20)
    return Row("ros", rate, 1, args.steps, "sim node lock-step + Fast DDS round trip (separate processes)")


MEASUREMENTS["ros"] = measure_ros


def print_table(rows: list[Row], baseline: Row | None) -> None:
    print(f"{'measurement':<12} {'n_envs':>6} {'env steps/s':>12} {'vs physics':>11}  note")
    for row in rows:
        ratio = f"{row.env_steps_per_s / baseline.env_steps_per_s:>10.2f}x" if baseline else f"{'-':>11}"
        print(f"{row.name:<12} {row.n_envs:>6} {row.env_steps_per_s:>12.1f} {ratio}  {row.note}")
    direct = next((r for r in rows if r.name == "direct"), None)
    if direct:
        verdict = "meets" if direct.env_steps_per_s >= TARGET_SINGLE_ENV else "MISSES"
        ratio = direct.env_steps_per_s / TARGET_SINGLE_ENV
        print(f"single env: {direct.env_steps_per_s:.1f} env steps/s, {ratio:.2f}x the {TARGET_SINGLE_ENV:.0f}/s "
              f"target ({verdict} it)")
    batched = next((r for r in rows if r.name == "batched"), None)
    if direct and batched:
        print(f"batched ({batched.n_envs} envs): {batched.env_steps_per_s / direct.env_steps_per_s:.2f}x single env")
    ros = next((r for r in rows if r.name == "ros"), None)
    if direct and ros:
        ratio = ros.env_steps_per_s / direct.env_steps_per_s
        print(f"ROS lock-step loop: {ratio:.2f}x the direct loop (target >= {TARGET_ROS_VS_DIRECT}: "
              f"{'meets' if ratio >= TARGET_ROS_VS_DIRECT else 'MISSES'} it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="control steps per measurement")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--num-cameras", type=int, default=1)
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of {list(MEASUREMENTS)}")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(MEASUREMENTS))
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")

    from hilserl.sim.task import PandaTask, TaskConfig

    task = PandaTask(TaskConfig(image_size=args.image_size, num_cameras=args.num_cameras))
    baseline = measure_physics(task, args.steps)
    rows = [baseline] + [MEASUREMENTS[name](task, args) for name in selected if name != "physics"]
    print_table(rows, baseline)
    print(json.dumps({r.name: round(r.env_steps_per_s, 1) for r in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
