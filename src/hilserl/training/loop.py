"""The learner's schedule, in plain torch: when to update, when to publish, when to save.

It owns no thread and no topic. The learner node feeds it transitions and calls `train_some()` from its
training thread; `publish` and `save` are the node's callbacks, so the same schedule runs in tests and
tools without ROS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Defaults a learner on one CPU can keep up with; all are learner parameters.
BATCH_SIZE = 256
UTD_RATIO = 1.0  # gradient updates per received transition
WARMUP_TRANSITIONS = 500  # no learning before this many transitions are stored
DEMO_RATIO = 0.5  # share of each batch drawn from interventions/demonstrations (RLPD: 0.5)
PUBLISH_EVERY_UPDATES = 100
PUBLISH_EVERY_SECONDS = 0.0  # 0 = off; else also publish when this long has passed since the last one
CHECKPOINT_EVERY_UPDATES = 1000
ACTOR_WARMUP_UPDATES = 0  # critic-only updates after start-up (and after a rollback) before the actor learns
BC_WEIGHT = 0.0  # weight of the behaviour-cloning term on demonstration/intervention rows in the actor loss
ENCODER_LR_SCALE = 1.0  # the encoder's learning rate relative to the critic's (a pretrained encoder: lower)
ENCODER_BC_WEIGHT = 0.0  # weight of behaviour cloning through the encoder (plain DrQ-v2/SAC: the critic alone)


@dataclass(frozen=True)
class TrainSchedule:
    batch_size: int = BATCH_SIZE
    utd_ratio: float = UTD_RATIO
    warmup_transitions: int = WARMUP_TRANSITIONS
    publish_every_updates: int = PUBLISH_EVERY_UPDATES
    publish_every_seconds: float = PUBLISH_EVERY_SECONDS
    checkpoint_every_updates: int = CHECKPOINT_EVERY_UPDATES
    actor_warmup_updates: int = ACTOR_WARMUP_UPDATES
    bc_weight: float = BC_WEIGHT
    encoder_bc_weight: float = ENCODER_BC_WEIGHT

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.utd_ratio <= 0 or self.warmup_transitions < 0 \
                or self.actor_warmup_updates < 0 or self.bc_weight < 0 or self.encoder_bc_weight < 0:
            raise ValueError(f"invalid training schedule {self}")


@dataclass
class TrainCounters:
    learner_step: int = 0  # gradient updates done, over the whole run (resumes continue it)
    transitions_seen: int = 0
    updates_since_publish: int = 0
    updates_since_save: int = 0
    last_publish: float = field(default_factory=time.monotonic)
    last_metrics: dict[str, float] = field(default_factory=dict)
    update_times: list[float] = field(default_factory=list)

    def updates_per_second(self) -> float:
        recent = self.update_times[-50:]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


class TrainingLoop:
    def __init__(self, agent, sample: Callable[[int], object], schedule: TrainSchedule,
                 publish: Callable[[str], None], save: Callable[[], None], counters: TrainCounters | None = None):
        self.agent, self.sample, self.schedule = agent, sample, schedule
        self.publish, self.save = publish, save
        self.counters = counters or TrainCounters()
        self.actor_starts_at: int | None = None  # learner step from which the actor learns; set on first update

    def hold_actor(self) -> None:
        """Critic-only updates for the next `actor_warmup_updates` (start-up, or after a rollback)."""
        self.actor_starts_at = self.counters.learner_step + self.schedule.actor_warmup_updates

    def transitions_added(self, count: int) -> None:
        self.counters.transitions_seen += count

    def updates_owed(self, stored: int) -> int:
        """Updates the update-to-data ratio asks for now, given how many transitions are stored."""
        c, s = self.counters, self.schedule
        if stored < max(s.warmup_transitions, 1):
            return 0
        return max(0, int(c.transitions_seen * s.utd_ratio) - c.learner_step)

    def train_some(self, stored: int, max_updates: int = 1) -> int:
        """Run up to `max_updates` owed updates; publishes and saves on schedule. Returns updates done."""
        done = 0
        while done < max_updates and self.updates_owed(stored) > 0:
            batch = self.sample(self.schedule.batch_size)
            if self.actor_starts_at is None:  # counted from the first update, so a resumed run waits too
                self.hold_actor()
            step = self.counters.learner_step
            metrics = self.agent.update(batch, step, update_actor=step >= self.actor_starts_at,
                                        bc_weight=self.schedule.bc_weight,
                                        encoder_bc_weight=self.schedule.encoder_bc_weight)
            c = self.counters
            c.learner_step += 1
            c.updates_since_publish += 1
            c.updates_since_save += 1
            c.last_metrics = metrics
            c.update_times = (c.update_times + [time.monotonic()])[-100:]
            done += 1
            if self.publish_due():
                self.publish("training")
                c.updates_since_publish, c.last_publish = 0, time.monotonic()
            if c.updates_since_save >= self.schedule.checkpoint_every_updates:
                self.save()
                c.updates_since_save = 0
        return done

    def publish_due(self) -> bool:
        c, s = self.counters, self.schedule
        if c.updates_since_publish == 0:
            return False
        if c.updates_since_publish >= s.publish_every_updates:
            return True
        return s.publish_every_seconds > 0 and time.monotonic() - c.last_publish >= s.publish_every_seconds


def scale_learning_rate(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """Multiply every parameter group's learning rate by `scale` (0 freezes what the optimiser trains)."""
    if scale < 0:
        raise ValueError(f"a learning-rate scale must be >= 0, got {scale}")
    for group in optimizer.param_groups:
        group["lr"] *= scale


def set_torch_threads(threads: int) -> None:
    """One place for the learner's thread count (0 = torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
