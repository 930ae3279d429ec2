"""Transition intake benchmark: ack latency of 4 actors at 10 Hz, in normal running and after a learner kill -9.

Real processes on Fast DDS: 4 sender processes, each a real `TransitionSender` adding one 84x84 transition
every 0.1 s (batches of 16, as the actor sends them; a partial batch goes out within half a resend period),
and a receiver process holding the real `TransitionReceiver` + `TransitionIntake` (validation, fsync'd
journal, acks) in front of a counting store. After `--normal` seconds the receiver is killed with SIGKILL,
restarted `--down` seconds later on the same journal, and the run goes on for `--after` seconds.

"Back" is the moment the restarted receiver process is ready: its journal replayed, its subscription and ack
publisher created (it writes that moment to a file). DDS discovery after that is counted, not excluded.
Ack latency = first send of a batch -> its sender handling the ack that covers it (one host clock,
CLOCK_MONOTONIC, comparable across processes). Printed, one line per phase and a final line:
  normal        p50/p99 ack latency of batches first sent before the kill (target p99 <= 100 ms)
  restart       seconds from "back" until every batch first sent before then is acknowledged (target <= 5 s)
  after restart p50/p99 ack latency of batches first sent in the `--after` seconds after "back"

Every child process has its own rclpy context and executor, no rclpy signal handlers (SIGTERM/SIGINT end
its spin loop, then it shuts down cleanly) and a deadline it enforces itself; the parent kills whatever is
left and always ends.

    .venv/bin/python bench/transition_intake.py [--normal 40 --down 5 --after 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "test")]
ACTORS, HZ, BATCH = 4, 10.0, 16
WARMUP = 10.0  # seconds of discovery and start-up before "normal running" is measured
READY_TIMEOUT = 120.0  # for a receiver to start on a loaded machine
GRACE = 15.0  # after a child's own deadline, before the parent kills it
TARGET_P99_MS, TARGET_BACKLOG_S = 100.0, 5.0


class Life:
    """One bench process's ROS life: its own context and executor, its own deadline, a clean end on SIGTERM."""

    def __init__(self, name: str, seconds: float):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        from hilserl.nodes.dds import configure_transport

        configure_transport()
        self.rclpy, self.deadline, self.stopping = rclpy, time.monotonic() + seconds, False
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def stop(self, *_) -> None:
        self.stopping = True

    def spin(self) -> None:
        while not self.stopping and time.monotonic() < self.deadline and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def receiver(work: Path, seconds: float, life_index: int) -> None:
    from hilserl.nodes.transitions import TransitionReceiver
    from hilserl.policies.config import PolicyConfig
    from hilserl.replay.intake import TransitionIntake

    life = Life("bench_learner", seconds)
    config = PolicyConfig()
    stored = [0]
    intake = TransitionIntake(work / "journal", lambda stream, batch: stored.__setitem__(0, stored[0] + len(batch)),
                              lambda: config, log=lambda line: None)
    replayed = intake.replay()
    TransitionReceiver(life.node, intake)
    write_json(work / f"receiver{life_index}.ready", {"ready": time.monotonic(), "replayed": replayed})
    life.spin()
    write_json(work / f"receiver{life_index}.json", {"stored": stored[0], "rejected": intake.rejected})
    life.close()


def sender(work: Path, seconds: float, index: int) -> None:
    from hilserl.nodes.transitions import TransitionSender
    from hilserl.policies.config import PolicyConfig
    from intake_cases import transitions

    life = Life(f"bench_actor_{index}", seconds)
    config = PolicyConfig()
    sender = TransitionSender(life.node, f"/bench_actor_{index}", config.fingerprint, work / f"spill{index}",
                              batch_size=BATCH)
    step = iter(range(10**9))  # one transition at a time: an endless list would not fit in memory

    def act() -> None:
        n = next(step)
        sender.add(transitions(index, 1, config, start=n, ends=False, seed=n)[0])
    life.node.create_timer(1.0 / HZ, act)
    life.spin()
    unacked_first_sent = [sender.first_sent.get(key, 0.0) for key in sender.unacked]
    write_json(work / f"sender{index}.json", {"delays": list(sender.ack_delays), "unacked": unacked_first_sent})
    life.close()


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "no samples"
    ms = np.array(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms (n={len(ms)})"


def wait_file(path: Path, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {proc.returncode} before it was ready")
        time.sleep(0.02)
    raise RuntimeError(f"{path.stem} not ready after {timeout:g} s")


def end(procs: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM (a clean end), then SIGKILL for whatever is still there after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal", type=float, default=40.0)
    parser.add_argument("--down", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--role", choices=["main", "receiver", "sender"], default="main")
    parser.add_argument("--dir", default="")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    args = parser.parse_args()
    if args.role != "main":
        (receiver if args.role == "receiver" else sender)(Path(args.dir), args.seconds, args.index)
        return 0

    from rosutil import ros_env, unique_domain_id

    env = ros_env(unique_domain_id(), OMP_NUM_THREADS="1")
    work = Path(tempfile.mkdtemp(prefix="hilserl-intake-bench-"))
    longest = WARMUP + args.normal + args.down + READY_TIMEOUT + args.after + 10.0  # no child outlives this
    procs: list[subprocess.Popen] = []

    def start(role: str, index: int) -> subprocess.Popen:
        log = open(work / f"{role}{index}.log", "w")
        proc = subprocess.Popen([sys.executable, __file__, "--role", role, "--dir", str(work), "--index", str(index),
                                 "--seconds", str(longest)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        learner = start("receiver", 0)
        wait_file(work / "receiver0.ready", learner, READY_TIMEOUT)
        senders = [start("sender", i) for i in range(ACTORS)]
        started = time.monotonic()
        time.sleep(WARMUP + args.normal)
        killed = time.monotonic()
        os.killpg(learner.pid, signal.SIGKILL)
        learner.wait()
        time.sleep(args.down)
        learner = start("receiver", 1)
        back = wait_file(work / "receiver1.ready", learner, READY_TIMEOUT)["ready"]
        time.sleep(max(0.0, back + args.after + 5.0 - time.monotonic()))
        end(senders, GRACE)
        end([learner], GRACE)
    finally:
        end(procs, 5.0)

    results = [json.loads((work / f"sender{i}.json").read_text()) for i in range(ACTORS)
               if (work / f"sender{i}.json").exists()]
    delays = [(first, acked) for r in results for _, first, acked in r["delays"]]
    unacked = [first for r in results for first in r["unacked"]]
    normal = [a - f for f, a in delays if started + WARMUP <= f and a < killed]
    backlog = [a for f, a in delays if f < back and a >= killed]
    left = [f for f in unacked if f < back]
    after = [a - f for f, a in delays if back <= f < back + args.after]
    caught_up = max(backlog) - back if backlog and not left else float("inf")
    print(f"transition intake: {ACTORS} senders at {HZ:g} Hz, batches of {BATCH} 84x84 transitions, "
          f"{len(results)}/{ACTORS} reported; timings on a shared, loaded machine are noisy")
    print(f"  normal running ({args.normal:g} s): ack latency {percentiles(normal)} (target p99 <= {TARGET_P99_MS:g} ms)")
    print(f"  receiver kill -9, {args.down:g} s down, restarted; 'back' = restarted process ready (journal replayed, "
          f"topics created): {len(backlog)} batches waiting, all acknowledged {caught_up:.2f} s after back "
          f"({len(left)} never; target <= {TARGET_BACKLOG_S:g} s)")
    print(f"  {args.after:g} s after back: ack latency {percentiles(after)}")
    p = (lambda xs, q: np.percentile(np.array(xs) * 1e3, q) if xs else float("nan"))
    print(f"intake acks: normal p50 {p(normal, 50):.0f} ms p99 {p(normal, 99):.0f} ms; after restart backlog acked "
          f"in {caught_up:.2f} s, p50 {p(after, 50):.0f} ms p99 {p(after, 99):.0f} ms; "
          f"{len([f for f in unacked if f < back + args.after])} batches first sent in the measured time unacknowledged "
          f"at the end ({len(unacked)} counting those still in flight when the senders stopped)")
    if len(results) == ACTORS:
        shutil.rmtree(work, ignore_errors=True)  # kept, with every process's log, when a sender did not report
    else:
        print(f"logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
