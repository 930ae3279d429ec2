"""`python -m hilserl record-frames --task lift --episodes N --out DIR`: labelled frames from the Genesis task.

Every frame is labelled with the sim's own success at that observation. Success does not end an episode here
(it runs `--episode-steps` steps), so an episode that succeeds goes on showing the success it holds. The
episodes mix the scripted expert (with action noise) and deliberate failures, so that the non-success frames
include near-misses that look like success:

  expert  the scripted expert, Gaussian noise of std `--noise` on every action
  short   (lift, push) the expert aiming short of the goal: lift raises the cube only part of the way, push
          stops before the pad
  miss    the expert aiming a few centimetres beside the cube: it closes on air (or grazes the cube)
  random  smoothed random actions

Kinds are drawn per episode from `--seed` (`--failure-fraction` of the episodes are not `expert`). Frames are the
newest camera frames as the policy sees them (uint8 [3*cams, S, S], S = `--image-size`), written in the format
of hilserl.reward.frames. Prints one JSON line: {"frames", "success_frames", "episodes", "kinds", "out"}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter

import numpy as np

from hilserl.policies.observation import preprocess_frame
from hilserl.robot import JOINTS
from hilserl.sim.task import TASKS, VARIANTS

EXPERT_NOISE = 0.05
FAILURE_FRACTION = 0.5
FAILURE_KINDS = ("short", "miss", "random")
SHORT_OF_GOAL = 0.4  # "short": the share of the way to the goal the expert aims for
MISS_OFFSET = (0.03, 0.06)  # m, "miss": how far beside the cube the expert aims
RANDOM_SMOOTHING = 0.8  # "random": a[t] = s * a[t-1] + (1 - s) * noise


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hilserl record-frames", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="lift")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--out", required=True, help="frames folder (appended to when it has shards)")
    p.add_argument("--seed", type=int, default=0, help="episode k is reset with seed + k; kinds drawn from it too")
    p.add_argument("--variant", choices=tuple(VARIANTS), default="standard")
    p.add_argument("--image-size", type=int, default=84, help="the policy's image size (px)")
    p.add_argument("--num-cameras", type=int, default=1)
    p.add_argument("--episode-steps", type=int, default=80,
                   help="steps per episode; success does not end one, so a success is held for the rest")
    p.add_argument("--noise", type=float, default=EXPERT_NOISE, help="std of the noise on the expert's actions")
    p.add_argument("--failure-fraction", type=float, default=FAILURE_FRACTION,
                   help="share of episodes that are deliberate failures (short, miss, random)")
    args = p.parse_args(argv)
    if args.episodes < 1 or not 0.0 <= args.failure_fraction <= 1.0 or args.noise < 0:
        p.error("--episodes must be >= 1, --failure-fraction in [0, 1], --noise >= 0")
    return args


def episode_kinds(episodes: int, failure_fraction: float, rng: np.random.Generator) -> list[str]:
    failures = int(round(failure_fraction * episodes))
    kinds = ["expert"] * (episodes - failures) + [FAILURE_KINDS[i % len(FAILURE_KINDS)] for i in range(failures)]
    return [kinds[i] for i in rng.permutation(episodes)]


def controller(kind: str, expert, rng: np.random.Generator, noise: float, action_dim: int):
    """obs -> action in [-1, 1]^action_dim for one episode of `kind`."""
    if kind == "random":
        last = np.zeros(action_dim)

        def random_walk(obs):
            nonlocal last
            last = RANDOM_SMOOTHING * last + (1 - RANDOM_SMOOTHING) * rng.uniform(-1, 1, action_dim) * 3
            return np.clip(last, -1, 1)
        return random_walk
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(*MISS_OFFSET)
    beside = np.array([np.cos(angle) * distance, np.sin(angle) * distance, 0.0])

    def steered(obs):
        if kind == "short":  # the goal moved part of the way from the cube's start
            start = obs.cube_position if expert.task.config.task == "push" else expert.task.cube_start[0]
            goal = start + SHORT_OF_GOAL * (obs.target_position - start)
            if expert.task.config.task == "lift":
                goal[:2] = obs.target_position[:2]
            obs = dataclasses.replace(obs, target_position=goal)
        elif kind == "miss":
            obs = dataclasses.replace(obs, cube_position=obs.cube_position + beside)
        return expert.act(obs) + rng.normal(0.0, noise, action_dim)
    return steered


def record(args: argparse.Namespace, log=lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    from tqdm import tqdm

    from hilserl.reward.frames import FrameWriter
    from hilserl.sim.expert import ScriptedExpert
    from hilserl.sim.task import PandaTask, action_to_targets, variant_config

    task = PandaTask(variant_config(args.variant, task=args.task, image_size=args.image_size,
                                    num_cameras=args.num_cameras, episode_steps=args.episode_steps,
                                    end_on_success=False))
    expert = ScriptedExpert(task)
    rng = np.random.default_rng(args.seed)
    kinds = episode_kinds(args.episodes, args.failure_fraction, rng)
    writer = FrameWriter(args.out, source=f"sim {args.task} {args.variant}")
    success_frames, reached = 0, Counter()
    for k in tqdm(range(args.episodes), desc="record-frames", unit="ep", file=sys.stderr):
        act = controller(kinds[k], expert, rng, args.noise, len(JOINTS))  # joint deltas
        obs, success, steps = task.reset(seed=args.seed + k), False, 0
        while True:
            writer.add(np.concatenate([preprocess_frame(image, args.image_size) for image in obs.images]), success)
            success_frames += int(success)
            reached[kinds[k]] += int(success and steps == args.episode_steps)
            if steps == args.episode_steps:
                break
            action = np.clip(act(obs), -1.0, 1.0)
            result = task.step(action_to_targets(obs.joint_positions, action))
            obs, success, steps = result.observation, result.success, steps + 1
        writer.end_episode()
        log(f"episode {k} (seed {args.seed + k}, {kinds[k]}): success at the end {success}")
    writer.close()
    return {"frames": writer.frames_written, "success_frames": success_frames, "episodes": args.episodes,
            "kinds": dict(Counter(kinds)), "success_at_end": dict(reached), "out": str(args.out)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(json.dumps(record(args)))
    return 0
