"""Fine-tuning a pretrained checkpoint through the whole ROS loop (sim + learner + actor, paced lock-step, and
the simulated operator when asked), measured from the sim's own episode record: test_finetune.py,
test_finetune_shifted.py, bench/finetune_stability.py and bench/finetune.py run it.

Success comes from the sim node's log ("episode N ended (...): success=..."), never from the actor's
summaries; each sim episode is credited to the weights version the actor had loaded for most of its wall
time (from /actor/weights_loaded, which also gives the learner step of each version). The share of its steps the
operator drove comes from the actor's episode summaries (/actor/episodes), matched to the sim's episodes in
order: in lock-step the actor ends an episode exactly when the sim does.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rosutil import NodeProcess, Probe, checkpoint_cameras, ros_env, unique_domain_id, wait_for

STARTUP = 300.0  # a machine's first Genesis scene build compiles kernels
# Control steps per second (the sim's lock-step cap): what the README's figures used, slow enough that the
# learner's updates keep pace with experience on this 2-core CPU. A real arm under HIL-SERL runs at about 10.
SIM_HZ = 6.0
ACTOR = {"lockstep": True, "episode_topic": "sim/step", "reset_service": "sim/reset", "max_episode_steps": 0,
         "transition_batch": 8}
SIM_EPISODE = re.compile(r"\[(\d+\.\d+)\] \[sim\]: episode (\d+) ended \(([^)]*)\): success=(True|False), "
                         r"return=(-?[\d.]+)")
# Fine-tuning the shipped reach checkpoint on the shifted cell (bench/finetune.py's learning arms and
# test_finetune_shifted.py), on top of test_finetune.py's LEARNER and config/learner.yaml's protections. The
# encoder learns at the critic's rate (the shipped 0.1 protects a policy on its own cell; here the encoder is
# what has to absorb the new look); half-size batches and two updates asked per transition, so that a shared
# CPU, which cannot keep up with either, does more updates per episode; and an operator that takes over after
# 5 steps without progress and drives 20, so a policy hovering short of the target is corrected while the
# episode still has time. Measured in README, "Fine-tuning on the shifted cell with the operator".
SHIFTED_LEARNER = {"encoder_lr_scale": 1.0, "batch_size": 32, "utd_ratio": 2.0}
SHIFTED_OPERATOR = {"stall_steps": 5, "takeover_steps": 20}
# Every learner protection off: the learner as it was before they existed (with `without_critic`, the
# checkpoint too).
UNPROTECTED = {"load_demos": False, "actor_warmup_updates": 0, "bc_weight": 0.0, "encoder_lr_scale": 1.0,
               "guard": False}


def without_critic(checkpoint: Path, out: Path, demos: bool = False) -> str:
    """A copy of `checkpoint` with its inference state only, so the learner starts from a fresh critic (as
    the shipped checkpoint was before its critic was trained); its demonstrations come along if `demos`."""
    from safetensors.torch import load_file, save_file

    from hilserl.replay.demos import DEMOS_FILE
    from hilserl.weights.checkpoint import CONFIG_FILE, MODEL_FILE, load_inference_policy

    out.mkdir(parents=True, exist_ok=True)
    inference = set(load_inference_policy(checkpoint).state_dict())
    tensors = load_file(str(checkpoint / MODEL_FILE))
    save_file({k: v for k, v in tensors.items() if k in inference}, str(out / MODEL_FILE))
    shutil.copy(checkpoint / CONFIG_FILE, out / CONFIG_FILE)
    if demos:
        shutil.copy(checkpoint / DEMOS_FILE, out / DEMOS_FILE)
    return str(out)


@dataclass
class Episode:
    index: int
    success: bool
    episode_return: float
    ended: float  # wall-clock seconds (the sim log's timestamp)
    version: int = 0
    intervention_rate: float = 0.0  # share of the episode's steps the operator drove (the actor's summary)

    @property
    def unassisted_success(self) -> bool:
        """Succeeded with nobody taking over: the policy's own success."""
        return self.success and self.intervention_rate == 0.0


@dataclass
class FinetuneRun:
    episodes: list[Episode] = field(default_factory=list)
    versions: dict[int, dict] = field(default_factory=dict)  # version -> {"learner_step", "loaded": wall time}
    learner_step: int = 0
    learner_log: str = ""
    wall_s: float = 0.0

    def successes(self) -> list[bool]:
        return [e.success for e in self.episodes]

    def intervention_rate(self) -> float:
        """Share of all the run's steps the operator drove (episodes are equally long)."""
        return sum(e.intervention_rate for e in self.episodes) / len(self.episodes) if self.episodes else 0.0

    def window_rates(self, size: int = 10) -> list[float]:
        s = self.successes()
        return [sum(s[i:i + size]) / size for i in range(len(s) - size + 1)]

    def table(self) -> list[dict]:
        """Per weights version: the learner step it was published at, and its episodes' success."""
        rows = []
        for version in sorted(self.versions):
            mine = [e for e in self.episodes if e.version == version]
            rows.append({"version": version, "learner_step": self.versions[version]["learner_step"],
                         "episodes": len(mine), "successes": sum(e.success for e in mine)})
        return rows


def sim_episodes(log: str) -> list[Episode]:
    return [Episode(int(m[2]), m[4] == "True", float(m[5]), float(m[1])) for m in SIM_EPISODE.finditer(log)]


def credit_versions(episodes: list[Episode], loads: list[tuple[float, int]]) -> None:
    """Each episode to the version loaded over most of [previous end, its end]; `loads`: (wall time, version)."""
    start = loads[0][0] if loads else 0.0
    for e in episodes:
        spans: dict[int, float] = {}
        for k, (at, version) in enumerate(loads):
            until = loads[k + 1][0] if k + 1 < len(loads) else float("inf")
            overlap = min(until, e.ended) - max(at, start)
            if overlap > 0:
                spans[version] = spans.get(version, 0.0) + overlap
        e.version = max(spans, key=spans.get) if spans else (loads[0][1] if loads else 0)
        start = e.ended


def run_finetune(workdir: Path, checkpoint: str, learner: dict, *, updates: int, min_episodes: int,
                 timeout: float, sim_hz: float = SIM_HZ, episode_steps: int = 40, seed: int = 0,
                 stop_early=None, task: str = "reach", variant: str = "standard",
                 operator: dict | None = None, actor: dict | None = None) -> FinetuneRun:
    """Start sim (`task`, `variant`) + learner + actor (`actor`: parameters added to its own), and the simulated
    operator with parameters `operator` when given; run until the learner has done `updates` updates and the sim
    has ended `min_episodes` episodes (or `stop_early(run)` says so), then stop everything and return the record."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    workdir.mkdir(parents=True, exist_ok=True)
    domain = unique_domain_id()
    env, probe = ros_env(domain), Probe(domain)
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    loaded = probe.subscribe(String, "/actor/weights_loaded", latched)
    status = probe.subscribe(String, "/learner/status", latched)
    summaries = probe.subscribe(String, "/actor/episodes", latched)
    procs: list[NodeProcess] = []
    run, started = FinetuneRun(), time.monotonic()

    def refresh() -> FinetuneRun:
        with probe.lock:
            loads = [(at, json.loads(m.data)) for at, m in loaded]
            statuses = [json.loads(m.data) for _, m in status]
            rates = [json.loads(m.data).get("intervention_rate", 0.0) for _, m in summaries]
        run.versions = {d["weights_version"]: {"learner_step": d["learner_step"]} for _, d in loads}
        run.learner_step = max((s.get("learner_step", 0) for s in statuses), default=0)
        run.episodes = sim_episodes(procs[0].log()) if procs else []
        for episode, rate in zip(run.episodes, rates):
            episode.intervention_rate = rate
        credit_versions(run.episodes, [(to_wall(at), d["weights_version"]) for at, d in loads])
        return run

    try:
        sim_cameras, actor_cameras = checkpoint_cameras(checkpoint)
        sim = NodeProcess("sim", {"lockstep": True, "lockstep_max_hz": sim_hz, "episode_steps": episode_steps,
                                  "seed": seed, "task": task, "variant": variant} | sim_cameras, env, workdir)
        procs.append(sim)
        procs.append(NodeProcess("learner", {"checkpoint": checkpoint, "state_dir": str(workdir / "learner"),
                                             "checkpoint_every_updates": 100_000} | learner, env, workdir))
        procs.append(NodeProcess("actor", ACTOR | actor_cameras | {"spill_dir": str(workdir / "spill"), "seed": seed}
                                 | (actor or {}), env, workdir))
        if operator is not None:
            procs.append(NodeProcess("operator", {"task": task, "variant": variant} | operator, env, workdir))

        def done() -> bool:
            refresh()
            if stop_early is not None and stop_early(run):
                return True
            return run.learner_step >= updates and len(run.episodes) >= min_episodes
        wait_for(done, timeout, f"{updates} updates and {min_episodes} sim episodes", procs, interval=1.0)
    finally:
        for p in reversed(procs):
            p.stop()
        probe.close()
        refresh()  # the sim's log is complete now
    run.learner_log = procs[1].log() if len(procs) > 1 else ""
    run.wall_s = time.monotonic() - started
    return run


def to_wall(monotonic_at: float) -> float:
    """A probe receipt time (time.monotonic) as wall-clock seconds, to compare with the sim log's stamps."""
    return time.time() - (time.monotonic() - monotonic_at)


def format_table(run: FinetuneRun) -> str:
    lines = ["version  learner_step  episodes  success"]
    for row in run.table():
        rate = f"{row['successes']}/{row['episodes']}" if row["episodes"] else "-"
        lines.append(f"v{row['version']:<7} {row['learner_step']:>12}  {row['episodes']:>8}  {rate:>7}")
    return "\n".join(lines)

