"""`python -m hilserl infer --checkpoint DIR --sim`: run a checkpoint in the Genesis task, with no ROS.

The checkpoint is loaded as an actor loads weights (`load_inference_policy`, strict), observations are
built with `FrameStacker` and actions come from `InferencePolicy.act`, then joint targets in the
checkpoint's action space (`hilserl.sim.rollout.command_for`), as the actor node computes its commands. Prints one line per episode and, last, one JSON line:
  {"success_rate": ..., "mean_return": ..., "episodes": N, "seeds": [first, last], ...}
Episode k uses seed `--seed + k`; the task (reach/push/lift) is the one the checkpoint was pretrained on
unless `--task` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hilserl.sim.task import TASKS, VARIANTS  # plain data; Genesis loads only when a task is built
from hilserl.policies.device import DEVICE_CHOICES, resolve_device
from hilserl.weights.checkpoint import load_inference_policy, read_config_file
from hilserl.weights.codec import WeightsError

VIDEO_SCALE = 4  # the 84 px policy camera, upscaled so a video is watchable
VIDEO_FPS = 10  # one frame per control step: real time at the default control_dt


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hilserl infer --sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode k uses seed + k")
    p.add_argument("--deterministic", action="store_true", help="the policy's mean action (default: sampled, as "
                   "an actor with deterministic:=false acts)")
    p.add_argument("--task", choices=TASKS, help="default: the task the checkpoint was trained on")
    p.add_argument("--variant", choices=tuple(VARIANTS), default="standard",
                   help="task variant (see hilserl.sim.task): easy = fixed cube, start pose and lighting; "
                   "shifted = another light, camera mounting, colours, cube size and friction")
    p.add_argument("--episode-steps", type=int, default=50, help="time limit per episode")
    p.add_argument("--video", help="write the camera view of every episode to this .gif or .mp4")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu", help=f"where the policy runs: {DEVICE_CHOICES} (default cpu)")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    if args.video and Path(args.video).suffix.lower() not in (".gif", ".mp4"):
        p.error(f"--video {args.video}: use a .gif or .mp4 file name")
    return args


def trained_task(doc: dict) -> str:
    """The task a pretrained checkpoint was made for (reach if it does not say)."""
    task = (doc.get("pretrain") or {}).get("task") or {}
    return task.get("task", "reach") if isinstance(task, dict) else "reach"


def write_video(path: str, frames: list[np.ndarray]) -> None:
    import imageio.v2 as imageio

    big = [np.kron(f, np.ones((VIDEO_SCALE, VIDEO_SCALE, 1), dtype=np.uint8)) for f in frames]
    if path.lower().endswith(".gif"):
        imageio.mimsave(path, big, duration=1000 / VIDEO_FPS, loop=0)
    else:
        try:
            imageio.mimsave(path, big, fps=VIDEO_FPS, macro_block_size=1)
        except (ImportError, ValueError, RuntimeError) as err:
            raise SystemExit(f"infer --sim: cannot write {path} ({err}); .mp4 needs imageio-ffmpeg, a .gif does not")


def run_checkpoint(policy, task, *, episodes: int, seed: int, deterministic: bool, step: int = 0,
                   video: str | None = None, log=lambda line: print(line, flush=True)) -> dict:
    """Run `episodes` episodes of `policy` (an InferencePolicy) in `task`; returns the summary."""
    from hilserl.sim.rollout import policy_controller, run_episode

    config = policy.config
    generator = torch.Generator().manual_seed(seed)
    controller = policy_controller(policy, deterministic=deterministic, step=step, generator=generator)
    successes, returns, frames = [], [], []
    started = time.monotonic()
    for k in range(episodes):
        episode = run_episode(task, config, seed + k, controller, record_video=bool(video))
        successes.append(episode.success)
        returns.append(episode.episode_return)
        frames += episode.video
        log(f"episode {k} (seed {seed + k}): success={episode.success} return={episode.episode_return:.2f} "
            f"steps={episode.length}")
    if video:
        write_video(video, frames)
    return {"success_rate": float(np.mean(successes)), "mean_return": float(np.mean(returns)),
            "episodes": episodes, "seeds": [seed, seed + episodes - 1], "task": task.config.task,
            "deterministic": deterministic, "config_fingerprint": config.fingerprint(),
            "wall_time_s": round(time.monotonic() - started, 1), **({"video": video} if video else {})}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        config, doc = read_config_file(args.checkpoint)
        policy = load_inference_policy(args.checkpoint, resolve_device(args.device)).eval()
        # Uniform exploration belongs to a learner run's first steps; here the policy itself is shown.
        policy.uniform_exploration_steps = 0
    except (WeightsError, ValueError) as err:
        print(f"infer --sim: {err}", file=sys.stderr)
        return 1
    from hilserl.sim.task import PandaTask, variant_config

    task_name = args.task or trained_task(doc)
    task = PandaTask(variant_config(args.variant, task=task_name, image_size=config.image_size,
                                    num_cameras=config.num_cameras, episode_steps=args.episode_steps))
    summary = run_checkpoint(policy, task, episodes=args.episodes, seed=args.seed, deterministic=args.deterministic,
                             step=int(doc.get("step", 0)), video=args.video)
    print(json.dumps(summary | {"variant": args.variant, "checkpoint": str(args.checkpoint)}))
    return 0
