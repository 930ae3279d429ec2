"""`python -m hilserl <command> ...`: every node and tool of the package from a plain venv.

Nodes take ROS arguments as under `ros2 run`: `python -m hilserl learner --ros-args -p checkpoint:=DIR`.
"""

from __future__ import annotations

import importlib
import os
import sys

# Before torch loads: idle OpenMP threads sleep rather than spin (spinning costs 3x on shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# command -> (module, one-line help). Modules are imported lazily: `infer` needs no rclpy, nodes no Genesis.
COMMANDS: dict[str, tuple[str, str]] = {
    "learner": ("hilserl.nodes.learner", "learner node: trains and publishes the policy weights"),
    "actor": ("hilserl.nodes.actor", "actor node: waits for weights, then commands the arm"),
    "sim": ("hilserl.nodes.sim", "Genesis sim node: the arm, its controllers and cameras"),
    "teleop": ("hilserl.nodes.teleop", "keyboard teleop: publishes sensor_msgs/Joy for interventions"),
    "operator": ("hilserl.nodes.operator", "simulated operator: takes over a SpaceMouse when the policy stalls"),
    "init-checkpoint": ("hilserl.tools.init_checkpoint", "write a freshly initialised checkpoint"),
    "infer": ("hilserl.tools.infer", "run a checkpoint directly: one image (--image) or Genesis (--sim)"),
    "pretrain": ("hilserl.tools.pretrain", "pretrain DrQ-v2 in Genesis (imitation + RL fine-tuning)"),
    "bringup": ("hilserl.tools.bringup", "start sim + learner + actor(s) as processes (the launch file's twin)"),
    "plot": ("hilserl.tools.plot", "write PNG plots of a run directory"),
    "record-frames": ("hilserl.tools.record_frames", "record success-labelled camera frames in Genesis"),
    "reward-classifier": ("hilserl.tools.reward_classifier", "train / eval a success classifier on labelled frames"),
}


def usage() -> str:
    lines = ["usage: python -m hilserl <command> [args]", "", "commands:"]
    lines += [f"  {name:<16} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
