"""`python -m hilserl init-checkpoint`: a freshly initialised checkpoint (the stand-in for a pretrained one).

A fresh policy knows nothing yet, so, as DrQ-v2 does for its first num_expl_steps, the actors act
uniformly at random until the learner has made `--uniform-exploration-steps` updates (recorded in the
checkpoint's config.json and carried in its weights messages; pretrained checkpoints never explore so)."""

from __future__ import annotations

import argparse
import json

import torch

from hilserl.kinematics.action_space import ACTION_SPACES, EE_AXES, action_dim_for
from hilserl.policies import POLICY_TYPES, PolicyConfig, build_agent
from hilserl.policies.config import GRIPPER_MODES
from hilserl.weights.checkpoint import save_checkpoint
from hilserl.weights.codec import EXPLORATION_KEY
from hilserl.weights.loader import inference_digest

NUM_EXPL_STEPS = 2000  # DrQ-v2's default num_expl_steps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hilserl init-checkpoint", description=__doc__)
    parser.add_argument("--policy", choices=POLICY_TYPES, required=True)
    parser.add_argument("--seed", type=int, required=True, help="different seeds give different encoders")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--action-space", choices=ACTION_SPACES, default=PolicyConfig.action_space,
                        help="joint_delta: one delta per joint; ee_delta: end-effector deltas + gripper")
    parser.add_argument("--ee-axes", choices=tuple(EE_AXES), default=PolicyConfig.ee_axes)
    parser.add_argument("--ee-step", type=float, default=PolicyConfig.ee_step, help="m per step at action 1")
    parser.add_argument("--ee-rot-step", type=float, default=PolicyConfig.ee_rot_step, help="rad per step at action 1")
    parser.add_argument("--gripper", choices=GRIPPER_MODES, default=PolicyConfig.gripper,
                        help="ee_delta only: discrete = a grasp critic picks close/stay/open (-1/0/+1)")
    parser.add_argument("--grasp-penalty", type=float, default=PolicyConfig.grasp_penalty,
                        help="discrete gripper: reward subtracted per step whose gripper command moves the fingers")
    parser.add_argument("--grasp-epsilon", type=float, default=PolicyConfig.grasp_epsilon,
                        help="discrete gripper: chance of a random gripper command while exploring")
    parser.add_argument("--action-dim", type=int, default=None,
                        help=f"default: {PolicyConfig.action_dim} for joint_delta, motion + 1 gripper value "
                             "for ee_delta")
    parser.add_argument("--state-dim", type=int, default=0, help="proprioceptive inputs; 0 = pixels only")
    parser.add_argument("--image-size", type=int, default=PolicyConfig.image_size)
    parser.add_argument("--frame-stack", type=int, default=PolicyConfig.frame_stack)
    parser.add_argument("--hidden-dim", type=int, default=PolicyConfig.hidden_dim)
    parser.add_argument("--stddev-schedule", default=PolicyConfig.stddev_schedule,
                        help="DrQ-v2 exploration noise: a constant or 'linear(init,final,steps)'")
    parser.add_argument("--uniform-exploration-steps", type=int, default=NUM_EXPL_STEPS,
                        help="actors act uniformly at random until the learner step reaches this (0 = never)")
    args = parser.parse_args(argv)
    if args.uniform_exploration_steps < 0:
        parser.error("--uniform-exploration-steps must be >= 0")
    try:
        action_dim = args.action_dim or action_dim_for(args.action_space, args.ee_axes, PolicyConfig.action_dim)
        config = PolicyConfig(policy=args.policy, action_dim=action_dim, state_dim=args.state_dim,
                              action_space=args.action_space, ee_axes=args.ee_axes, ee_step=args.ee_step,
                              ee_rot_step=args.ee_rot_step, gripper=args.gripper,
                              **({"grasp_penalty": args.grasp_penalty, "grasp_epsilon": args.grasp_epsilon}
                                 if args.gripper == "discrete" else {}),
                              image_size=args.image_size, frame_stack=args.frame_stack,
                              hidden_dim=args.hidden_dim, stddev_schedule=args.stddev_schedule)
    except ValueError as err:
        parser.error(str(err))
    torch.manual_seed(args.seed)
    agent = build_agent(config)
    out = save_checkpoint(agent, config, args.out, step=0,
                          extra={"seed": args.seed, EXPLORATION_KEY: args.uniform_exploration_steps})
    print(json.dumps({"checkpoint": str(out), "policy": config.policy, "config_fingerprint": config.fingerprint(),
                      "inference_digest": inference_digest(agent.inference)}))
    return 0
