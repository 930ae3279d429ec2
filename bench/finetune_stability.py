"""Fine-tuning stability: the shipped checkpoint with training on, through the whole ROS loop (sim paced
lock-step + learner + actor), with each of the learner's protections and without them.

For every arm it prints, per weights version, the learner step it was published at and the success of the
episodes it produced, read from the sim's own episode record (not the actor's summaries), and one summary
line; then a PNG of success over episodes (rolling window of 10) for all arms.

Arms (`--arms`, comma-separated):
  protected      the learner's defaults plus the protections test_finetune.py uses
  unprotected    every protection off: fresh critic, no shipped demos, no critic-only warm-up, no BC, full
                 encoder LR, no guard (the learner and checkpoint as they were)
  no-critic, no-demos, no-warmup, no-bc, no-encoder-lr, no-guard   `protected` less one protection
  guard-only     `unprotected` with the guard on: what rollbacks alone recover

    .venv/bin/python bench/finetune_stability.py [--arms protected,unprotected] [--updates 300]
        [--episodes 20] [--out finetune_stability.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "test")]

from finetune_run import UNPROTECTED, format_table, run_finetune, without_critic  # noqa: E402
from test_finetune import LEARNER, PROTECTED, SHIPPED, UPDATES, WINDOW  # noqa: E402

ARMS = {
    "protected": PROTECTED,
    "unprotected": UNPROTECTED,
    "no-critic": PROTECTED,
    "no-demos": PROTECTED | {"load_demos": False},
    "no-warmup": PROTECTED | {"actor_warmup_updates": 0},
    "no-bc": PROTECTED | {"bc_weight": 0.0},
    "no-encoder-lr": PROTECTED | {"encoder_lr_scale": 1.0},
    "no-guard": PROTECTED | {"guard": False},
    "guard-only": UNPROTECTED | {"guard": True},
}


def rolling(successes: list[bool], size: int) -> list[float]:
    return [sum(successes[max(0, i + 1 - size):i + 1]) / len(successes[max(0, i + 1 - size):i + 1])
            for i in range(len(successes))]


def plot(runs: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, run in runs.items():
        ax.plot(range(1, len(run.episodes) + 1), rolling(run.successes(), WINDOW), label=name, marker=".")
    ax.set_xlabel("sim episode")
    ax.set_ylabel(f"success (rolling {WINDOW})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("checkpoints/reach fine-tuned in the paced lock-step loop")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="protected,unprotected")
    p.add_argument("--updates", type=int, default=UPDATES)
    p.add_argument("--episodes", type=int, default=2 * WINDOW, help="sim episodes at least, per arm")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per arm")
    p.add_argument("--out", default="finetune_stability.png")
    args = p.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; choose from {sorted(ARMS)}")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="finetune-stability-") as tmp:
        for name in args.arms.split(","):
            checkpoint = str(SHIPPED)
            if name in ("unprotected", "no-critic", "guard-only"):  # the checkpoint with a fresh critic
                checkpoint = without_critic(SHIPPED, Path(tmp) / f"{name}-ckpt", demos=name == "no-critic")
            run = run_finetune(Path(tmp) / name, checkpoint, LEARNER | ARMS[name], updates=args.updates,
                               min_episodes=args.episodes, timeout=args.timeout)
            runs[name] = run
            after = [e.success for e in run.episodes if e.version > 1]
            rates = run.window_rates(WINDOW) or [float("nan")]
            print(f"\n== {name}: {run.learner_step} updates, {len(run.episodes)} sim episodes, {run.wall_s:.0f} s")
            print(format_table(run))
            print(f"{name}: v1 {sum(e.success for e in run.episodes if e.version == 1)}/"
                  f"{sum(e.version == 1 for e in run.episodes)}, after v1 {sum(after)}/{len(after)}, "
                  f"worst window of {WINDOW} {min(rates):.2f}, last window {rates[-1]:.2f}", flush=True)
    plot(runs, Path(args.out))
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
