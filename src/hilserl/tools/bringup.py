"""`python -m hilserl bringup [name:=value ...] [--episodes N]`: the launch file's graph as processes.

Takes the same arguments as `ros2 launch hilserl bringup.launch.py` (sim, checkpoint, num_actors, policy,
rviz, use_sim_time, run_dir, params_file; see hilserl.graph) and starts the same nodes from the same
config files, each as `python -m hilserl <node> --ros-args ...` (rviz2 and robot_state_publisher through
`ros2 run`, which needs a sourced ROS 2 install). Order: sim(s) and learner first; the actors once the
learner's latched /learner/status reports weights v1. Every line a node prints comes out prefixed with
its name and is also kept in RUN_DIR/logs/. One line per finished episode, read from each actor's
~/status. Ends by itself after --episodes episodes (all actors together; 0 = run until stopped), and
stops every node on Ctrl-C or SIGTERM: SIGINT first, SIGKILL for any still running after 10 s.

    python -m hilserl bringup                         # sim + learner + actor, checkpoints/reach, 5 episodes
    python -m hilserl bringup num_actors:=2 --episodes 0
    python -m hilserl bringup --dry-run               # print the commands only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hilserl import graph
from hilserl.graph import GraphError, NodeSpec

DEFAULT_EPISODES = 5
STARTUP_TIMEOUT_S = 180.0  # a node imports torch (and the sim Genesis) before it is up, on a busy CPU too
STOP_TIMEOUT_S = 10.0


# -- commands --------------------------------------------------------------------------------------
def ros_args(spec: NodeSpec) -> list[str]:
    """What launch_ros passes a Node: name, namespace, parameter files then values, remappings."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    for path in spec.param_files:
        args += ["--params-file", path]
    for key, value in spec.overrides.items():
        args += ["-p", f"{key}:={json.dumps(value)}"]  # JSON is YAML: strings stay strings, lists stay lists
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def command(spec: NodeSpec) -> list[str]:
    if spec.package == graph.PACKAGE:
        return [sys.executable, "-m", "hilserl", spec.executable, *spec.arguments, *ros_args(spec)]
    return ["ros2", "run", spec.package, spec.executable, *spec.arguments, *ros_args(spec)]


def split_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`name:=value` items are launch arguments (as for ros2 launch); the rest are this tool's flags."""
    launch, rest = {}, []
    for item in argv:
        if ":=" in item and not item.startswith("-"):
            name, value = item.split(":=", 1)
            launch[name] = value
        else:
            rest.append(item)
    return launch, rest


# -- processes -------------------------------------------------------------------------------------
class Child:
    """One node process: its own process group, output prefixed onto ours and kept in a log file."""

    print_lock = threading.Lock()

    def __init__(self, spec: NodeSpec, argv: list[str], env: dict[str, str], log_dir: Path):
        self.spec, self.label = spec, spec.fqn.lstrip("/")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(log_dir / f"{self.label.replace('/', '.')}.log", "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1)
        self.reader = threading.Thread(target=self.pump, daemon=True)
        self.reader.start()

    def pump(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            say(f"[{self.label}] {line.rstrip()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.reader.join(timeout=2.0)
        self.log.close()


def say(line: str) -> None:
    with Child.print_lock:
        print(line, flush=True)


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        child.signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"[bringup] {child.label} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it")
            child.signal(signal.SIGKILL)
            child.proc.wait()
        child.close()


# -- watching the graph ----------------------------------------------------------------------------
class Watcher:
    """An rclpy node in this process reading the latched status topics of the learner and the actors."""

    def __init__(self, actor_fqns: list[str]):
        from hilserl.nodes.dds import configure_transport

        configure_transport()
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        from hilserl.names import STATUS_TOPIC
        from hilserl.nodes.qos import LATCHED
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(args=["bringup"], context=self.context)  # our argv holds launch arguments, not ROS ones
        self.node = rclpy.create_node("bringup", context=self.context)
        self.lock = threading.Lock()
        self.status: dict[str, dict] = {}
        for fqn in ["/learner", *actor_fqns]:
            self.node.create_subscription(String, STATUS_TOPIC.replace("~", fqn), lambda msg, f=fqn: self.on_status(f, msg),
                                          LATCHED)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.running = True
        self.thread = threading.Thread(target=self.spin, daemon=True)
        self.thread.start()

    def on_status(self, fqn: str, msg) -> None:
        try:
            status = json.loads(msg.data)
        except ValueError:
            return
        with self.lock:
            self.status[fqn] = status

    def spin(self) -> None:
        while self.running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def get(self, fqn: str) -> dict:
        with self.lock:
            return dict(self.status.get(fqn, {}))

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


class EpisodeCounter:
    """Turns actor status updates into one printed line per finished episode."""

    def __init__(self):
        self.seen: dict[str, int] = {}
        self.total = 0
        self.successes = 0

    def update(self, fqn: str, status: dict) -> list[str]:
        count = int(status.get("episodes") or 0)
        new = count - self.seen.get(fqn, 0)
        if new <= 0:
            return []
        self.seen[fqn] = count
        self.total += new
        last = status.get("last_episode") or {}
        self.successes += int(bool(last.get("success")))
        line = (f"[bringup] episode {self.total} done ({fqn.lstrip('/')} episode {last.get('episode')}): "
                f"success={bool(last.get('success'))} return={float(last.get('return', 0.0)):.2f} "
                f"steps={last.get('steps')} interventions={float(last.get('intervention_rate', 0.0)):.0%} "
                f"weights=v{last.get('weights_version')}")
        if new > 1:  # several ended between two status messages: only the newest is described
            line += f" (+{new - 1} more ended, not shown; successes may be undercounted)"
        return [line]


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    launch_values, rest = split_argv(argv)
    parser = argparse.ArgumentParser(
        prog="python -m hilserl bringup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="launch arguments (name:=value):\n" + "\n".join(
            f"  {a.name}:={a.default or repr('')}  {a.description}" for a in graph.LAUNCH_ARGUMENTS))
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help="stop after this many finished episodes, all actors together (0 = run until stopped)")
    parser.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S,
                        help="seconds to wait for the learner's first weights")
    args = parser.parse_args(rest)
    try:
        specs = graph.build_graph(graph.parse_launch_args(launch_values))
    except GraphError as err:
        print(f"bringup: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for spec in specs:
            print(shlex.join(command(spec)))
        return 0
    external = sorted({s.package for s in specs if s.package != graph.PACKAGE})
    if external and shutil.which("ros2") is None:
        print(f"bringup: {', '.join(external)} need a ROS 2 install (`ros2 run`): source /opt/ros/<distro>/setup.bash "
              "first, or pass rviz:=false", file=sys.stderr)
        return 2
    run_dir = Path(next(s.overrides["run_dir"] for s in specs if s.role == "learner"))
    return run(specs, run_dir, args.episodes, args.startup_timeout)


def run(specs: list[NodeSpec], run_dir: Path, episodes: int, startup_timeout: float) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    package_parent = str(Path(graph.__file__).resolve().parents[1])  # the hilserl this process imported
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    stop = threading.Event()
    reason = {"signal": None}

    def on_signal(signum, _frame):
        reason["signal"] = signal.Signals(signum).name
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    actors = [s for s in specs if s.role == "actor"]
    say(f"[bringup] run_dir {run_dir} (plots: python -m hilserl plot {run_dir})")
    watcher = Watcher([s.fqn for s in actors])
    children: list[Child] = []
    code = 0
    try:
        def start(spec: NodeSpec) -> None:
            children.append(Child(spec, command(spec), env, run_dir / "logs"))
            say(f"[bringup] started {spec.fqn} (pid {children[-1].proc.pid}): {shlex.join(command(spec))[:300]}")

        def dead() -> Child | None:
            return next((c for c in children if not c.alive()), None)

        for spec in specs:
            if spec.role != "actor":
                start(spec)
        deadline = time.monotonic() + startup_timeout
        while not stop.is_set() and int(watcher.get("/learner").get("weights_version") or 0) < 1:
            if (child := dead()) is not None:
                say(f"[bringup] {child.label} exited with code {child.proc.returncode} before the learner's "
                    f"first weights; see {run_dir / 'logs'}")
                return 1
            if time.monotonic() > deadline:
                say(f"[bringup] no weights from the learner within {startup_timeout:.0f} s "
                    f"(watching /learner/status); stopping")
                return 1
            time.sleep(0.1)
        if stop.is_set():
            return 0
        learner = watcher.get("/learner")
        say(f"[bringup] learner published weights v{learner['weights_version']} ({learner.get('digest', '')[:12]}); "
            f"starting {len(actors)} actor(s)")
        for spec in actors:
            start(spec)

        counter = EpisodeCounter()
        while not stop.is_set():
            for spec in actors:
                for line in counter.update(spec.fqn, watcher.get(spec.fqn)):
                    say(line)
            if episodes > 0 and counter.total >= episodes:
                rate = counter.successes / counter.total
                say(f"[bringup] {counter.total} episodes done, {counter.successes} successes ({rate:.0%}); stopping")
                break
            if (child := dead()) is not None:
                say(f"[bringup] {child.label} exited with code {child.proc.returncode}; stopping the rest")
                code = 1
                break
            time.sleep(0.1)
        if reason["signal"]:
            say(f"[bringup] {reason['signal']}: stopping")
        return code
    finally:
        stop_all(children)
        watcher.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        say("[bringup] all nodes stopped")
