"""Weight sync benchmark: learner publish -> actor loaded into its modules, against a raw rclpy transfer.

For the default DrQ-v2 config (84x84, 3 stacked frames, ~12.4 MB of inference state), in one run:
  raw/default   a plain rclpy UInt8MultiArray of the same byte count, Fast DDS defaults (the baseline)
  raw/large     the same with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (for reference)
  raw/hilserl   the same on hilserl's Fast DDS profile (nodes/dds.py)
  hilserl       encode_weights (digest + safetensors) -> publish -> WeightsReceiver.offer (decode views
                the message buffer, strict build on the meta device, digest recomputed from the modules)
Each trial's time runs from the publisher's start to the subscriber's "done" (same host clock), median
of the trials. Also prints the actor's inference latency p50/p99.

    .venv/bin/python bench/weight_sync.py [--trials 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
TARGET_RATIO = 0.3
TARGET_MS = 20.0  # end to end for the default policy's ~12.4 MB
LATCHED_DEPTH = 1


def qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                      history=HistoryPolicy.KEEP_LAST, depth=LATCHED_DEPTH)


def default_policy():
    import torch

    from hilserl.policies.config import PolicyConfig
    from hilserl.policies.inference import InferencePolicy

    torch.manual_seed(0)
    return InferencePolicy(PolicyConfig())


def subscriber(mode: str) -> None:
    """Receives each message, does the mode's work, replies with the wall-clock time it finished."""
    import signal
    import threading

    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String, UInt8MultiArray

    from hilserl.weights.loader import WeightsReceiver

    if mode == "hilserl":  # the process tuning hilserl's nodes apply at start-up
        from hilserl.nodes.runtime import keep_large_buffers
        keep_large_buffers()
    # The parent ends this process with SIGTERM: stop spinning and close cleanly (no shutdown traceback).
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = rclpy.create_node("bench_sub")
    reply = node.create_publisher(String, "bench/done", 10)
    receiver = WeightsReceiver()

    def on_msg(msg):
        if mode == "hilserl":
            offer = receiver.offer(msg.data)
            ok = offer.status == "loaded"
        else:
            payload = memoryview(msg.data)  # what a raw consumer gets: the bytes, no checks
            ok = len(payload) > 0
        reply.publish(String(data=json.dumps({"t_done": time.time_ns(), "ok": ok})))
        if mode == "hilserl":  # as the actor does once the new weights act: the next version's empty policy
            receiver.prepare_next()

    node.create_subscription(UInt8MultiArray, "bench/weights", on_msg, qos())
    node.create_publisher(String, "bench/ready", qos()).publish(String(data="ready"))
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()


def publisher(mode: str, trials: int) -> None:
    import rclpy
    from std_msgs.msg import String, UInt8MultiArray

    from hilserl.nodes.wire import bytes_to_msg_data
    from hilserl.weights.codec import encode_weights

    policy = default_policy()
    state = policy.state_dict()
    size = len(encode_weights(state, config=policy.config, weights_version=1, learner_step=0, run_id="bench")[0])
    if mode == "hilserl":
        from hilserl.nodes.runtime import keep_large_buffers
        keep_large_buffers()
    rclpy.init()
    node = rclpy.create_node("bench_pub")
    pub = node.create_publisher(UInt8MultiArray, "bench/weights", qos())
    done: list[dict] = []
    ready: list[str] = []
    node.create_subscription(String, "bench/done", lambda m: done.append(json.loads(m.data)), 10)
    node.create_subscription(String, "bench/ready", lambda m: ready.append(m.data), qos())
    deadline = time.monotonic() + 60
    while (not ready or pub.get_subscription_count() == 0) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    raw = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    times = []
    for trial in range(trials + 2):  # two warm-up transfers
        t0 = time.time_ns()
        if mode == "hilserl":
            payload, _ = encode_weights(state, config=policy.config, weights_version=trial + 1, learner_step=trial,
                                        run_id="bench")
        else:
            payload = raw
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(payload)
        pub.publish(msg)
        count = len(done)
        while len(done) == count and time.monotonic() < deadline + 600:
            rclpy.spin_once(node, timeout_sec=0.01)
        if not done[-1]["ok"]:
            raise SystemExit(f"{mode}: subscriber did not accept trial {trial}")
        if trial >= 2:
            times.append((done[-1]["t_done"] - t0) / 1e6)
    print(json.dumps({"bytes": size, "ms": times}))


def run_pair(mode: str, transport: str, trials: int, domain: int) -> dict:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    for key in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(key, None)
    if transport == "default":
        env["HILSERL_DDS_PROFILE"] = "0"
    elif transport == "large":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    else:
        from hilserl.nodes.dds import profile_path

        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile_path())
    me = [sys.executable, __file__]
    sub = subprocess.Popen(me + ["--role", "sub", "--mode", mode], env=env)
    try:
        out = subprocess.run(me + ["--role", "pub", "--mode", mode, "--trials", str(trials)], env=env,
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SystemExit(f"{mode}/{transport} publisher failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sub.terminate()
        sub.wait(10)


def inference_latency(runs: int = 300) -> tuple[float, float]:
    import torch

    torch.set_num_threads(1)
    policy = default_policy().eval()
    pixels = np.random.default_rng(0).integers(0, 256, (9, 84, 84), dtype=np.uint8)
    for _ in range(20):
        policy.act(pixels, None, deterministic=False, step=0)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        policy.act(pixels, None, deterministic=False, step=0)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["main", "pub", "sub"], default="main")
    parser.add_argument("--mode", choices=["raw", "hilserl"], default="raw")
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    if args.role == "sub":
        return subscriber(args.mode)
    if args.role == "pub":
        return publisher(args.mode, args.trials)

    domain = 60 + os.getpid() % 30
    results = {}
    for i, (mode, transport) in enumerate([("raw", "default"), ("raw", "large"), ("raw", "hilserl"),
                                            ("hilserl", "hilserl")]):
        result = run_pair(mode, transport, args.trials, domain + i)
        median = float(np.median(result["ms"]))
        results[f"{mode}/{transport}"] = median
        print(f"{mode + '/' + transport:<18} {result['bytes'] / 1e6:6.2f} MB  median {median:7.1f} ms  "
              f"p90 {np.percentile(result['ms'], 90):7.1f} ms  ({len(result['ms'])} trials)", flush=True)
    sync = results["hilserl/hilserl"]
    print(f"hilserl end-to-end sync median {sync:.1f} ms (target <= {TARGET_MS:g} ms): "
          f"{'MET' if sync <= TARGET_MS else 'NOT MET'}")
    baseline = results["raw/default"]
    ratio = results["hilserl/hilserl"] / baseline
    print(f"hilserl end-to-end sync / raw default transfer = {ratio:.2f}x (target <= {TARGET_RATIO}x): "
          f"{'MET' if ratio <= TARGET_RATIO else 'NOT MET'}")
    p50, p99 = inference_latency()
    print(f"actor inference latency (1 thread): p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
