"""Test helpers: hilserl nodes as real processes, and an in-test rclpy probe on its own domain."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_claimed_domains: list[tuple[int, int]] = []  # (domain, fd holding its lock), oldest first


def unique_domain_id() -> int:
    """A ROS_DOMAIN_ID (1..100) that no other test of this run, nor any concurrent run on this machine, uses.

    Two runs sharing a domain would share learners and actors (one learner acking another's stream), so each
    domain is claimed with an exclusive lock on a file in the temp directory, held until this process exits.
    Should every domain be taken, the one this process claimed first is reused (or, holding none, any).
    """
    mine = {domain for domain, _ in _claimed_domains}
    start = os.getpid() * 7 + len(_claimed_domains)
    for i in range(100):
        domain = 1 + (start + i) % 100
        if domain in mine:
            continue
        path = Path(tempfile.gettempdir()) / f"hilserl-ros-domain-{domain}.lock"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:  # e.g. created by another user with a restrictive umask: treat as taken
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _claimed_domains.append((domain, fd))
        return domain
    if not _claimed_domains:
        return 1 + start % 100
    _claimed_domains.append(_claimed_domains.pop(0))
    return _claimed_domains[-1][0]


def init_checkpoint(out: Path, policy: str = "drqv2", *options: str) -> dict:
    """A freshly initialised checkpoint through the real CLI; its JSON report plus "path"."""
    result = subprocess.run([sys.executable, "-m", "hilserl", "init-checkpoint", "--policy", policy,
                             "--out", str(out), *options], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(result.stdout) | {"path": str(out)}


def ros_env(domain_id: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


class NodeProcess:
    """`python -m hilserl <command> --ros-args -p k:=v ...` with its output captured to a log file."""

    def __init__(self, command: str, params: dict[str, object], env: dict[str, str], log_dir: Path,
                 name: str | None = None, extra_args: list[str] | None = None, stdin: int | None = None,
                 prefix: list[str] | None = None, remap: dict[str, str] | None = None):
        # prefix: e.g. ["ip", "netns", "exec", NS] runs the node on another (namespaced) host
        # remap: e.g. {"__node": "joint_actor"}: a second node of the same kind beside the first
        if command == "actor" and "spill_dir" not in params:  # its default is under the checkout's runs/
            params = params | {"spill_dir": str(log_dir / f"{name or command}-spill")}
        args = [*(prefix or []), sys.executable, "-m", "hilserl", command, *(extra_args or []), "--ros-args"]
        for source, target in (remap or {}).items():
            args += ["-r", f"{source}:={target}"]
        for key, value in params.items():
            args += ["-p", f"{key}:={format_param(value)}"]
        self.name = name or command
        self.log_path = log_dir / f"{self.name}.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdin=stdin, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


def checkpoint_cameras(checkpoint: str | Path) -> tuple[dict, dict]:
    """(sim, actor) parameters for the checkpoint's cameras: the sim renders as many as the policy sees and the
    actor subscribes to each, as bringup sets them in sim."""
    from hilserl.graph import checkpoint_policy
    from hilserl.names import camera_image_topics

    cameras = int(checkpoint_policy(Path(checkpoint) / "config.json").get("num_cameras", 1))
    return {"num_cameras": cameras}, {"image_topics": camera_image_topics(cameras)}


def format_param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_param(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


class Probe:
    """An rclpy node inside the test process, spinning in a thread, on the test's own domain."""

    def __init__(self, domain_id: int, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from hilserl.nodes.dds import configure_transport

        configure_transport()
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: dict[str, list] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def subscribe(self, msg_type, topic: str, qos) -> list:
        store: list = []
        with self.lock:
            self.received[topic] = store

        def callback(msg):
            with self.lock:
                store.append((time.monotonic(), msg))
        self.node.create_subscription(msg_type, topic, callback, qos)
        return store

    def messages(self, topic: str) -> list:
        with self.lock:
            return [m for _, m in self.received[topic]]

    def json_messages(self, topic: str) -> list[dict]:
        return [json.loads(m.data) for m in self.messages(topic)]

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, procs: list[NodeProcess] = (),
             interval: float = 0.05):
    """Poll until predicate() is truthy; on timeout fail with `what` and the nodes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.name} exited with {p.proc.returncode} while waiting for {what}:\n{p.log()}")
        time.sleep(interval)
    logs = "\n".join(f"--- {p.name} log ---\n{p.log()[-4000:]}" for p in procs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
