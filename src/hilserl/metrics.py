"""Run metrics: one CSV per node, plus TensorBoard event files when tensorboard is installed.

    RUN_DIR/<node>/metrics.csv       wall_time,step,name,value   (one row per value, appended, flushed)
    RUN_DIR/<node>/events.out.tfevents.*                           (same scalars, for `tensorboard --logdir`)

<node> is the node's fully qualified name without the leading slash (`learner`, `actor_0/actor`). A long
table (one row per value) never needs its header rewritten when a new loss appears, and reads the same
from any node. Names are grouped by prefix: `episode/return`, `episode/success`,
`episode/intervention_rate` (actors, step = episode index) and `train/<loss>` (learner, step = update).
`python -m hilserl plot RUN_DIR` turns them into PNGs.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

FIELDS = ("wall_time", "step", "name", "value")


class MetricsLogger:
    def __init__(self, run_dir: str | Path, stream: str, tensorboard: bool = True):
        self.dir = Path(run_dir) / stream.strip("/")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.csv"
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(FIELDS)
            self.file.flush()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional; the CSV is the record
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(log_dir=str(self.dir), flush_secs=10)

    def log(self, step: int, values: dict[str, float | int | bool], wall_time: float | None = None) -> None:
        """One row per value; non-finite values are written as they are (nan), never dropped."""
        wall_time = time.time() if wall_time is None else wall_time
        for name, value in values.items():
            if not isinstance(name, str) or not name or "," in name:
                raise ValueError(f"metric name {name!r}: use a non-empty string without commas, "
                                 "e.g. 'train/critic_loss'")
            number = float(value)
            self.writer.writerow((f"{wall_time:.3f}", int(step), name, repr(number)))  # nan/inf stay visible
            if self.tb is not None:
                self.tb.add_scalar(name, number, global_step=int(step), walltime=wall_time)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def metrics_for_node(node) -> MetricsLogger | None:
    """The logger for a ROS node, from its `run_dir` parameter ('' = no metrics written)."""
    if not node.has_parameter("run_dir"):
        node.declare_parameter("run_dir", "")
    run_dir = node.get_parameter("run_dir").value
    if not run_dir:
        return None
    return MetricsLogger(run_dir, node.get_fully_qualified_name())


def read_metrics(path: str | Path) -> dict[str, list[tuple[float, int, float]]]:
    """A metrics.csv as name -> [(wall_time, step, value)] in file order."""
    series: dict[str, list[tuple[float, int, float]]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return series
        if tuple(header) != FIELDS:
            raise ValueError(f"{path}: header {header} is not {list(FIELDS)}; not a hilserl metrics file")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(FIELDS):  # a row cut short by a kill mid-write: skip it, keep the rest
                continue
            try:
                series.setdefault(row[2], []).append((float(row[0]), int(row[1]), float(row[3])))
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {row}: {err}") from err
    return series
