"""HIL-SERL on a cell unlike the training sim: the shipped checkpoint fine-tuned through the whole ROS loop
(sim `variant` paced lock-step + learner with config/learner.yaml's protections and finetune_run.py's
SHIFTED_LEARNER + actor + the simulated operator with SHIFTED_OPERATOR; each with the task's own settings
over those, TASK_LEARNER, TASK_ACTOR and TASK_OPERATOR below), against three other arms under the same budget
and on the same sim seeds:

  main         the shipped checkpoint, learning, with the operator
  pretrained   (a) the shipped checkpoint without learning (learner `training: false`), no operator
  no-operator  (b) the shipped checkpoint, learning, no operator
  fresh        (c) a freshly initialised ee_delta policy (init-checkpoint), learning, with the operator

Each arm runs until its last 20 episodes reach >= 90% success, or the budget (--budget-episodes,
--budget-minutes from the arm's start, Genesis' scene build included) ends. Success and episode counts come
from the sim's own episode record; the operator's share of the steps from the actor's episode summaries.
"Success" in the last line and the stopping rule is the policy's own: an episode counts only if it succeeded
with nobody taking over (the table also gives success with the operator's help). Prints a per-arm table,
writes a PNG (success, rolling 10, and intervention rate over episodes, all arms) and ends with

    finetune reach/shifted: pretrained 0.30 -> 0.95 in 37 episodes, 22.5 min, interventions 12%

pretrained: arm (a)'s success rate; -> the main arm's success over its last 20 episodes; episodes and minutes
until the main arm's 20-episode >= 90% window was reached (or the budget); interventions: the share of the
main arm's steps the operator drove.

    .venv/bin/python bench/finetune.py [--task reach] [--variant shifted] [--budget-episodes 40]
        [--budget-minutes 10] [--arms pretrained,main,no-operator,fresh] [--operator stall_steps=10]
        [--learner encoder_lr_scale=0.1] [--actor teleop_dead_band=0.05] [--sim-hz 6] [--out finetune.png]

--sim-hz: the control rate every arm runs at (the sim's lock-step cap; 6 by default, as the README's figures
were measured; a real arm under HIL-SERL runs at about 10). A faster rate gives more episodes a minute and the
learner fewer updates per step.

--reward-classifier DIR: the actor's `reward_classifier`: its confirmed success ends an episode (the sim's own
success still scores the arms). Default: the task's shipped classifier (lift: checkpoints/lift_reward), as
bringup uses it; `none` for the sim's own reward.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "test")]

from finetune_run import SHIFTED_LEARNER, SHIFTED_OPERATOR, SIM_HZ, FinetuneRun, run_finetune  # noqa: E402
from finetune_stability import rolling  # noqa: E402
from test_finetune import LEARNER, PROTECTED  # noqa: E402

CHECKPOINTS = {"reach": REPO / "checkpoints" / "reach", "lift": REPO / "checkpoints" / "lift"}
# A task's shipped reward classifier, which the actor uses by default (as bringup does): on a real cell there
# is no sim to say when an episode succeeded.
REWARD_CLASSIFIERS = {"lift": REPO / "checkpoints" / "lift_reward"}
# Episode length in control steps: reach's figures in the README were measured with 40; other tasks keep their
# own limit (lift's 50: its scripted expert alone needs about 36).
EPISODE_STEPS = {"reach": 40}
# The operator's settings per task, over SHIFTED_OPERATOR. On lift a hand-back while the cube is in the fingers
# drops it (a policy that has not learnt the cell yet opens or pulls away): the person holds on until the
# episode ends. Measured: with 20-step takeovers the operator drove 6-80% of the steps in 32 episodes and not
# one was lifted, even with its help; driving to the end, 3 of 4.
# Its safe box's floor is lowered to 5 mm: a policy grasping the cube low (the gripper centre 1-2 cm above the
# table, which the workspace box allows down to 1 cm) is not in danger, and at the default 2 cm the operator took
# over in the middle of such grasps (measured: 40% of its takeovers on the shifted cell, at steps 25-30).
# It demonstrates the first 10 episodes whole (a person's demonstrations on a new cell, which the learner clones
# first: TASK_LEARNER), and gives a grasp 12 steps without progress (2 s) before it steps in, as a person
# watching a grasp would: at 5 it took over at the cube in nearly every episode (README, lift on the shifted cell).
TASK_OPERATOR = {"lift": {"takeover_steps": 50, "safe_lower": [0.30, -0.30, 0.005], "demo_episodes": 10,
                          "stall_steps": 12}}
# The learner's settings per task, over SHIFTED_LEARNER. Lift's shifted cell changes what the cameras see, which
# the TD loss teaches the encoder slowly: the learner clones the ten demonstrations into every module first
# (600 updates once 350 demonstrated transitions are in), then clones again every 150 transitions of the
# operator's corrections (human-gated DAgger), with RL in between on the cloned encoder (a hundredth of the
# rate) and behaviour cloning weighted 20 in the actor's loss. Only this cell's transitions are imitated
# (load_demos false: the standard cell's demonstrations look different).
TASK_LEARNER = {"lift": {"clone_updates": 600, "clone_after": 350, "clone_every": 150, "load_demos": False,
                         "encoder_lr_scale": 0.01, "bc_weight": 20.0}}
# The actor's settings per task. The simulated operator's hand does not drift, so the SpaceMouse dead band (0.1,
# 2 mm a step, for a resting hand) is off on lift: it cut the expert's fine corrections over the cube to "stay"
# (measured: cloning its demonstrations lifted 32 of 81 episodes with the dead band off, 21 of 79 with it).
TASK_ACTOR = {"lift": {"teleop_dead_band": 0.0}}
SEED = 9_000_000  # the seeds README's shifted-cell table evaluates on
WINDOW = 20  # consecutive episodes that must reach TARGET
TARGET = 0.9
PLOT_WINDOW = 10
STARTUP = 300.0  # seconds allowed beyond the budget for a machine's first Genesis scene build


def arms(checkpoint: Path, fresh: Path, learner: dict, operator: dict) -> dict[str, dict]:
    """Each arm's checkpoint, learner parameters and operator parameters (None: no operator)."""
    learning = LEARNER | PROTECTED | SHIFTED_LEARNER | learner
    return {
        "main": {"checkpoint": checkpoint, "learner": learning, "operator": SHIFTED_OPERATOR | operator},
        "pretrained": {"checkpoint": checkpoint, "learner": {"training": False}, "operator": None},
        # nobody demonstrates: no cloning phase to wait for
        "no-operator": {"checkpoint": checkpoint, "operator": None,
                        "learner": {k: v for k, v in learning.items() if not k.startswith("clone_")}},
        "fresh": {"checkpoint": fresh, "learner": learning, "operator": SHIFTED_OPERATOR | operator},
    }


def overrides(text: str) -> dict:
    """`key=value,key=value` (values as YAML: 5, 1.0, true) to node parameters."""
    import yaml

    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if bad := [item for item in pairs if len(item) != 2 or not item[0]]:
        raise argparse.ArgumentTypeError(f"expected key=value pairs, got {['='.join(b) for b in bad]}")
    return {key: yaml.safe_load(value) for key, value in pairs}


def own_successes(run: FinetuneRun) -> list[bool]:
    return [e.unassisted_success for e in run.episodes]


def window_reached(run: FinetuneRun) -> int | None:
    """Episodes until the first WINDOW consecutive ones of the policy's own reach TARGET, or None."""
    s = own_successes(run)
    for end in range(WINDOW, len(s) + 1):
        if sum(s[end - WINDOW:end]) >= TARGET * WINDOW:
            return end
    return None


def init_fresh(out: Path, seed: int, like: Path) -> Path:
    """A freshly initialised DrQ-v2 with the actions of checkpoint `like` (its action space, axes, gripper)."""
    from hilserl.weights.checkpoint import read_config_file

    config, _ = read_config_file(like)
    subprocess.run([sys.executable, "-m", "hilserl", "init-checkpoint", "--policy", "drqv2", "--action-space",
                    config.action_space, "--ee-axes", config.ee_axes, "--gripper", config.gripper,
                    "--seed", str(seed), "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    return out


def reward_classifier_params(directory: str | None, task: str) -> dict:
    """The actor's `reward_classifier`: `directory`, else the task's shipped one; 'none' for the sim's reward."""
    if directory is None:
        directory = str(REWARD_CLASSIFIERS[task]) if task in REWARD_CLASSIFIERS else "none"
    if directory == "none":
        return {}
    if not Path(directory).is_dir():
        raise SystemExit(f"--reward-classifier: {directory} is not a directory")
    return {"reward_classifier": str(Path(directory).resolve())}


def summary_row(name: str, run: FinetuneRun, minutes: float) -> dict:
    s, own = run.successes(), own_successes(run)
    reached = window_reached(run)
    return {"arm": name, "episodes": len(s), "minutes": minutes, "updates": run.learner_step,
            "success": sum(s) / max(len(s), 1), "own": sum(own) / max(len(own), 1),
            "last": sum(own[-WINDOW:]) / max(len(own[-WINDOW:]), 1), "interventions": run.intervention_rate(),
            "reached": reached}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'arm':<12} {'episodes':>8} {'minutes':>7} {'updates':>7} {'success':>7} {'own':>5} "
          f"{'last ' + str(WINDOW):>7} {'interv.':>7}  window >= {TARGET:.0%}")
    for r in rows:
        reached = f"after {r['reached']} episodes" if r["reached"] else "not reached"
        print(f"{r['arm']:<12} {r['episodes']:>8} {r['minutes']:>7.1f} {r['updates']:>7} {r['success']:>7.2f} "
              f"{r['own']:>5.2f} {r['last']:>7.2f} {r['interventions']:>7.0%}  {reached}")
    print("success: the sim's, operator's help included; own: succeeded with nobody taking over; last "
          f"{WINDOW}: own success over the arm's last {WINDOW} episodes; interv.: share of steps the operator drove")


def plot(runs: dict[str, FinetuneRun], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, run in runs.items():
        x = range(1, len(run.episodes) + 1)
        top.plot(x, rolling(own_successes(run), PLOT_WINDOW), label=name, marker=".")
        bottom.plot(x, rolling([e.intervention_rate for e in run.episodes], PLOT_WINDOW), label=name, marker=".")
    top.set_ylabel(f"own success (rolling {PLOT_WINDOW})")
    bottom.set_ylabel(f"intervention rate (rolling {PLOT_WINDOW})")
    bottom.set_xlabel("sim episode")
    for ax in (top, bottom):
        ax.set_ylim(-0.05, 1.05)
    top.set_title(title)
    top.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach", choices=sorted(CHECKPOINTS))
    p.add_argument("--variant", default="shifted")
    p.add_argument("--budget-episodes", type=int, default=40, help="sim episodes at most, per arm")
    p.add_argument("--budget-minutes", type=float, default=10.0, help="minutes at most, per arm")
    p.add_argument("--arms", default="pretrained,main,no-operator,fresh")
    p.add_argument("--seed", type=int, default=SEED, help="the sim's first episode seed (the same for every arm)")
    p.add_argument("--sim-hz", type=float, default=SIM_HZ, help="control steps per second at most (the sim's "
                   f"lockstep_max_hz, every arm; default {SIM_HZ:g})")
    p.add_argument("--reward-classifier", metavar="DIR", help="the actor's reward classifier: its confirmed "
                   "success ends an episode (default: the task's shipped one, lift's checkpoints/lift_reward; "
                   "'none': the sim's own reward)")
    p.add_argument("--operator", type=overrides, default={}, metavar="K=V,..",
                   help="operator parameters for the arms with the operator (over SHIFTED_OPERATOR and the "
                   "task's TASK_OPERATOR), e.g. stall_steps=10")
    p.add_argument("--learner", type=overrides, default={}, metavar="K=V,..",
                   help="learner parameters for the learning arms (over SHIFTED_LEARNER), e.g. "
                   "encoder_lr_scale=0.1")
    p.add_argument("--actor", type=overrides, default={}, metavar="K=V,..",
                   help="actor parameters over the bench's own, every arm (e.g. teleop_dead_band=0.05)")
    p.add_argument("--checkpoint", type=Path, metavar="DIR", help="the pretrained checkpoint the arms start from "
                   "(default: the task's shipped one, checkpoints/TASK)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep each arm's logs and learner state (its latest "
                   "checkpoint included) under DIR/ARM (default: a temporary directory, removed at the end)")
    p.add_argument("--out", default="finetune.png")
    args = p.parse_args(argv)
    from hilserl.sim.task import VARIANTS, TaskConfig

    names = args.arms.split(",")
    if unknown := [a for a in names if a not in ("main", "pretrained", "no-operator", "fresh")]:
        p.error(f"unknown arms {unknown}; choose from main, pretrained, no-operator, fresh")
    if args.variant not in VARIANTS:
        p.error(f"unknown variant {args.variant!r}; choose from {sorted(VARIANTS)}")
    if args.checkpoint and not (args.checkpoint / "config.json").is_file():
        p.error(f"--checkpoint {args.checkpoint}: no config.json there; give a checkpoint directory")
    if args.keep and (taken := [a for a in names if (args.keep / a).exists()]):
        p.error(f"--keep {args.keep}: {taken} there already (a learner would resume that run); give a new directory")
    if args.sim_hz <= 0:
        p.error(f"--sim-hz {args.sim_hz:g}: must be above 0")
    if args.budget_episodes < 1 or args.budget_minutes <= 0:
        p.error("the budget needs at least 1 episode and more than 0 minutes")
    actor = TASK_ACTOR.get(args.task, {}) | reward_classifier_params(args.reward_classifier, args.task) | args.actor
    runs, rows = {}, []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(str(args.keep)) if args.keep else tempfile.TemporaryDirectory(prefix="finetune-") \
            as tmp:
        checkpoint = args.checkpoint or CHECKPOINTS[args.task]
        fresh = init_fresh(Path(tmp) / "fresh-ckpt", args.seed, checkpoint) if "fresh" in names else Path(tmp)
        settings = arms(checkpoint, fresh, TASK_LEARNER.get(args.task, {}) | args.learner,
                        TASK_OPERATOR.get(args.task, {}) | args.operator)
        for name in names:
            arm, started = settings[name], time.monotonic()

            def stop(run: FinetuneRun) -> bool:
                return (window_reached(run) is not None or len(run.episodes) >= args.budget_episodes
                        or time.monotonic() - started >= 60 * args.budget_minutes)
            run = run_finetune(Path(tmp) / name, str(arm["checkpoint"]), arm["learner"], updates=0,
                               min_episodes=args.budget_episodes, timeout=60 * args.budget_minutes + STARTUP,
                               seed=args.seed, sim_hz=args.sim_hz, stop_early=stop, task=args.task,
                               variant=args.variant,
                               episode_steps=EPISODE_STEPS.get(args.task, TaskConfig(task=args.task).episode_steps),
                               operator=arm["operator"], actor=actor)
            runs[name] = run
            rows.append(summary_row(name, run, run.wall_s / 60))
            print(f"{name}: {len(run.episodes)} episodes, {run.learner_step} updates, {run.wall_s:.0f} s, own "
                  f"successes {''.join('1' if s else '0' for s in own_successes(run))}", flush=True)
    print_table(rows)
    title = f"checkpoints/{args.task} on the {args.variant} cell (seeds {args.seed}+)"
    plot(runs, title, Path(args.out))
    print(f"plot: {args.out}")
    by_arm = {r["arm"]: r for r in rows}
    if "main" in by_arm:
        main_row, base = by_arm["main"], by_arm.get("pretrained")
        episodes = main_row["reached"] or main_row["episodes"]  # the arm stops once the window is reached
        minutes = main_row["minutes"]
        pretrained = f"{base['own']:.2f}" if base else "n/a"
        print(f"finetune {args.task}/{args.variant}: pretrained {pretrained} -> {main_row['last']:.2f} in "
              f"{episodes} episodes, {minutes:.1f} min, interventions {main_row['interventions']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
