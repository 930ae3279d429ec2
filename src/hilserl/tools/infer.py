"""`python -m hilserl infer`: run a checkpoint directly, with no ROS.

`--image IMG.png` prints the deterministic action for that still image as JSON `{"action": [...], "action_space": ...}`,
preprocessed exactly as the actor preprocesses its first observation: it is the reference an actor
must match. `--sim` runs the checkpoint in Genesis instead (see tools/infer_sim.py).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image

from hilserl.policies.device import DEVICE_CHOICES, resolve_device
from hilserl.policies.observation import first_observation, joint_state_vector
from hilserl.weights.checkpoint import load_inference_policy
from hilserl.weights.codec import WeightsError
from hilserl.weights.loader import inference_digest


def parse_floats(text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ValueError as err:
        raise SystemExit(f"--joint-positions must be comma-separated numbers: {err}") from err


def image_action(checkpoint: str, image_path: str, joint_positions: np.ndarray | None, device: str = "cpu") -> dict:
    policy = load_inference_policy(checkpoint, resolve_device(device))
    config = policy.config
    try:
        rgb = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise SystemExit(f"cannot read image {image_path}: {err}") from err
    frames = [rgb] * config.num_cameras
    state = joint_state_vector(config, joint_positions)
    action = policy.act(first_observation(config, frames), state, deterministic=True, step=0)
    return {"action": action.tolist(), "action_space": config.action_space,
            "inference_digest": inference_digest(policy)}


def main(argv: list[str]) -> int:
    if "--sim" in argv and ("-h" in argv or "--help" in argv):
        from hilserl.tools import infer_sim
        return infer_sim.main(["--help"])
    parser = argparse.ArgumentParser(prog="python -m hilserl infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--image", help="a still RGB image (PNG/JPEG)")
    mode.add_argument("--sim", action="store_true", help="run episodes in Genesis")
    parser.add_argument("--joint-positions", help="q1,q2,... in `joints` order, for policies that read state")
    parser.add_argument("--device", default="cpu", help=f"where the policy runs: {DEVICE_CHOICES} (default cpu)")
    args, rest = parser.parse_known_args(argv)
    if args.sim:
        from hilserl.tools import infer_sim
        return infer_sim.main(["--checkpoint", args.checkpoint, "--device", args.device, *rest])
    if rest:
        parser.error(f"unrecognised arguments for --image: {rest}")
    q = parse_floats(args.joint_positions) if args.joint_positions else None
    try:
        print(json.dumps(image_action(args.checkpoint, args.image, q, args.device)))
    except (WeightsError, ValueError) as err:
        print(f"infer: {err}", file=sys.stderr)
        return 1
    return 0
