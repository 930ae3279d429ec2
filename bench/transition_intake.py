"""Transition intake benchmark: ack latency of 4 actors at 10 Hz, in normal running and after a learner kill -9.

Real processes on Fast DDS: 4 sender processes, each a real `TransitionSender` adding one 84x84 transition
every 0.1 s (batches of 16, as the actor sends them), and a receiver process holding the real
`TransitionReceiver` (validation, fsync'd journal, acks) in front of a counting store. After `--normal`
seconds the receiver is killed with SIGKILL, restarted `--down` seconds later on the same journal, and the
run goes on for `--after` seconds. Ack latency = first send of a batch -> the ack that covers it (one host
clock, CLOCK_MONOTONIC). Printed:
  normal        p50/p99 ack latency of batches first sent before the kill (target p99 <= 100 ms)
  backlog       seconds from the restarted receiver being ready until every batch sent before then is
                acknowledged (target <= 5 s)
  after restart p50/p99 ack latency of batches first sent in the `--after` seconds after it is ready

    .venv/bin/python bench/transition_intake.py [--normal 40 --down 5 --after 30]
"""

from __future__ import annotations

import argparse
import json
import os
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
TARGET_P99_MS, TARGET_BACKLOG_S = 100.0, 5.0


def spin(node, until) -> None:
    import rclpy

    while not until():
        rclpy.spin_once(node, timeout_sec=0.01)


def receiver(journal: str) -> None:
    import rclpy

    from hilserl.nodes.dds import configure_transport
    from hilserl.nodes.transitions import TransitionReceiver
    from hilserl.policies.config import PolicyConfig
    from hilserl.replay.intake import TransitionIntake

    configure_transport()
    rclpy.init()
    node = rclpy.create_node("bench_learner")
    config = PolicyConfig()
    intake = TransitionIntake(Path(journal), lambda stream, batch: None, lambda: config)
    intake.replay()
    TransitionReceiver(node, intake)
    print(json.dumps({"ready": time.monotonic()}), flush=True)
    spin(node, lambda: False)


def sender(index: int, spill: str, seconds: float) -> None:
    import rclpy

    from hilserl.nodes.dds import configure_transport
    from hilserl.nodes.transitions import TransitionSender
    from hilserl.policies.config import PolicyConfig
    from intake_cases import transitions

    configure_transport()
    rclpy.init()
    node = rclpy.create_node(f"bench_actor_{index}")
    config = PolicyConfig()
    sender = TransitionSender(node, f"/bench_actor_{index}", config.fingerprint, Path(spill), batch_size=BATCH)
    steps = iter(transitions(index, 10**6, config, ends=False, seed=index))
    node.create_timer(1.0 / HZ, lambda: sender.add(next(steps)))
    end = time.monotonic() + seconds
    spin(node, lambda: time.monotonic() > end)
    print(json.dumps({"delays": list(sender.ack_delays), "unacked": sender.unacked_count}), flush=True)


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = np.array(values) * 1e3
    return f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms (n={len(ms)})"


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
    if args.role == "receiver":
        receiver(args.dir)
        return 0
    if args.role == "sender":
        sender(args.index, args.dir, args.seconds)
        return 0

    from rosutil import ros_env, unique_domain_id

    env = ros_env(unique_domain_id(), OMP_NUM_THREADS="1")
    work = Path(tempfile.mkdtemp(prefix="hilserl-intake-bench-"))
    me = [sys.executable, __file__]

    def start_receiver() -> tuple[subprocess.Popen, float]:
        proc = subprocess.Popen(me + ["--role", "receiver", "--dir", str(work / "journal")], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        return proc, json.loads(proc.stdout.readline())["ready"]

    learner, _ = start_receiver()
    warmup = 10.0  # discovery and imports, not counted
    total = warmup + args.normal + args.down + args.after + 5.0
    senders = [subprocess.Popen(me + ["--role", "sender", "--index", str(i), "--dir", str(work / f"spill{i}"),
                                      "--seconds", str(total)], env=env, stdout=subprocess.PIPE, text=True)
               for i in range(ACTORS)]
    started = time.monotonic()
    time.sleep(warmup + args.normal)
    killed = time.monotonic()
    os.killpg(learner.pid, signal.SIGKILL)
    learner.wait()
    time.sleep(args.down)
    learner, back = start_receiver()
    results = [json.loads(s.communicate()[0].splitlines()[-1]) for s in senders]
    os.killpg(learner.pid, signal.SIGINT)
    learner.wait()

    delays = [(first, acked) for r in results for _, first, acked in r["delays"]]
    normal = [a - f for f, a in delays if started + warmup <= f and a < killed]
    backlog = [a for f, a in delays if f < back and a >= killed]
    after = [a - f for f, a in delays if back <= f < back + args.after]
    caught_up = max(backlog) - back if backlog else float("nan")
    print(f"transition intake, {ACTORS} actors at {HZ:g} Hz, batches of {BATCH} (84x84 frames); timings on a "
          f"shared machine are noisy")
    print(f"  normal running:           ack latency {percentiles(normal)}  (target p99 <= {TARGET_P99_MS:g} ms)")
    print(f"  learner kill -9, {args.down:g} s down: {len(backlog)} batches waiting; all acknowledged "
          f"{caught_up:.2f} s after the restarted learner was ready (target <= {TARGET_BACKLOG_S:g} s)")
    print(f"  {args.after:g} s after the restart:   ack latency {percentiles(after)}")
    print(f"  unacknowledged at the end: {sum(r['unacked'] for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
