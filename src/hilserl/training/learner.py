"""The learner's logic in plain Python + torch: agent, buffers, schedule, episodes, resume, hot swap.

`LearnerCore` owns no thread, topic or parameter. The learner node (hilserl/nodes/learner.py) builds it
from its parameters, feeds it the batches its TransitionReceiver stores (`store_batch`), calls
`train_step()` from its training thread, and hands it a `publish(payload, meta, reason)` callback that
puts the encoded weights on `/policy_weights`. Tests drive the same object without ROS.

    settings           LearnerSettings: every training hyperparameter, read once from the parameters
    store_batch()      one stored batch of an actor's stream -> both replay buffers
    train_step()       one owed update (sample + agent.update), publishing and saving on schedule
    waiting_for()      why no update can run yet ('' = none), detected explicitly, not by catching errors
    publish_weights()  the one publish path: start-up, checkpoint swap and training
    swap_checkpoint()  load another checkpoint of the same config and publish it as the next version
    save_state()       networks, optimisers and counters to STATE_DIR/state, plus STATE_DIR/checkpoint/
    health()           the Report /diagnostics shows
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hilserl.durable import write_durably
from hilserl.health import ERROR, OK, REJECTION_WARN_S, WARN, Report
from hilserl.policies import build_agent
from hilserl.policies.device import resolve_device
from hilserl.replay.demos import DEMOS_FILE, read_demos
from hilserl.replay.episode_buffer import GAMMA, N_STEP, MixedSampler, ReplayBuffer
from hilserl.replay.intake import TransitionIntake
from hilserl.replay.interventions import InterventionBuffer
from hilserl.training import guard as guard_rule
from hilserl.training.cloning import (CLONE_AFTER, CLONE_AVERAGE, CLONE_BATCH_SIZE, CLONE_EVERY, CLONE_LR,
                                      CLONE_UPDATES, CloningPhase)
from hilserl.training.guard import EpisodeVersions, PublishGuard
from hilserl.training.loop import (DEMO_RATIO, ENCODER_LR_SCALE, TrainingLoop, TrainSchedule, scale_learning_rate,
                                   set_torch_threads)
from hilserl.training.state import (find_training_state, load_training_state, restore_agent, save_training_state,
                                    snapshot_agent)
from hilserl.weights.checkpoint import load_agent_weights, read_config_file, save_checkpoint
from hilserl.weights.codec import encode_weights

BUFFER_CAPACITY = 50_000
DEMO_EPISODE_KEYS = 1 << 40  # replay episode keys of the checkpoint's demonstrations start here


@dataclass(frozen=True)
class LearnerSettings(TrainSchedule):
    """The learner's training settings, one field per learner parameter of the same name (the schedule's
    fields, which TrainingLoop reads, and these)."""

    training: bool = True  # false: publish the checkpoint only (no buffers, no updates)
    demo_ratio: float = DEMO_RATIO
    buffer_capacity: int = BUFFER_CAPACITY
    gamma: float = GAMMA
    n_step: int = N_STEP
    torch_threads: int = 0  # 0 = torch's default
    # Protecting a pretrained policy (see README): demonstrations, encoder learning rate, guarded publishing.
    load_demos: bool = True  # CHECKPOINT/demos.safetensors fills the demonstration buffer at start
    encoder_lr_scale: float = ENCODER_LR_SCALE
    guard: bool = True
    guard_min_episodes: int = guard_rule.MIN_EPISODES
    guard_window: int = guard_rule.WINDOW
    guard_margin: float = guard_rule.MARGIN
    guard_alpha: float = guard_rule.ALPHA
    # A new cell: clone a person's first demonstrations (every inference module) before RL (training/cloning.py).
    clone_updates: int = CLONE_UPDATES
    clone_after: int = CLONE_AFTER
    clone_lr: float = CLONE_LR
    clone_batch_size: int = CLONE_BATCH_SIZE
    clone_every: int = CLONE_EVERY
    clone_average: float = CLONE_AVERAGE

    @classmethod
    def from_values(cls, values: dict) -> "LearnerSettings":
        """The settings among `values` (e.g. every parameter of the node); other keys are ignored."""
        return cls(**{k: values[k] for k in asdict(cls()) if k in values})


Publish = Callable[[bytes, object, str], None]  # (payload, WeightsMeta, reason)


def load_checkpoint_agent(checkpoint: str | Path, device: str = "cpu"):
    """(agent, notes): a checkpoint's config and weights as a training agent on `device`."""
    config, _ = read_config_file(checkpoint)
    agent = build_agent(config, device=resolve_device(device))
    notes = load_agent_weights(agent, checkpoint)
    return agent, notes


class LearnerCore:
    def __init__(self, checkpoint: str | Path, settings: LearnerSettings, publish: Publish,
                 state_dir: Path | None = None, run_id: str = "", device: str = "cpu", log=None, warn=None):
        """`state_dir` holds the journal, run.json and the training state (a restart on it resumes the run);
        it is needed when `settings.training`. `log(message)` receives what an operator should read, `warn(message)`
        what they should act on (a guard rollback); it defaults to `log`."""
        self.settings, self.publish, self.device = settings, publish, device
        self.log = log or (lambda message: None)
        self.warn = warn or self.log
        self.lock = threading.RLock()  # guards the agent between the training thread and publishing
        self.buffer_lock = threading.Lock()  # guards the buffers between the intake and sampling
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.weights_version = 0
        self.last_digest = ""
        self.last_publish_time = 0.0
        self.training_error = ""  # an exception from sampling or the update: training has stopped
        self.resumed = False
        self.checkpoint = Path(checkpoint)
        self.guard: PublishGuard | None = None  # guarded publishing, while training
        self.guard_warning = ""  # why the last rollback republished an older version ('' = none since)
        self.agent = self.load_checkpoint(checkpoint)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.loop: TrainingLoop | None = None
        self.cloning: CloningPhase | None = None
        self.interventions_stored = 0  # transitions a person drove, received from the actors (not the checkpoint's)
        self.intake: TransitionIntake | None = None
        if settings.training:
            if self.state_dir is None:
                raise ValueError("training needs a state_dir (journal, run.json and training state)")
            self.setup_training()

    # -- set-up and resume -----------------------------------------------------------------------
    def load_checkpoint(self, checkpoint: str | Path):
        agent, notes = load_checkpoint_agent(checkpoint, self.device)
        for note in notes:
            self.log(note)
        self.log(f"loaded {agent.config.policy} checkpoint {checkpoint} (config {agent.config.fingerprint()})")
        return agent

    def setup_training(self) -> None:
        s, config = self.settings, self.agent.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        set_torch_threads(s.torch_threads)
        self.online = ReplayBuffer(config, s.buffer_capacity, s.gamma, s.n_step)
        self.demos = InterventionBuffer(config, s.buffer_capacity, s.gamma, s.n_step)
        self.sampler = MixedSampler(self.online, self.demos, s.demo_ratio)
        self.episode_keys: dict[tuple[str, int], int] = {}  # (stream, actor's episode) -> buffer episode key
        if s.load_demos:
            self.load_demos(self.checkpoint / DEMOS_FILE)
        scale_learning_rate(self.agent.encoder_opt, s.encoder_lr_scale)
        if s.guard:
            self.guard = PublishGuard(min_episodes=s.guard_min_episodes, window=s.guard_window,
                                      margin=s.guard_margin, alpha=s.guard_alpha)
            self.episode_versions = EpisodeVersions(self.guard)
        self.loop = TrainingLoop(self.agent, self.sample, s, publish=self.publish_weights, save=self.save_state)
        if s.clone_updates:
            self.cloning = CloningPhase(self.agent, s.clone_updates, s.clone_after, s.clone_lr, s.clone_batch_size,
                                        s.clone_every, s.clone_average)
        self.resume()
        # Every batch is checked against the policy before it is journalled; the journal is replayed here.
        self.intake = TransitionIntake(self.journal_dir, self.store_batch, lambda: self.agent.config, log=self.log,
                                       joints=self.stored_joints)
        replayed = self.intake.replay()
        if replayed:
            self.log(f"journal replayed: {replayed} transitions from {self.intake.stored_through}")

    def resume(self) -> None:
        """A restart on the same state_dir: same run, versions continue upward from the last published."""
        run_file = self.state_dir / "run.json"
        self.resumed = run_file.is_file()
        if not self.resumed:
            return
        run = json.loads(run_file.read_text())
        self.run_id, self.weights_version = run["run_id"], run["weights_version"]
        source = "the checkpoint (no training state saved yet)"
        if find_training_state(self.state_dir / "state") is not None:
            counters = load_training_state(self.state_dir / "state", self.agent)
            self.loop.counters.learner_step = counters["learner_step"]
            if self.cloning is not None:
                self.cloning.done = counters.get("clone_updates_done", 0)
            source = counters["state_dir"]
        self.log(f"resumed run {self.run_id}: networks from {source}, learner step {self.learner_step}; "
                 f"the next weights are v{self.weights_version + 1}")

    @property
    def learner_step(self) -> int:
        return self.loop.counters.learner_step if self.loop is not None else 0

    @property
    def journal_dir(self) -> Path:
        return self.state_dir / "journal"

    # -- experience ------------------------------------------------------------------------------
    def load_demos(self, path: Path) -> None:
        """The checkpoint's demonstrations go to the demonstration buffer: RLPD mixes them in from the start."""
        if not path.is_file():
            self.log(f"no demonstrations at {path}: the demonstration buffer starts empty")
            return
        transitions = read_demos(path, self.agent.config)
        for t in transitions:
            self.demos.add(t, DEMO_EPISODE_KEYS + t.episode)  # never an actor's episode key
        self.log(f"loaded {len(transitions)} demonstration transitions "
                 f"({len({t.episode for t in transitions})} episodes) from {path}")

    def stored_joints(self) -> int | None:
        """The joint count the buffers hold once they hold anything (a pixels-only policy takes it from the first
        transitions stored), so a batch from an arm with another count is refused before it is journalled."""
        with self.buffer_lock:
            for buffer in (self.online, self.demos):
                if buffer.written:
                    return buffer.states.shape[1]
        return None

    def store_batch(self, actor_id: str, transitions: list) -> None:
        """One batch of stream `actor_id`, in order (the receiver calls this once per stored batch)."""
        with self.buffer_lock:
            if self.guard is not None:
                self.episode_versions.add(actor_id, transitions)
            for t in transitions:
                key = self.episode_keys.setdefault((actor_id, t.episode), len(self.episode_keys))
                self.online.add(t, key)
                if self.demos.offer(t, key):
                    self.interventions_stored += 1
        self.loop.transitions_added(len(transitions))

    def buffer_sizes(self) -> dict[str, int]:
        if self.loop is None:
            return {}
        return {"online": len(self.online), "interventions": self.demos.corrections()}

    def sample(self, batch_size: int):
        with self.buffer_lock:
            batch = self.sampler.sample(batch_size)
        return batch  # the agent's update moves it to the agent's device

    # -- training --------------------------------------------------------------------------------
    def waiting_for(self) -> str:
        """Why no update can run now ('' = one can): the cloning phase's wait, warm-up, or no complete n-step window
        to sample."""
        s, c = self.settings, self.loop.counters
        if self.cloning_pending():
            with self.buffer_lock:
                waiting = self.cloning.waiting_for(self.interventions_stored)
                if not waiting and not self.demos.has_window():
                    waiting = "cloning: the intervention buffer holds no complete n-step window yet"
            return waiting
        with self.buffer_lock:
            stored = len(self.online)
            if stored < max(s.warmup_transitions, 1):
                return f"warm-up: {stored}/{max(s.warmup_transitions, 1)} transitions stored"
            if not self.online.has_window():
                return "the online buffer holds no complete n-step window yet"
            if len(self.demos) and s.demo_ratio > 0 and not self.demos.has_window():
                return "the intervention buffer holds no complete n-step window yet"
        if self.loop.updates_owed(stored) == 0:
            return f"update-to-data ratio met ({c.learner_step} updates for {c.transitions_seen} transitions)"
        return ""

    def train_step(self) -> int:
        """One owed update, if `waiting_for()` allows it: 1 if done, else 0.

        An exception from sampling or the update is recorded in `training_error` (ERROR in `health()`,
        training stops) and raised again for the caller to log.
        """
        if self.training_error or self.waiting_for():
            return 0
        try:
            with self.lock:
                if self.cloning_pending():
                    return self.clone_step()
                self.apply_guard()
                return self.loop.train_some(len(self.online), max_updates=1)
        except Exception as err:
            self.training_error = f"{type(err).__name__}: {err}"
            raise

    def cloning_pending(self) -> bool:
        """Cloning steps are owed for the intervention transitions stored so far."""
        return self.cloning is not None and self.cloning.pending(self.interventions_stored)

    def clone_step(self) -> int:
        """One step of the cloning phase on the intervention buffer; its last step publishes the cloned weights and
        holds the actor for `actor_warmup_updates` while the critic learns what the cloned encoder sees."""
        phase = self.cloning
        with self.buffer_lock:
            batch = self.demos.sample(phase.batch_size, self.sampler.rng)
        phase.step(batch)
        if phase.round_ends():
            rounds = phase.done // phase.updates
            self.log(f"cloned {self.interventions_stored} intervention transitions in {phase.done} updates "
                     f"(loss {phase.last_loss:.4f}); " + ("reinforcement learning starts" if rounds == 1 else
                                                        f"round {rounds}, reinforcement learning goes on"))
            self.loop.hold_actor()
            self.publish_weights(reason=f"cloned on {self.interventions_stored} intervention transitions")
        return 1

    def last_metrics(self) -> dict[str, float]:
        """The last RL update's losses, and the cloning phase's last loss when there is one."""
        if self.loop is None:
            return {}
        clone = {"clone_loss": self.cloning.last_loss} if self.cloning is not None and self.cloning.done else {}
        return dict(self.loop.counters.last_metrics) | clone

    def apply_guard(self) -> None:
        """When the guard finds the newest versions clearly worse than the best one: training goes back to the
        best version's state (all networks: the encoder and critic are a pair with the actor), the actor waits
        for the critic again, and the best tensors go out under a new version number."""
        if self.guard is None:
            return
        with self.buffer_lock:
            rollback = self.guard.check()
        if rollback is None:
            return
        restore_agent(self.agent, rollback.snapshot)
        self.loop.hold_actor()
        self.guard_warning = rollback.reason
        self.warn(f"guard: {rollback.reason}; republishing v{rollback.best_version}'s weights")
        self.publish_weights(reason=f"rollback to v{rollback.best_version}", copy_of=rollback.best_version)

    # -- weights ---------------------------------------------------------------------------------
    def publish_weights(self, reason: str, copy_of: int | None = None) -> None:
        """The one publish path: start-up, checkpoint swap, training and guard rollbacks (`copy_of`: the version
        whose tensors these are again) all come through here."""
        with self.lock:
            self.weights_version += 1
            if self.guard is not None:
                snapshot = None if copy_of is not None else snapshot_agent(self.agent)
                with self.buffer_lock:
                    self.guard.published(self.weights_version, snapshot, copy_of=copy_of)
                if copy_of is None:
                    self.guard_warning = ""
            payload, meta = encode_weights(self.agent.inference.state_dict(), config=self.agent.config,
                                           weights_version=self.weights_version,
                                           learner_step=self.learner_step, run_id=self.run_id,
                                           uniform_exploration_steps=self.agent.inference.uniform_exploration_steps)
        if self.loop is not None:  # durable before it is sent: a restart never reuses a version number
            write_durably(self.state_dir / "run.json",
                          json.dumps({"run_id": self.run_id, "weights_version": self.weights_version}).encode())
        self.last_digest, self.last_publish_time = meta.digest, time.monotonic()
        self.publish(payload, meta, reason)
        self.log(f"published weights v{meta.weights_version} ({reason}): {len(payload)} bytes, "
                 f"{len(self.agent.inference.state_dict())} tensors, digest {meta.digest}")

    def swap_checkpoint(self, checkpoint: str | Path) -> None:
        """Load `checkpoint` in place of the current agent (same policy config only).

        Raises WeightsError/ValueError/OSError with the reason when it cannot; the current agent stays.
        The caller publishes it (`publish_weights`) when convenient.
        """
        agent = self.load_checkpoint(checkpoint)
        if agent.config.fingerprint() != self.agent.config.fingerprint():
            raise ValueError("the new checkpoint's policy config differs; start a new learner run for it")
        with self.lock:
            self.agent = agent
            if self.loop is not None:  # what setup_training did for the old agent, for this one
                scale_learning_rate(agent.encoder_opt, self.settings.encoder_lr_scale)
                self.loop.agent = agent
                if self.cloning is not None:
                    self.cloning.attach(agent)

    def save_state(self) -> None:
        with self.lock:
            counters = {"run_id": self.run_id, "weights_version": self.weights_version,
                        "learner_step": self.learner_step,
                        "clone_updates_done": self.cloning.done if self.cloning is not None else 0}
            save_training_state(self.state_dir / "state", self.agent, counters)
            save_checkpoint(self.agent, self.agent.config, self.state_dir / "checkpoint",
                            step=counters["learner_step"], extra={"trained_by": counters})

    # -- what the node reports -------------------------------------------------------------------
    def status(self, activity: str, stored_through: dict | None = None) -> dict:
        status = {"node": "learner", "run_id": self.run_id, "weights_version": self.weights_version,
                  "digest": self.last_digest, "learner_step": self.learner_step, "activity": activity,
                  "policy": self.agent.config.policy}
        if self.loop is not None:
            status |= {"transitions_stored": self.loop.counters.transitions_seen, "buffers": self.buffer_sizes(),
                       "stored_through": dict(stored_through or {}), "resumed": self.resumed,
                       "training_error": self.training_error}
        return status

    def health(self) -> Report:
        """OK while weights are out and training (if on) runs or waits for data; ERROR once training failed."""
        since = time.monotonic() - self.last_publish_time if self.last_publish_time else None
        values: dict[str, object] = {
            "weights_version": self.weights_version, "weights_digest": self.last_digest, "run_id": self.run_id,
            "policy": self.agent.config.policy, "learner_step": self.learner_step,
            "seconds_since_publish": since if since is not None else "",
            "updates_per_s": self.loop.counters.updates_per_second() if self.loop else 0.0,
        }
        if self.loop is not None:
            values["transitions_seen"] = self.loop.counters.transitions_seen
            cloning = self.cloning_pending()
            values["training"] = ("stopped" if self.training_error else self.waiting_for()
                                  or ("cloning" if cloning else "updating"))
        if self.cloning is not None:
            values["clone_updates_done"] = f"{self.cloning.done}/{self.cloning.due(self.interventions_stored)}"
        values |= {f"buffer/{k}": v for k, v in self.buffer_sizes().items()}
        values |= {f"loss/{k}": v for k, v in self.last_metrics().items()}
        intake = self.intake
        if intake is not None:
            values |= {"transitions_rejected": intake.rejected, "last_transitions_rejection": intake.last_rejection,
                       "journal_quarantined": len(intake.quarantined)}
            values |= {f"rejected/{kind}": n for kind, n in sorted(intake.rejections_by_reason.items())}
        if self.guard is not None:
            values |= self.guard.report()
        if self.training_error:
            return Report(ERROR, f"training stopped: {self.training_error}", values)
        if intake is not None and intake.quarantined:
            return Report(ERROR, f"{len(intake.quarantined)} journal entries quarantined (see the quarantine "
                                 f"folder), last: {intake.quarantined[-1]}", values)
        if intake is not None and intake.rejected and \
                time.monotonic() - intake.last_rejection_time < REJECTION_WARN_S:
            counts = ", ".join(f"{kind} {n}" for kind, n in intake.rejections_by_reason.most_common())
            return Report(WARN, f"transitions rejected ({counts}); last: {intake.last_rejection}", values)
        if self.guard_warning:
            return Report(WARN, f"weights v{self.weights_version} republished: {self.guard_warning}", values)
        if self.weights_version == 0:
            return Report(WARN, "no weights published yet", values)
        return Report(OK, f"weights v{self.weights_version} ({self.last_digest[:12]}) published "
                          f"{since:.0f} s ago", values)
