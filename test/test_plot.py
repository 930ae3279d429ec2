"""Metrics logger -> run directory -> `python -m hilserl plot RUN_DIR` -> PNGs (and TensorBoard events)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hilserl.metrics import MetricsLogger, read_metrics
from hilserl.tools.plot import rolling_mean
from rosutil import REPO

START = 1_700_000_000.0


@pytest.fixture
def run_dir(tmp_path):
    """Two actors and a learner, as the nodes log them: episodes for actors, losses for the learner."""
    rng = np.random.default_rng(0)
    for index in range(2):
        log = MetricsLogger(tmp_path, f"/actor_{index}/actor")
        for episode in range(30):
            skill = episode / 30
            log.log(episode, {"episode/return": 10 * skill + rng.normal(), "episode/success": rng.random() < skill,
                              "episode/intervention_rate": max(0.0, 0.5 - skill)}, wall_time=START + 20 * episode)
        log.close()
    learner = MetricsLogger(tmp_path, "/learner")
    for step in range(0, 2000, 50):
        learner.log(step, {"train/critic_loss": 1 / (1 + step / 200), "train/actor_loss": -step / 1000},
                    wall_time=START + step * 0.3)
    learner.close()
    return tmp_path


def test_metrics_csv_round_trip_and_tensorboard_events(run_dir):
    series = read_metrics(run_dir / "actor_1" / "actor" / "metrics.csv")
    assert set(series) == {"episode/return", "episode/success", "episode/intervention_rate"}
    assert [step for _, step, _ in series["episode/success"]] == list(range(30))
    assert {v for _, _, v in series["episode/success"]} == {0.0, 1.0}
    assert series["episode/return"][0][0] == pytest.approx(START)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "learner"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/critic_loss", "train/actor_loss"}
    assert [e.step for e in events.Scalars("train/critic_loss")][:3] == [0, 50, 100]


def test_appending_keeps_one_header_and_a_cut_row_is_skipped(tmp_path):
    MetricsLogger(tmp_path, "learner", tensorboard=False).log(1, {"train/q": 1.5})
    again = MetricsLogger(tmp_path, "learner", tensorboard=False)  # a restarted node appends
    again.log(2, {"train/q": 2.5})
    again.close()
    path = tmp_path / "learner" / "metrics.csv"
    with open(path, "a") as f:
        f.write("1700000000.0,3,train/q")  # killed mid-row
    assert [v for _, _, v in read_metrics(path)["train/q"]] == [1.5, 2.5]
    assert path.read_text().count("wall_time") == 1
    with pytest.raises(ValueError, match="metric name"):
        MetricsLogger(tmp_path, "x", tensorboard=False).log(0, {"a,b": 1.0})


def test_plot_writes_readable_pngs(run_dir):
    result = subprocess.run([sys.executable, "-m", "hilserl", "plot", str(run_dir)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    written = {line.rsplit("/", 1)[-1] for line in result.stdout.split()}
    assert written == {"return.png", "success_rate.png", "intervention_rate.png", "losses.png"}
    for name in written:
        image = np.asarray(Image.open(run_dir / "plots" / name).convert("RGB"))
        assert image.shape[0] >= 400 and image.shape[1] >= 700, name
        # Drawn lines: plenty of pixels that are neither white background nor grey grid.
        coloured = (image.max(axis=2).astype(int) - image.min(axis=2)) > 80
        assert coloured.mean() > 0.002, f"{name} looks empty"


def test_plot_reports_what_is_missing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hilserl", "plot", str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 1 and "no metrics.csv under" in result.stderr
    log = MetricsLogger(tmp_path, "learner", tensorboard=False)  # a learner alone: losses only
    log.log(0, {"train/critic_loss": 1.0})
    log.close()
    result = subprocess.run([sys.executable, "-m", "hilserl", "plot", str(tmp_path), "--out", str(tmp_path / "p")],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and (tmp_path / "p" / "losses.png").is_file()
    assert "return.png: no data" in result.stderr and not (tmp_path / "p" / "return.png").exists()


def test_rolling_mean():
    assert rolling_mean([1, 0, 1, 1], 2) == [1.0, 0.5, 0.5, 1.0]
