"""`python -m hilserl pretrain`: pretrain a DrQ-v2 policy in the Genesis task.

DrQ-v2 from pixels alone takes far more updates than a CPU gives in an hour, so pretraining starts from a
scripted expert:
  1. demos    the expert runs `--expert-demos` episodes; executed actions get Gaussian noise (DART) so the
              data covers states around the expert's path, while the labels stay the expert's clean actions
  2. bc       behaviour cloning: encoder + actor head trained end to end on the labels, with DrQ's random
              shift augmentation (`--augment-pad`) and, with `--colour-jitter`, a random colour transform
  3. dagger   `--dagger-rounds` times: the policy drives (the expert takes a step with probability
              beta^round), the expert labels every visited state, the policy is retrained on everything
  4. critic   `--critic-rollouts` episodes of the policy acting as the actor does (half of them with extra
              action noise, for actions the critic must learn to rank lower), then the twin critics learn by
              n-step TD on the task reward with the learner's sampling (demos/rollouts 50/50, gamma 0.99,
              n_step 3), actor, encoder (and a discrete gripper's grasp critic) held, until the TD error
              settles (`--critic-updates` at most): the learner then starts from a critic that already values
              what the actor does
  5. rl       optional `--rl-steps` of DrQ-v2 fine-tuning on the task reward, protected as the learner protects
              a pretrained policy: n-step TD on demos + online data (50/50), behaviour cloning on the demo rows
              (`--rl-bc-weight`), the encoder at `--rl-encoder-lr-scale` of its rate, and an actor that waits
              `--rl-actor-delay` updates so the critic learns the policy's own data first
`--gripper discrete` (ee_delta): the expert gives gripper commands (close -1, stay 0, open +1), demos and
rollouts replace a command by a random one with probability `--grasp-epsilon` instead of adding noise to it, and
cloning trains the grasp critic on the commands by cross-entropy (arm values: MSE as above).
The policy is evaluated (deterministic, fresh seeds) after each stage; the best evaluation is written to
`--out` as an ordinary DrQ-v2 checkpoint (critic included) that the learner loads directly, with the first
`--ship-demos` expert episodes beside it as `demos.safetensors` (the learner's demonstration buffer).

`--continue-from CKPT` starts the imitation from an existing checkpoint's weights (its policy config and joint
normalisation kept) instead of fresh ones: demos (the cloning data), then more cloning and DAgger rounds, e.g.
rounds in which the policy alone drives, sampled as the actor acts (`--dagger-beta 0`):

    python -m hilserl pretrain --continue-from checkpoints/lift --out OUT --expert-demos 60 --bc-updates 0 \
        --dagger-rounds 4 --dagger-beta 0 --eval-sampled --critic-updates 0

`--init CKPT` starts from an existing checkpoint instead and runs demos + critic only: its actor, encoder and
joint normalisation are written back unchanged (bit for bit at the same `--fp16` storage), with a trained
critic and the demonstrations:

    python -m hilserl pretrain --init checkpoints/reach --out checkpoints/reach --fp16 --demo-noise 0.1

Run directory (`--run-dir`): pretrain/metrics.csv (+ TensorBoard events), last/ and best/ (full precision
checkpoints), demos.npz (the dataset) and progress.json. `--resume` continues from the last finished stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hilserl.kinematics.action_space import ACTION_SPACES, EE_AXES, action_dim_for
from hilserl.policies import PolicyConfig, build_agent, resolve_device
from hilserl.policies.config import GRIPPER_MODES
from hilserl.policies.device import supports_bf16
from hilserl.policies.drqv2 import DrQV2Hyper
from hilserl.policies.inference import GRIPPER_COMMANDS
from hilserl.sim.task import VARIANTS  # plain data; Genesis loads only when a task is built
from hilserl.training.cloning import clone_update

# Defaults, as the shipped reach checkpoint was trained (see checkpoints/reach/README.md).
TASK = "reach"
EXPERT_DEMOS = 100
DEMO_NOISE = 0.3  # std of the Gaussian noise on executed expert actions
BC_UPDATES = 3000
DAGGER_ROUNDS = 5
DAGGER_EPISODES = 30
DAGGER_UPDATES = 800  # per round
DAGGER_BETA = 0.5  # the expert executes a step with probability beta^round
RL_STEPS = 0
RL_ACTOR_DELAY = 500
# The learner's protections of a pretrained policy (config/learner.yaml), for the same reason here.
RL_BC_WEIGHT = 5.0  # behaviour cloning on the demonstration rows in the actor loss
RL_ENCODER_LR_SCALE = 0.1  # the pretrained encoder learns at a tenth of the critic's rate
CRITIC_ROLLOUTS = 30
CRITIC_ROLLOUT_NOISE = 0.3  # std of the extra action noise on every other critic rollout
CRITIC_UPDATES = 3000  # at most; the stage stops earlier once the TD error settles
CRITIC_MIN_UPDATES = 1000
CRITIC_SETTLE_WINDOW = 250  # settled: a window's mean TD loss is no longer 3% below the previous window's
SHIP_DEMOS = 20
GAMMA = 0.99
BATCH_SIZE = 64
LR = 3e-4
EVAL_EPISODES = 20
HIDDEN_DIM = 256
STDDEV_SCHEDULE = "0.2"  # exploration noise of the pretrained policy, also used by the learner afterwards
STATE_STD_FLOOR = 0.05  # rad: joints that barely move are not amplified by the state normalisation
EVAL_SEED_BASE = 900_000_000  # evaluation seeds, far from the training seeds below
TRAIN_SEED_BASE = 10_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hilserl pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint directory to write (the best evaluated policy)")
    p.add_argument("--run-dir", help="logs, intermediate checkpoints and the dataset (default: runs/pretrain-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last finished stage")
    p.add_argument("--task", choices=("reach", "push", "lift"),
                   help=f"default: {TASK}, or with --init the task the checkpoint was pretrained on")
    p.add_argument("--variant", choices=tuple(VARIANTS), default="standard",
                   help="the cell to train and evaluate in (see hilserl.sim.task), e.g. shifted: cloning on the "
                        "cell a policy is moved to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--action-space", default="joint_delta", choices=ACTION_SPACES,
                   help="ee_delta: end-effector deltas + gripper, turned into joint targets by the Panda's kinematics")
    p.add_argument("--ee-axes", default="xyz", choices=tuple(EE_AXES))
    p.add_argument("--gripper", default=PolicyConfig.gripper, choices=GRIPPER_MODES,
                   help="ee_delta only: discrete = a grasp critic picks close/stay/open (-1/0/+1), cloned from the "
                        "expert's commands")
    p.add_argument("--grasp-penalty", type=float, default=PolicyConfig.grasp_penalty,
                   help="discrete gripper: reward subtracted per step whose gripper command moves the fingers")
    p.add_argument("--grasp-epsilon", type=float, default=PolicyConfig.grasp_epsilon,
                   help="discrete gripper: chance of a random gripper command while exploring (the shipped "
                        "policy's, and the expert demos' gripper noise)")
    p.add_argument("--expert-demos", type=int, default=EXPERT_DEMOS, help="expert episodes before cloning")
    p.add_argument("--demo-noise", type=float, default=DEMO_NOISE, help="std of the noise on executed expert actions")
    p.add_argument("--bc-updates", type=int, default=BC_UPDATES, help="cloning updates on the expert demos")
    p.add_argument("--dagger-rounds", type=int, default=DAGGER_ROUNDS)
    p.add_argument("--dagger-episodes", type=int, default=DAGGER_EPISODES, help="policy episodes per round")
    p.add_argument("--dagger-updates", type=int, default=DAGGER_UPDATES, help="cloning updates per round")
    p.add_argument("--dagger-beta", type=float, default=DAGGER_BETA)
    p.add_argument("--init", help="start from this checkpoint: demos + critic only, actor and encoder held")
    p.add_argument("--continue-from", metavar="CKPT",
                   help="start cloning/DAgger from this checkpoint's weights and policy config (not with --init)")
    p.add_argument("--eval-sampled", action="store_true",
                   help="evaluate the policy sampled, as an actor with deterministic:=false acts (default: its mean "
                   "action); the evaluations pick the checkpoint written to --out")
    p.add_argument("--critic-rollouts", type=int, default=CRITIC_ROLLOUTS, help="policy episodes for the critic")
    p.add_argument("--critic-rollout-noise", type=float, default=CRITIC_ROLLOUT_NOISE)
    p.add_argument("--critic-updates", type=int, default=CRITIC_UPDATES, help="TD updates at most (0: no stage)")
    p.add_argument("--ship-demos", type=int, default=SHIP_DEMOS,
                   help="expert episodes written beside the checkpoint as demos.safetensors (0: none)")
    p.add_argument("--rl-steps", type=int, default=RL_STEPS, help="DrQ-v2 fine-tuning env steps (1 update each)")
    p.add_argument("--rl-actor-delay", type=int, default=RL_ACTOR_DELAY, help="critic-only updates first")
    p.add_argument("--rl-bc-weight", type=float, default=RL_BC_WEIGHT,
                   help="behaviour cloning on the expert's rows in the actor loss (0: pure DrQ-v2)")
    p.add_argument("--rl-encoder-lr-scale", type=float, default=RL_ENCODER_LR_SCALE,
                   help="the encoder's learning rate relative to the critic's while fine-tuning")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--lr", type=float, default=LR, help="cloning learning rate (DrQ-v2 keeps its own)")
    p.add_argument("--augment-pad", type=int, default=DrQV2Hyper.augment_pad,
                   help="cloning's random shift in pixels (DrQ-v2's updates keep their own)")
    p.add_argument("--colour-jitter", type=float, default=0.0,
                   help="cloning's colour augmentation, 0 (off) to <1: every frame of a sample through one random "
                        "brightness, contrast, channel gain and mixing (policies/augment.py)")
    p.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES)
    p.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM)
    p.add_argument("--feature-dim", type=int, default=PolicyConfig.feature_dim)
    p.add_argument("--frame-stack", type=int, default=PolicyConfig.frame_stack)
    p.add_argument("--image-size", type=int, default=PolicyConfig.image_size)
    p.add_argument("--num-cameras", type=int, default=1)
    p.add_argument("--no-state", action="store_true",
                   help="pixels only (default: the policy also reads joint positions)")
    p.add_argument("--stddev-schedule", default=STDDEV_SCHEDULE)
    p.add_argument("--camera-jitter", type=float, default=0.0, help="m of camera pose randomisation while training")
    p.add_argument("--episode-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared; 1 is usually fastest)")
    p.add_argument("--device", default="auto", help="where to train: auto (a GPU when torch sees one), cpu, cuda, cuda:N")
    p.add_argument("--no-bf16", action="store_true",
                   help="train in float32 (default: bfloat16 autocast where the device has native bfloat16)")
    p.add_argument("--fp16", action="store_true", help="store the --out checkpoint in float16 (half the size)")
    p.add_argument("--no-tensorboard", action="store_true")
    args = p.parse_args(argv)
    for name in ("expert_demos", "bc_updates", "dagger_rounds", "dagger_episodes", "dagger_updates", "rl_steps",
                 "eval_episodes", "critic_rollouts", "critic_updates", "ship_demos"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.init and args.continue_from:
        p.error("--init (critic only) and --continue-from (more imitation) exclude each other")
    if args.gripper == "discrete" and args.action_space != "ee_delta" and not (args.init or args.continue_from):
        p.error("--gripper discrete needs --action-space ee_delta (the gripper value is its last action)")
    if args.init:  # the checkpoint decides the policy; only demos and the critic stage run
        args.bc_updates = args.dagger_rounds = args.rl_steps = 0
    if args.expert_demos == 0 and (args.bc_updates or args.dagger_rounds):
        p.error("cloning needs demonstrations: give --expert-demos > 0 (or --bc-updates 0 --dagger-rounds 0)")
    if args.rl_bc_weight < 0 or args.rl_encoder_lr_scale < 0:
        p.error("--rl-bc-weight and --rl-encoder-lr-scale must be >= 0")
    if args.batch_size < 1 or args.threads < 1:
        p.error("--batch-size and --threads must be >= 1")
    if args.augment_pad < 0:
        p.error("--augment-pad must be >= 0")
    if not 0.0 <= args.colour_jitter < 1.0:
        p.error(f"--colour-jitter must be in [0, 1), got {args.colour_jitter}")
    try:
        resolve_device(args.device)
    except ValueError as err:
        p.error(f"--device: {err}")
    return args


class Pretrainer:
    def __init__(self, args: argparse.Namespace, task=None):
        """`task`: an already built PandaTask to train in (its config must match the flags); default: build one."""
        from hilserl.metrics import MetricsLogger
        from hilserl.sim.demo_buffer import DemoBuffer
        from hilserl.sim.expert import ScriptedExpert
        from hilserl.sim.task import PandaTask, variant_config

        self.args = args
        self.run_dir = Path(args.run_dir or f"runs/pretrain-{time.strftime('%Y%m%d-%H%M%S')}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress_path = self.run_dir / "progress.json"
        self.progress = {"stages_done": [], "updates": 0, "env_steps": 0, "episodes": 0, "best": None,
                         "wall_time_s": 0.0}
        if args.resume:
            if not self.progress_path.is_file():
                raise SystemExit(f"pretrain: --resume needs {self.progress_path}; start without --resume")
            self.progress = json.loads(self.progress_path.read_text())
        start_from = args.init or args.continue_from
        if start_from:
            from hilserl.tools.infer_sim import trained_task
            from hilserl.weights.checkpoint import read_config_file

            self.config, self.init_doc = read_config_file(start_from)
            args.task = args.task or trained_task(self.init_doc)
            # what the checkpoint is, not the options' defaults, goes into the run's record
            args.image_size, args.num_cameras = self.config.image_size, self.config.num_cameras
            args.action_space, args.ee_axes = self.config.action_space, self.config.ee_axes
            args.gripper, args.grasp_penalty = self.config.gripper, self.config.grasp_penalty
            args.grasp_epsilon = self.config.grasp_epsilon
        else:
            args.task = args.task or TASK
            self.config = PolicyConfig(policy="drqv2", state_dim=0 if args.no_state else 8,
                                       hidden_dim=args.hidden_dim, feature_dim=args.feature_dim,
                                       frame_stack=args.frame_stack, image_size=args.image_size,
                                       num_cameras=args.num_cameras, stddev_schedule=args.stddev_schedule,
                                       action_space=args.action_space, ee_axes=args.ee_axes,
                                       action_dim=action_dim_for(args.action_space, args.ee_axes, 8),
                                       gripper=args.gripper,
                                       **({"grasp_penalty": args.grasp_penalty, "grasp_epsilon": args.grasp_epsilon}
                                          if args.gripper == "discrete" else {}))
        self.task_config = variant_config(args.variant, task=args.task, image_size=args.image_size,
                                          num_cameras=args.num_cameras, episode_steps=args.episode_steps,
                                          camera_pos_jitter=args.camera_jitter)
        torch.manual_seed(args.seed)
        self.rng = np.random.default_rng(args.seed)
        self.agent = build_agent(self.config, device=resolve_device(args.device))
        if start_from:
            from hilserl.weights.checkpoint import load_agent_weights

            load_agent_weights(self.agent, start_from)
            if args.continue_from and not args.resume:  # the weights' update count goes on from the checkpoint's
                self.progress["updates"] = int(self.init_doc.get("step", 0))
        self.bc_opt = torch.optim.Adam(self.agent.inference.parameters(), lr=args.lr)
        self.buffer = DemoBuffer((3 * args.num_cameras, args.image_size, args.image_size), self.config.state_dim,
                                 self.config.action_dim, self.config.frame_stack)
        if args.resume:
            self.restore()
        self.metrics = MetricsLogger(self.run_dir, "pretrain", tensorboard=not args.no_tensorboard)
        if task is None:
            print(f"pretrain: building the Genesis scene for task {args.task!r} ...", file=sys.stderr)
            task = PandaTask(self.task_config)
        elif (task.config.task, task.config.image_size, task.config.num_cameras, task.batched) != (
                args.task, args.image_size, args.num_cameras, False):
            raise ValueError(f"the given task ({task.config.task}, {task.config.image_size} px, "
                             f"{task.config.num_cameras} camera(s), n_envs {task.config.n_envs}) does not match "
                             f"--task {args.task} --image-size {args.image_size} --num-cameras {args.num_cameras} "
                             "(single env)")
        elif differing := [k for k in {k for v in VARIANTS.values() for k in v}
                           if getattr(task.config, k) != getattr(self.task_config, k)]:
            raise ValueError(f"the given task's cell is not --variant {args.variant}'s: {sorted(differing)} differ")
        self.task = task
        self.expert = ScriptedExpert(self.task, space=self.config.ee_action_space()
                                     if self.config.action_space == "ee_delta" else None,
                                     discrete_gripper=self.config.discrete_gripper)
        self.started = time.monotonic() - self.progress["wall_time_s"]

    # -- stages ------------------------------------------------------------------------------------
    def stages(self) -> list[str]:
        a = self.args
        names = []
        if a.expert_demos:
            names += ["demos"]
        if a.bc_updates:
            names += ["bc"]
        names += [f"dagger{r + 1}" for r in range(a.dagger_rounds)]
        if a.critic_updates:
            names += ["critic"]
        if a.rl_steps:
            names += ["rl"]
        return names

    def run(self) -> Path:
        for stage in self.stages():
            if stage in self.progress["stages_done"]:
                continue
            if stage == "demos":
                self.collect_demos()
            elif stage == "bc":
                self.clone(self.args.bc_updates, stage)
                self.evaluate(stage)
            elif stage.startswith("dagger"):
                rnd = int(stage[len("dagger"):])
                self.collect_dagger(rnd)
                self.clone(self.args.dagger_updates, stage)
                self.evaluate(stage)
            elif stage == "critic":
                self.collect_rollouts()
                self.train_critic()
                if not self.args.init:
                    self.evaluate(stage)
            elif stage == "rl":
                self.fine_tune()
                self.evaluate(stage)
            self.finish_stage(stage)
        if self.args.init:
            return self.write_output()
        if self.progress["best"] is None:  # nothing was evaluated (e.g. demos only): evaluate what there is
            self.evaluate("final")
            self.finish_stage("final")
        return self.write_output()

    def training_seed(self) -> int:
        seed = TRAIN_SEED_BASE * (self.args.seed + 1) + self.progress["episodes"]
        self.progress["episodes"] += 1
        return seed

    def record_episode(self, episode, kind: str) -> None:
        self.progress["env_steps"] += episode.length
        self.metrics.log(self.progress["episodes"], {"episode/return": episode.episode_return,
                                                     "episode/success": float(episode.success),
                                                     f"{kind}/episode_length": episode.length})

    def collect_demos(self) -> None:
        noise = self.args.demo_noise

        def noisy_expert(obs, pixels, t):
            return self.perturbed(self.expert.act(obs), noise, self.config.grasp_epsilon)

        successes = self.collect(self.args.expert_demos, "expert demos", "demos", lambda: noisy_expert)
        self.set_state_norm()
        print(f"pretrain: {len(successes)} expert episodes (noise {noise}), success {np.mean(successes):.2f}, "
              f"{len(self.buffer)} transitions", file=sys.stderr)

    def perturbed(self, action: np.ndarray, std: float, grasp_epsilon: float) -> np.ndarray:
        """`action` with Gaussian noise of `std` on the values the actor head outputs; a discrete gripper's
        command is instead replaced, with probability `grasp_epsilon`, by a uniformly random one (as the actor
        explores), so the fingers only ever move as a grasp critic can make them."""
        arm = self.config.arm_action_dim
        noisy = np.array(action, dtype=np.float64)
        noisy[:arm] += self.rng.normal(0.0, std, arm)
        if self.config.discrete_gripper and self.rng.random() < grasp_epsilon:
            noisy[-1] = self.rng.choice(GRIPPER_COMMANDS)
        return noisy

    def collect(self, episodes: int, desc: str, kind: str, controller) -> list[bool]:
        """`episodes` episodes driven by `controller()` (a new one per episode), labelled by the expert, into the
        buffer; their success flags."""
        from hilserl.sim.rollout import run_episode
        from tqdm import tqdm

        successes = []
        for _ in tqdm(range(episodes), desc=desc, unit="ep", file=sys.stderr):
            episode = run_episode(self.task, self.config, self.training_seed(), controller(), labeler=self.expert.act)
            self.buffer.add(episode)
            self.record_episode(episode, kind)
            successes.append(episode.success)
        return successes

    def set_state_norm(self) -> None:
        """Normalise joint positions with the demo statistics; fixed from here on (it is inference state)."""
        if self.config.state_dim == 0 or self.args.init or self.args.continue_from:  # a given checkpoint keeps its own
            return
        mean, std = self.buffer.state_statistics(STATE_STD_FLOOR)
        self.progress["state_norm"] = {"frames": self.buffer.n_frames, "mean": mean.tolist(), "std": std.tolist()}
        norm = self.agent.inference.state_norm
        norm.mean.copy_(torch.from_numpy(mean))
        norm.std.copy_(torch.from_numpy(std))

    def collect_dagger(self, rnd: int) -> None:
        from hilserl.sim.rollout import policy_controller

        beta = self.args.dagger_beta ** rnd
        policy = self.agent.inference.eval()

        def mixed_controller():
            learner = policy_controller(policy, deterministic=False, step=self.progress["updates"])

            def mixed(obs, pixels, t):
                return self.expert.act(obs) if self.rng.random() < beta else learner(obs, pixels, t)
            return mixed

        successes = self.collect(self.args.dagger_episodes, f"dagger {rnd} (beta {beta:.2f})", "dagger",
                                 mixed_controller)
        policy.train()
        print(f"pretrain: dagger round {rnd}: success while collecting {np.mean(successes):.2f}, "
              f"{len(self.buffer)} transitions", file=sys.stderr)

    def clone(self, updates: int, stage: str) -> None:
        """Behaviour cloning: MSE between the policy's deterministic action and the expert's label (a discrete
        gripper: on the arm's values, plus the grasp critic's cross-entropy on the label's gripper command)."""
        from tqdm import tqdm

        policy = self.agent.inference.train()
        # Emulated bfloat16 (a CPU without AVX512-BF16/AMX) is slower than float32: only where it is native.
        bf16 = not self.args.no_bf16 and supports_bf16(self.agent.device)
        bar = tqdm(range(updates), desc=f"{stage}: cloning", unit="upd", file=sys.stderr)
        for i in bar:
            pixels, state, labels = (None if t is None else t.to(self.agent.device)
                                     for t in self.buffer.bc_batch(self.args.batch_size, self.rng))
            loss = clone_update(policy, self.bc_opt, pixels, state, labels, self.args.augment_pad,
                                self.args.colour_jitter,
                                torch.autocast(self.agent.device.type, dtype=torch.bfloat16, enabled=bf16))
            self.progress["updates"] += 1
            if i % 50 == 0 or i == updates - 1:
                bar.set_postfix(loss=f"{loss:.4f}")
                self.metrics.log(self.progress["updates"], {"train/bc_loss": loss})

    def fine_tune(self) -> None:
        """DrQ-v2 on the task reward as the learner fine-tunes a pretrained policy: its n-step buffers, with the
        expert's episodes as the demonstration buffer (half of each batch, their rows cloned with `--rl-bc-weight`),
        critic-only updates for the first `--rl-actor-delay`, the encoder at `--rl-encoder-lr-scale` of its rate;
        one update per environment step of the policy acting as the actor does."""
        from hilserl.replay.episode_buffer import MixedSampler, ReplayBuffer
        from hilserl.sim.demo_buffer import episode_transitions
        from hilserl.sim.rollout import policy_controller, run_episode
        from hilserl.training.loop import scale_learning_rate
        from tqdm import tqdm

        a, agent = self.args, self.agent
        capacity = len(self.buffer) + a.rl_steps + a.episode_steps + 1
        demos, online = ReplayBuffer(self.config, capacity, GAMMA), ReplayBuffer(self.config, capacity, GAMMA)
        for key, t in self.buffer.transitions():  # the expert's steps count as a demonstrator's: BC applies to them
            demos.add(dataclasses.replace(t, intervention=True), key)
        sampler = MixedSampler(online, demos, seed=a.seed)
        encoder_lrs = [g["lr"] for g in agent.encoder_opt.param_groups]
        scale_learning_rate(agent.encoder_opt, a.rl_encoder_lr_scale)
        bar = tqdm(total=a.rl_steps, desc="rl: DrQ-v2", unit="step", file=sys.stderr)
        rl_updates, done, key = 0, 0, self.buffer.episodes
        successes = []
        while done < a.rl_steps:
            controller = policy_controller(agent.inference, deterministic=False, step=self.progress["updates"])
            episode = run_episode(self.task, self.config, self.training_seed(), controller)
            for t in episode_transitions(episode, key):
                online.add(t, key)
            key += 1
            self.record_episode(episode, "rl")
            successes.append(episode.success)
            for _ in range(episode.length if online.has_window() else 0):
                info = agent.update(sampler.sample(a.batch_size), self.progress["updates"],
                                    update_actor=rl_updates >= a.rl_actor_delay, bc_weight=a.rl_bc_weight)
                rl_updates += 1
                self.progress["updates"] += 1
                if rl_updates % 50 == 0:
                    self.metrics.log(self.progress["updates"], {f"train/{k}": v for k, v in info.items()})
                    bar.set_postfix(critic=f"{info['critic_loss']:.3f}", q=f"{info['q']:.2f}",
                                    success=f"{np.mean(successes[-20:]):.2f}")
            done += episode.length
            bar.update(episode.length)
        bar.close()
        for group, lr in zip(agent.encoder_opt.param_groups, encoder_lrs):
            group["lr"] = lr
        print(f"pretrain: rl: {rl_updates} updates, the policy lifted {sum(successes)}/{len(successes)} while "
              f"collecting (last 20: {np.mean(successes[-20:]):.2f})", file=sys.stderr)

    def collect_rollouts(self) -> None:
        """The policy acting as the actor node does (sampled); every other episode with extra action noise."""
        from hilserl.sim.rollout import policy_controller, run_episode
        from tqdm import tqdm

        policy = self.agent.inference.eval()
        self.rollouts, successes = [], []
        for k in tqdm(range(self.args.critic_rollouts), desc="critic: rollouts", unit="ep", file=sys.stderr):
            act = policy_controller(policy, deterministic=False, step=self.progress["updates"])
            noise = self.args.critic_rollout_noise * (k % 2)
            epsilon = self.config.grasp_epsilon if noise else 0.0

            def controller(obs, pixels, t):
                return self.perturbed(act(obs, pixels, t), noise, epsilon)

            episode = run_episode(self.task, self.config, self.training_seed(), controller)
            self.rollouts.append(episode)
            self.record_episode(episode, "critic")
            successes.append(episode.success)
        policy.train()
        print(f"pretrain: {len(successes)} policy rollouts for the critic, success {np.mean(successes):.2f}",
              file=sys.stderr)

    def train_critic(self) -> None:
        """n-step TD for the twin critics with the learner's buffers and sampling; actor and encoder held."""
        from hilserl.replay.episode_buffer import MixedSampler, ReplayBuffer
        from hilserl.sim.demo_buffer import episode_transitions
        from tqdm import tqdm

        capacity = len(self.buffer) + sum(e.length for e in self.rollouts) + 1
        demos, online = ReplayBuffer(self.config, capacity), ReplayBuffer(self.config, capacity)
        for key, t in self.buffer.transitions():
            demos.add(t, key)
        for key, episode in enumerate(self.rollouts, start=self.buffer.episodes):
            for t in episode_transitions(episode, key):
                online.add(t, key)
        sampler = MixedSampler(online, demos, seed=self.args.seed)
        encoder = self.agent.inference.encoder
        held = [p.requires_grad for p in encoder.parameters()]
        encoder.requires_grad_(False)  # no gradient, so the encoder's optimiser leaves it exactly as it is
        # A discrete gripper's grasp critic picks the gripper's commands: it is the gripper's policy, held like the
        # actor head (the update trains no grasp critic without a target network; the learner trains it by TD).
        grasp_critic_target, self.agent.grasp_critic_target = self.agent.grasp_critic_target, None
        losses: list[float] = []
        bar = tqdm(range(self.args.critic_updates), desc="critic: TD", unit="upd", file=sys.stderr)
        for i in bar:
            info = self.agent.update(sampler.sample(self.args.batch_size), self.progress["updates"],
                                     update_actor=False)
            losses.append(info["critic_loss"])
            self.progress["updates"] += 1
            if i % 50 == 0:
                bar.set_postfix(critic=f"{info['critic_loss']:.4f}", q=f"{info['q']:.2f}")
                self.metrics.log(self.progress["updates"], {f"train/{k}": v for k, v in info.items()})
            if settled(losses):
                break
        bar.close()
        for p, flag in zip(encoder.parameters(), held):
            p.requires_grad_(flag)
        self.agent.grasp_critic_target = grasp_critic_target
        w = CRITIC_SETTLE_WINDOW
        self.progress["critic"] = {"updates": len(losses), "td_loss_first": float(np.mean(losses[:w])),
                                   "td_loss_last": float(np.mean(losses[-w:])), "demo_transitions": len(demos),
                                   "rollout_transitions": len(online)}
        print(f"pretrain: critic: {json.dumps(self.progress['critic'])}", file=sys.stderr)

    def evaluate(self, stage: str) -> dict:
        from hilserl.sim.rollout import policy_controller, run_episode

        policy = self.agent.inference.eval()
        # sampled: the same draws for every stage's evaluation, so the stages compare on equal terms
        controller = policy_controller(policy, deterministic=not self.args.eval_sampled, step=self.progress["updates"],
                                       generator=torch.Generator().manual_seed(EVAL_SEED_BASE))
        episodes = [run_episode(self.task, self.config, EVAL_SEED_BASE + k, controller)
                    for k in range(self.args.eval_episodes)]
        policy.train()
        result = {"stage": stage, "sampled": self.args.eval_sampled,
                  "success_rate": float(np.mean([e.success for e in episodes])) if episodes else 0.0,
                  "mean_return": float(np.mean([e.episode_return for e in episodes])) if episodes else 0.0,
                  "mean_length": float(np.mean([e.length for e in episodes])) if episodes else 0.0,
                  "updates": self.progress["updates"], "env_steps": self.progress["env_steps"],
                  "wall_time_s": round(time.monotonic() - self.started, 1)}
        self.metrics.log(self.progress["updates"], {"eval/success_rate": result["success_rate"],
                                                    "eval/mean_return": result["mean_return"]})
        print(f"pretrain: eval after {stage}: {json.dumps(result)}", file=sys.stderr)
        best = self.progress["best"]
        # Success rate alone, what a checkpoint is for; a tie goes to the later stage, trained on more
        # of the policy's own states.
        if best is None or result["success_rate"] >= best["success_rate"]:
            self.progress["best"] = result
            self.save(self.run_dir / "best")
        return result

    # -- checkpoints and resuming ---------------------------------------------------------------
    def save(self, path: Path, storage_dtype: torch.dtype | None = None, step: int | None = None) -> None:
        from hilserl.weights.checkpoint import save_checkpoint

        step = self.progress["updates"] if step is None else step
        extra = {"pretrain": self.summary()}
        if self.args.continue_from:  # the record of how the starting weights were made stays with them
            extra["continued_from"] = {"checkpoint": str(self.args.continue_from), "step": self.init_doc.get("step", 0),
                                       **{k: self.init_doc[k] for k in ("pretrain", "continued_from", "critic_pretrain")
                                          if k in self.init_doc}}
        save_checkpoint(self.agent, self.config, path, step=step, storage_dtype=storage_dtype, extra=extra)

    def summary(self) -> dict:
        return {"task": dataclasses.asdict(self.task.config), "progress": self.progress,
                "args": {k: v for k, v in vars(self.args).items() if k not in ("out", "run_dir", "resume")},
                "transitions": len(self.buffer), "expert_episodes": self.args.expert_demos}

    def finish_stage(self, stage: str) -> None:
        self.progress["stages_done"].append(stage)
        self.progress["wall_time_s"] = round(time.monotonic() - self.started, 1)
        self.save(self.run_dir / "last")
        self.buffer.save(self.run_dir / "demos.npz")
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.progress, indent=2) + "\n")
        tmp.replace(self.progress_path)

    def restore(self) -> None:
        from hilserl.weights.checkpoint import load_agent_weights, read_config_file

        last = self.run_dir / "last"
        saved, _ = read_config_file(last)
        if saved.fingerprint() != self.config.fingerprint():
            raise SystemExit(f"pretrain: {last} was trained with another policy config; resume with the same flags")
        load_agent_weights(self.agent, last)
        if (self.run_dir / "demos.npz").is_file():
            self.buffer.load(self.run_dir / "demos.npz")
        print(f"pretrain: resumed {self.run_dir} after stages {self.progress['stages_done']}", file=sys.stderr)

    def write_output(self) -> Path:
        """The best evaluated policy (or, with --init, the given one and its new critic) goes to --out, in the
        requested storage precision, with the first --ship-demos expert episodes beside it."""
        from hilserl.replay.demos import DEMOS_FILE, write_demos
        from hilserl.weights.checkpoint import load_agent_weights, save_checkpoint

        if not self.args.init:
            load_agent_weights(self.agent, self.run_dir / "best")
        out = Path(self.args.out)
        if out.exists() and not (out / "config.json").is_file():
            raise SystemExit(f"pretrain: {out} exists and is not a checkpoint directory; pick another --out")
        self.progress["wall_time_s"] = round(time.monotonic() - self.started, 1)
        storage = torch.float16 if self.args.fp16 else None
        if self.args.init:  # the given checkpoint's record stays; this run is added to it
            doc = {k: v for k, v in self.init_doc.items() if k not in ("format", "policy", "config_fingerprint",
                                                                        "step", "storage_dtype")}
            save_checkpoint(self.agent, self.config, out, step=self.init_doc.get("step", 0), storage_dtype=storage,
                            extra=doc | {"critic_pretrain": self.summary()})
        else:
            # `step` is the update count of the weights written, not of the whole run.
            self.save(out, storage, step=self.progress["best"]["updates"])
        shipped = [t for _, t in self.buffer.transitions(episodes=self.args.ship_demos)]
        if shipped:
            write_demos(out / DEMOS_FILE, shipped, self.config)
        return out


def settled(losses: list[float]) -> bool:
    """The TD loss has stopped falling: past the minimum, at a window's end, the window's mean is no longer
    3% below the previous window's."""
    w = CRITIC_SETTLE_WINDOW
    if len(losses) < max(CRITIC_MIN_UPDATES, 2 * w) or len(losses) % w:
        return False
    return float(np.mean(losses[-w:])) > 0.97 * float(np.mean(losses[-2 * w:-w]))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer = Pretrainer(args)
    out = trainer.run()
    best = trainer.progress["best"]
    trainer.metrics.close()
    print(json.dumps({"checkpoint": str(out), "run_dir": str(trainer.run_dir), "config_fingerprint":
                      trainer.config.fingerprint(), "best_eval": best, "updates": trainer.progress["updates"],
                      "env_steps": trainer.progress["env_steps"], "wall_time_s": trainer.progress["wall_time_s"]}))
    return 0
