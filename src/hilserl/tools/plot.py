"""`python -m hilserl plot RUN_DIR`: PNGs of a run's return, success rate, intervention rate and losses.

Reads every RUN_DIR/**/metrics.csv (written by hilserl.metrics) and writes, by default into RUN_DIR/plots/:
  return.png             episode return per episode, one line per actor
  success_rate.png       success rate over the last `--window` episodes, per actor
  intervention_rate.png  share of each episode's steps a person controlled, per actor
  losses.png             every `train/*` value of the learner, one panel each
The x axis is minutes since the run's first metric, so actors and the learner line up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hilserl.metrics import read_metrics

WINDOW = 10  # episodes in the rolling success rate
DPI = 110

Series = list[tuple[float, int, float]]


def load_run(run_dir: Path) -> dict[str, dict[str, Series]]:
    """node stream ('learner', 'actor_0/actor') -> metric name -> rows."""
    files = sorted(run_dir.rglob("metrics.csv"))
    return {str(f.parent.relative_to(run_dir)): read_metrics(f) for f in files}


def rolling_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def per_node_figure(run: dict[str, dict[str, Series]], name: str, t0: float, title: str, ylabel: str,
                    out: Path, transform=None, ylim=None) -> bool:
    import matplotlib.pyplot as plt

    lines = {node: rows for node, metrics in run.items() if (rows := metrics.get(name))}
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
    for node, rows in sorted(lines.items()):
        minutes = [(t - t0) / 60 for t, _, _ in rows]
        values = [v for _, _, v in rows]
        values = transform(values) if transform else values
        ax.plot(minutes, values, marker="o" if len(rows) < 40 else None, markersize=3, label=node)
    ax.set(title=title, xlabel="minutes since start", ylabel=ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def losses_figure(run: dict[str, dict[str, Series]], t0: float, out: Path) -> bool:
    import matplotlib.pyplot as plt

    panels = sorted({(node, name) for node, metrics in run.items() for name in metrics if name.startswith("train/")},
                    key=lambda p: (p[1], p[0]))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), dpi=DPI, sharex=True, squeeze=False)
    for ax, (node, name) in zip(axes[:, 0], panels):
        rows = run[node][name]
        ax.plot([(t - t0) / 60 for t, _, _ in rows], [v for _, _, v in rows], linewidth=1)
        ax.set_title(f"{name} ({node})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("minutes since start")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def plot_run(run_dir: Path, out_dir: Path, window: int = WINDOW) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    run = load_run(run_dir)
    if not run:
        raise FileNotFoundError(f"no metrics.csv under {run_dir}: pass the run_dir the nodes wrote to "
                                "(python -m hilserl bringup prints it at start)")
    starts = [rows[0][0] for metrics in run.values() for rows in metrics.values() if rows]
    if not starts:
        raise ValueError(f"the metrics files under {run_dir} hold no rows yet")
    t0 = min(starts)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [
        ("return.png", lambda p: per_node_figure(run, "episode/return", t0, "Episode return", "return", p)),
        ("success_rate.png", lambda p: per_node_figure(
            run, "episode/success", t0, f"Success rate (last {window} episodes)", "success rate", p,
            transform=lambda v: rolling_mean(v, window), ylim=(-0.05, 1.05))),
        ("intervention_rate.png", lambda p: per_node_figure(
            run, "episode/intervention_rate", t0, "Intervention rate (share of steps a person controlled)",
            "intervention rate", p, ylim=(-0.05, 1.05))),
        ("losses.png", lambda p: losses_figure(run, t0, p)),
    ]
    for filename, job in jobs:
        path = out_dir / filename
        if job(path):
            written.append(path)
        else:
            print(f"{filename}: no data for it in {run_dir}, skipped", file=sys.stderr)
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hilserl plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default RUN_DIR/plots)")
    parser.add_argument("--window", type=int, default=WINDOW, help="episodes in the rolling success rate")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"plot: {args.run_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        written = plot_run(args.run_dir, args.out or args.run_dir / "plots", args.window)
    except (FileNotFoundError, ValueError) as err:
        print(f"plot: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
