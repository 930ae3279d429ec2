"""Learner update benchmark: updates/s at batch 256, 84x84, 3 stacked frames, on one device.

In one run:
  plain     DrQ-v2's update written out plainly (test/drqv2_reference.py: float32, NCHW, bilinear
            grid_sample shift augmentation, every gradient autograd offers), as facebookresearch/drqv2
            structures it
  hilserl   `DrQV2Agent.update` with the default `SpeedSettings` (hilserl/policies/speed.py)
  sac       `SACAgent.update` on the same batch (no plain SAC here: reported for its cost beside DrQ-v2)
  drqv2 + grasp critic   `DrQV2Agent.update` with `gripper: discrete` (end-effector xyz actions): the grasp
            critic's cost beside the continuous update
First the losses: plain and hilserl start from the same weights, batch, augmentation shifts and noise (same
seed), and the fast path's critic/actor losses must lie within LOSS_RTOL of the plain ones. Then the speed:
the updates alternate, so load from other processes on a shared CPU hits all alike; the ratio of medians is
compared with TARGET_RATIO. Then the ceiling the arithmetic sets: the update's GFLOP (torch's flop counter)
at the device's measured matmul peak, as a ratio against the same plain rate. `--ablate` also times settings
one at a time. Exits 1 when the losses are out of tolerance; the ratio is reported, not enforced (the CPU may
be shared).

    .venv/bin/python bench/learner_update.py [--rounds 6] [--ablate] [--batch 256] [--device auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__":
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a CPU shared with other
    # processes, spinning threads steal the core their partner needs and every parallel region waits for a
    # descheduled thread (measured: 2 threads 3x slower than 1 under load). Applies to every variant.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "test"))  # the plain reference update lives with the tests

from hilserl.policies.batch import Batch  # noqa: E402
from hilserl.policies.config import PolicyConfig  # noqa: E402
from hilserl.policies.device import resolve_device  # noqa: E402
from hilserl.policies.drqv2 import DrQV2Agent  # noqa: E402
from hilserl.policies.sac import SACAgent  # noqa: E402
from hilserl.policies.speed import SpeedSettings  # noqa: E402
from drqv2_reference import pair, synthetic_batch  # noqa: E402

TARGET_RATIO = 5.0
LOSS_RTOL = 2e-2  # bf16 vs float32, relative, on the first update from identical weights
LOSS_RTOL_FP32 = 1e-4  # the fast path with bf16 off vs the plain update
DRIFT = 5  # later updates also carry the earlier updates' rounding: allowed DRIFT x the tolerance
BATCH = 256


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-8)


def compare_losses(config: PolicyConfig, batch: Batch, speed: SpeedSettings, device: torch.device, updates: int,
                   label: str, rtol: float) -> bool:
    """Same weights, batch, shifts and noise; the plain losses are the reference."""
    plain, agent = pair(config, speed, device=device)
    ok = True
    for step in range(updates):
        torch.manual_seed(100 + step)
        ref = plain.update(batch, step)
        torch.manual_seed(100 + step)
        got = agent.update(batch, step)
        diffs = {k: rel(got[k], ref[k]) for k in ("critic_loss", "actor_loss")}
        # Only the first update starts from identical weights; later ones also carry earlier rounding.
        bound = rtol if step == 0 else DRIFT * rtol
        verdict = f"ok (<= {bound:g})" if max(diffs.values()) <= bound else f"OVER {bound:g}"
        ok &= max(diffs.values()) <= bound
        print(f"  {label} update {step}: critic {got['critic_loss']:.5f} vs {ref['critic_loss']:.5f} "
              f"(rel {diffs['critic_loss']:.1e}), actor {got['actor_loss']:.5f} vs {ref['actor_loss']:.5f} "
              f"(rel {diffs['actor_loss']:.1e}) {verdict}", flush=True)
    return ok


def time_interleaved(runners: dict[str, Callable[[], None]], rounds: int, warmup: int,
                     device: torch.device) -> dict[str, list[float]]:
    """Each round runs every runner once, in turn; returns seconds per update for each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        line = []
        for name, run in runners.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
            line.append(f"{name} {1.0 / times[name][-1]:.2f}/s")
        print(f"  round {r + 1}/{rounds}: " + ", ".join(line), flush=True)
    return times


def update_gflop(update: Callable, batch: Batch) -> float:
    """The matmul and convolution work of one update, counted by torch (GFLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        update(batch, 0)
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, n: int = 2048, runs: int = 5) -> float:
    """The best rate of a large square matmul: about as fast as this device does that dtype's arithmetic."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (each runs every variant once)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss-updates", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--ablate", action="store_true", help="also time each speed setting on its own")
    args = parser.parse_args()

    device = resolve_device(args.device)
    config = PolicyConfig()  # DrQ-v2, 84x84, 3 frames, 1 camera
    default = SpeedSettings.from_env()
    bf16 = default.use_bf16(device)
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"cpu {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    print(f"learner update bench: batch {args.batch}, {config.image_size}x{config.image_size}, "
          f"{config.frame_stack} frames; torch {torch.__version__} on {device} ({hardware}), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; settings {default} (bf16 {bf16})", flush=True)
    batch = synthetic_batch(config, args.batch).to(device)

    print(f"losses vs the plain float32 update (relative tolerance on the first update {LOSS_RTOL:g} with bf16, "
          f"{LOSS_RTOL_FP32:g} without; {DRIFT}x that on later updates):", flush=True)
    ok = compare_losses(config, batch, default, device, args.loss_updates, "hilserl",
                        LOSS_RTOL if bf16 else LOSS_RTOL_FP32)
    if bf16:
        ok &= compare_losses(config, batch, dataclasses.replace(default, bf16=False), device, 1, "hilserl-fp32",
                             LOSS_RTOL_FP32)

    variants = {"hilserl": default}
    if args.ablate:  # the default with one setting changed, and with every setting off
        variants |= {
            "all settings off": SpeedSettings(bf16=False, channels_last=False, fused_adam=False, compile=False),
            "bf16 off": dataclasses.replace(default, bf16=False),
            "fused_adam off": dataclasses.replace(default, fused_adam=False),
            "channels_last off": dataclasses.replace(default, channels_last=False),
            "threads=1": dataclasses.replace(default, threads=1),
            "compile on": dataclasses.replace(default, compile=True),
        }
    threads = torch.get_num_threads()

    def runner(update, speed: SpeedSettings, on=batch):
        def run() -> None:
            speed.apply_threads()  # a no-op unless the variant sets its own thread count
            update(on, 0)
            torch.set_num_threads(threads)
        return run

    plain, _ = pair(config, default, device=device)
    runners = {"plain": runner(plain.update, SpeedSettings(threads=0))}
    for name, speed in variants.items():
        agent = pair(config, speed, device=device)[1]
        if speed.compile:  # compiling happens on the first updates; report its cost, keep it out of the timing
            start = time.perf_counter()
            for step in range(2):
                agent.update(batch, step)
            print(f"  {name}: compiled in {time.perf_counter() - start:.0f} s (first two updates)", flush=True)
        runners[name] = runner(agent.update, speed)
    # Other learners' updates, timed beside DrQ-v2 on the same batch: SAC, and DrQ-v2 with a discrete gripper
    # (end-effector xyz + the grasp critic's double-DQN update), so the grasp critic's cost shows next to it.
    runners["sac"] = runner(SACAgent(dataclasses.replace(config, policy="sac"), speed=default, device=device).update,
                            default)
    grasp = dataclasses.replace(config, action_space="ee_delta", ee_axes="xyz", action_dim=4, gripper="discrete")
    runners["drqv2 + grasp critic"] = runner(DrQV2Agent(grasp, speed=default, device=device).update, default,
                                             synthetic_batch(grasp, args.batch).to(device))
    print(f"timing, interleaved ({args.warmup} warm-up, {args.rounds} timed rounds):", flush=True)
    times = time_interleaved(runners, args.rounds, args.warmup, device)

    rate = {name: 1.0 / statistics.median(t) for name, t in times.items()}
    print("updates/s (median of rounds):")
    for name, r in rate.items():
        print(f"  {name:24s} {r:6.2f}/s  x{r / rate['plain']:.2f} plain")
    # What the arithmetic allows: an update's matmul/conv work at the device's matmul peak in the fast path's
    # precision, against the plain update's rate measured here. No update runs at that peak (its elementwise
    # work and memory traffic come on top), so a target above this ceiling cannot be met on this device.
    gflop = update_gflop(plain.update, batch)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak_gflops(dtype, device)
    print(f"ceiling: the update is {gflop:.0f} GFLOP of matmuls and convolutions; at this device's "
          f"{str(dtype).removeprefix('torch.')} matmul peak ({peak:.0f} GFLOP/s) it could run at most "
          f"{peak / gflop:.2f}/s, x{peak / gflop / rate['plain']:.1f} the plain update here "
          f"(hilserl reaches {100 * rate['hilserl'] * gflop / peak:.0f}% of that peak)")
    ratio = rate["hilserl"] / rate["plain"]
    print(f"plain {rate['plain']:.2f} updates/s, hilserl {rate['hilserl']:.2f} updates/s: ratio {ratio:.2f} "
          f"(target >= {TARGET_RATIO:g}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}); "
          f"losses {'within' if ok else 'OUTSIDE'} tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
