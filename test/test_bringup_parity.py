"""`ros2 launch hilserl bringup.launch.py` and `python -m hilserl bringup` start the same graph.

launch/launch_ros are not installable from PyPI, so the launch file runs here against small stand-ins
for the six names it imports (LaunchDescription, DeclareLaunchArgument, OpaqueFunction,
LaunchConfiguration, launch_ros Node and ParameterValue). They record what the file asks for; the test
compares that with the commands `python -m hilserl bringup --dry-run` prints for the same arguments.
What this does not check: that launch_ros turns a Node into the command line we assume (that is its
documented behaviour).
The last two tests run the bringup for real: nodes, namespaces, parameter files and remappings as rcl
applies them, the stop after N episodes, and SIGTERM.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from hilserl import graph
from rosutil import REPO, init_checkpoint, Probe, ros_env, unique_domain_id, wait_for

LAUNCH_FILE = REPO / "launch" / "bringup.launch.py"
# ExecuteProcess options the launch file may pass to Node besides the Node-specific ones.
PROCESS_OPTIONS = {"output", "emulate_tty", "respawn", "respawn_delay", "sigterm_timeout", "sigkill_timeout"}


# -- stand-ins for launch / launch_ros -------------------------------------------------------------
class Recorded:
    def __init__(self, kind: str, **kwargs):
        self.kind, self.kwargs = kind, kwargs


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type


def stand_in_modules() -> dict[str, types.ModuleType]:
    launch, actions, substitutions = (types.ModuleType(n) for n in ("launch", "launch.actions", "launch.substitutions"))
    launch_ros, ros_actions = types.ModuleType("launch_ros"), types.ModuleType("launch_ros.actions")
    descriptions = types.ModuleType("launch_ros.parameter_descriptions")

    class LaunchDescription(Recorded):
        def __init__(self, entities=None):
            super().__init__("LaunchDescription", entities=list(entities or []))

    class DeclareLaunchArgument(Recorded):
        def __init__(self, name, *, default_value=None, description=None, choices=None):
            super().__init__("DeclareLaunchArgument", name=name, default_value=default_value, description=description)

    class OpaqueFunction(Recorded):
        def __init__(self, *, function, args=None, kwargs=None):
            super().__init__("OpaqueFunction", function=function)

    class LaunchConfiguration:
        def __init__(self, variable_name, *, default=None):
            self.name = variable_name

        def perform(self, context):
            return context.launch_configurations[self.name]

    class Node(Recorded):
        def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None, parameters=None,
                     remappings=None, ros_arguments=None, arguments=None, **process_options):
            unknown = set(process_options) - PROCESS_OPTIONS
            if unknown:
                raise TypeError(f"launch_ros Node got unexpected options {unknown}")
            super().__init__("Node", executable=executable, package=package, name=name, namespace=namespace,
                             parameters=parameters, remappings=remappings, ros_arguments=ros_arguments,
                             arguments=arguments)

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument, actions.OpaqueFunction = DeclareLaunchArgument, OpaqueFunction
    substitutions.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = Node
    descriptions.ParameterValue = ParameterValue
    launch.actions, launch.substitutions, launch_ros.actions = actions, substitutions, ros_actions
    launch_ros.parameter_descriptions = descriptions
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions,
            "launch_ros.parameter_descriptions": descriptions}


@pytest.fixture
def launch_file(monkeypatch):
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("hilserl_bringup_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_nodes(launch_file, given: dict[str, str]) -> list[dict]:
    """Run generate_launch_description() and its OpaqueFunction as `ros2 launch ... given` would."""
    description = launch_file.generate_launch_description()
    declared = [e for e in description.kwargs["entities"] if e.kind == "DeclareLaunchArgument"]
    opaque = [e for e in description.kwargs["entities"] if e.kind == "OpaqueFunction"]
    assert len(opaque) == 1
    configurations = {e.kwargs["name"]: e.kwargs["default_value"] for e in declared}
    assert set(given) <= set(configurations), "a test argument the launch file does not declare"
    context = types.SimpleNamespace(launch_configurations=configurations | given)
    nodes = opaque[0].kwargs["function"](context)
    assert all(n.kind == "Node" for n in nodes)
    return [normalise_launch_node(n.kwargs) for n in nodes]


def normalise_launch_node(kw: dict) -> dict:
    files, values = [], {}
    for entry in kw["parameters"] or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if isinstance(value, ParameterValue):
                    assert value.value_type is type(value.value), (key, value.value_type)
                    value = value.value
                else:  # launch_ros YAML-parses a bare string: a URDF, or a path named 'true', would change
                    assert not isinstance(value, str), f"{key}: wrap strings in ParameterValue(value_type=str)"
                values[key] = value
        else:
            files.append(str(entry))
    assert not kw["ros_arguments"], "bringup would not pass ros_arguments; keep them out of the launch file"
    return {"package": kw["package"], "executable": kw["executable"], "name": kw["name"],
            "namespace": (kw["namespace"] or "").strip("/"), "param_files": files, "params": values,
            "remappings": [tuple(r) for r in kw["remappings"] or []], "arguments": list(kw["arguments"] or [])}


# -- the bringup's commands ------------------------------------------------------------------------
def bringup_nodes(given: dict[str, str]) -> list[dict]:
    argv = [sys.executable, "-m", "hilserl", "bringup", "--dry-run", *(f"{k}:={v}" for k, v in given.items())]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=ros_env(0), timeout=120)
    assert result.returncode == 0, result.stderr
    return [parse_command(shlex.split(line)) for line in result.stdout.splitlines()]


def parse_command(argv: list[str]) -> dict:
    """A node command line read the way rcl reads it."""
    if argv[1:3] == ["-m", "hilserl"]:
        package, executable, rest = "hilserl", argv[3], argv[4:]
    else:
        assert argv[:2] == ["ros2", "run"], argv[:4]
        package, executable, rest = argv[2], argv[3], argv[4:]
    split = rest.index("--ros-args")
    node = {"package": package, "executable": executable, "name": executable, "namespace": "", "param_files": [],
            "params": {}, "remappings": [], "arguments": rest[:split]}
    ros = iter(rest[split + 1:])
    for flag in ros:
        value = next(ros)
        if flag == "--params-file":
            node["param_files"].append(value)
        elif flag == "-p":
            key, text = value.split(":=", 1)
            node["params"][key] = yaml.safe_load(text)
        elif flag == "-r" and value.startswith("__node:="):
            node["name"] = value.split(":=", 1)[1]
        elif flag == "-r" and value.startswith("__ns:="):
            node["namespace"] = value.split(":=", 1)[1].strip("/")
        elif flag == "-r":
            node["remappings"].append(tuple(value.split(":=", 1)))
        else:
            raise AssertionError(f"unexpected ROS argument {flag} {value}")
    return node


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return init_checkpoint(tmp_path_factory.mktemp("ckpt"), "drqv2", "--seed", "3")["path"]


# -- parity ----------------------------------------------------------------------------------------
def test_launch_file_declares_exactly_the_graph_arguments(launch_file):
    description = launch_file.generate_launch_description()
    declared = {e.kwargs["name"]: e.kwargs["default_value"] for e in description.kwargs["entities"]
                if e.kind == "DeclareLaunchArgument"}
    assert declared == {a.name: a.default for a in graph.LAUNCH_ARGUMENTS}
    assert {"sim", "checkpoint", "num_actors", "policy", "rviz", "use_sim_time"} <= set(declared)


@pytest.mark.parametrize("given", [
    {},
    {"num_actors": "3"},
    {"sim": "false", "num_actors": "2", "use_sim_time": "true"},
    {"rviz": "true", "policy": "drqv2"},
    {"rviz": "true", "num_actors": "2", "sim": "true"},
    {"sim": "false", "rviz": "true", "params_file": "{params}"},
    {"task": "lift", "num_actors": "2"},
], ids=["default", "three-sim-actors", "hardware-two-actors", "rviz", "rviz-two-actors", "hardware-params-file",
        "lift-two-actors"])
def test_launch_and_bringup_start_the_same_nodes(launch_file, checkpoint, tmp_path, given):
    params = tmp_path / "site.yaml"
    params.write_text("/**/actor:\n  ros__parameters:\n    control_hz: 15.0\n")
    given = {k: v.format(params=params) for k, v in given.items()}
    given |= {"checkpoint": checkpoint, "run_dir": str(tmp_path / "run")}
    from_launch, from_bringup = launch_nodes(launch_file, given), bringup_nodes(given)
    assert [n["name"] for n in from_launch] == [n["name"] for n in from_bringup]
    for a, b in zip(from_launch, from_bringup):
        assert a == b, f"{a['namespace']}/{a['name']} differs"
    assert len(from_launch) == len(from_bringup)

    # And the graph is the one asked for.
    num_actors = int(given.get("num_actors", "1"))
    actors = [n for n in from_launch if n["executable"] == "actor"]
    sims = [n for n in from_launch if n["executable"] == "sim"]
    assert len(actors) == num_actors and len(sims) == (num_actors if given.get("sim", "true") == "true" else 0)
    expected_ns = [""] if num_actors == 1 else [f"actor_{i}" for i in range(num_actors)]
    assert [a["namespace"] for a in actors] == expected_ns and all(a["name"] == "actor" for a in actors)
    learner = next(n for n in from_launch if n["executable"] == "learner")
    assert learner["params"]["checkpoint"] == checkpoint and learner["namespace"] == ""
    assert all(s["params"]["task"] == given.get("task", "reach") for s in sims)
    for node in actors + sims:
        files = [Path(f).name for f in node["param_files"]]
        assert files[0] in ("actor.yaml", "sim.yaml")
        if "params_file" in given:
            assert node["param_files"][-1] == str(params)
        if num_actors > 1:
            assert ("/joint_states", "joint_states") in node["remappings"]
            assert ("/forward_position_controller/commands", "forward_position_controller/commands") in node["remappings"]
    if given.get("rviz") == "true":
        rviz = next(n for n in from_launch if n["package"] == "rviz2")
        assert rviz["arguments"] == ["-d", str(graph.config_file("hilserl.rviz"))]
        has_rsp = any(n["package"] == "robot_state_publisher" for n in from_launch)
        assert has_rsp == (given.get("sim", "true") == "true")
    if given.get("use_sim_time") == "true":
        assert all(n["params"]["use_sim_time"] is True for n in from_launch if n["executable"] != "sim")


EE_CHECKPOINT_CONFIG = '{"policy": {"policy": "drqv2", "action_space": "ee_delta"}}'


def test_task_picks_the_sim_task_the_checkpoint_and_the_reward_classifier(monkeypatch, tmp_path):
    package = tmp_path / "share"
    shutil.copytree(REPO / "config", package / "config")
    for name in ("lift", "lift_reward", "reach"):
        (package / "checkpoints" / name).mkdir(parents=True)
    for name in ("lift", "reach"):
        (package / "checkpoints" / name / "config.json").write_text(EE_CHECKPOINT_CONFIG)
    (package / "checkpoints" / "lift_reward" / "config.json").write_text("{}")
    monkeypatch.setattr(graph, "package_root", lambda: package)

    def nodes(task: str) -> dict[str, graph.NodeSpec]:
        args = graph.parse_launch_args({"task": task, "run_dir": str(tmp_path / "run")})
        return {spec.role: spec for spec in graph.build_graph(args)}
    lift = nodes("lift")
    assert lift["sim"].overrides["task"] == "lift"
    assert lift["learner"].overrides["checkpoint"] == str((package / "checkpoints" / "lift").resolve())
    assert lift["actor"].overrides["reward_classifier"] == str(package / "checkpoints" / "lift_reward")
    reach = nodes("reach")  # no classifier shipped for reach: the sim's reward
    assert reach["sim"].overrides["task"] == "reach" and "reward_classifier" not in reach["actor"].overrides
    with pytest.raises(graph.GraphError, match="task:='stack'"):
        graph.parse_launch_args({"task": "stack"})


def test_in_sim_the_cameras_follow_the_checkpoint(monkeypatch, tmp_path):
    package = tmp_path / "share"
    shutil.copytree(REPO / "config", package / "config")
    (package / "checkpoints" / "lift").mkdir(parents=True)
    (package / "checkpoints" / "lift" / "config.json").write_text(
        '{"policy": {"policy": "drqv2", "action_space": "ee_delta", "num_cameras": 2}}')
    monkeypatch.setattr(graph, "package_root", lambda: package)

    def nodes(**given: str) -> dict[str, graph.NodeSpec]:
        args = graph.parse_launch_args({"task": "lift", "run_dir": str(tmp_path / "run")} | given)
        return {spec.role: spec for spec in graph.build_graph(args)}
    sim = nodes()
    assert sim["sim"].overrides["num_cameras"] == 2
    assert sim["actor"].overrides["image_topics"] == ["camera/image_raw", "camera_1/image_raw"]
    real = nodes(sim="false")  # a real arm's camera topics are its params_file's
    assert "sim" not in real and "image_topics" not in real["actor"].overrides


def test_bad_arguments_fail_before_anything_starts(checkpoint, tmp_path):
    cases = {"num_actors:=0": "at least one actor", "sim:=maybe": "not a boolean", "policy:=ppo": "use one of",
             "policy:=sac": "holds a drqv2 policy", "colour:=red": "unknown launch argument"}
    for arg, phrase in cases.items():
        result = subprocess.run([sys.executable, "-m", "hilserl", "bringup", "--dry-run", f"checkpoint:={checkpoint}", arg],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
        assert result.returncode == 2 and phrase in result.stderr, (arg, result.stderr)
    missing = tmp_path / "nope"
    result = subprocess.run([sys.executable, "-m", "hilserl", "bringup", "--dry-run", f"checkpoint:={missing}"],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and "init-checkpoint" in result.stderr and str(missing) in result.stderr


def test_config_files_are_ros_parameter_files_for_the_graph_nodes():
    for name, nodes in {"learner.yaml": {"learner"}, "actor.yaml": {"actor"}, "sim.yaml": {"sim", "actor"}}.items():
        doc = yaml.safe_load(graph.config_file(name).read_text())
        assert {key.removeprefix("/**/") for key in doc} == nodes, name
        for key, section in doc.items():
            assert set(section) == {"ros__parameters"} and section["ros__parameters"], (name, key)
    sim = yaml.safe_load(graph.config_file("sim.yaml").read_text())
    assert sim["/**/sim"]["ros__parameters"]["lockstep"] == sim["/**/actor"]["ros__parameters"]["lockstep"]


# -- the bringup for real --------------------------------------------------------------------------
STARTUP = 120.0


class Bringup:
    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self.log_file = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "hilserl", "bringup", *args], env=env, cwd=REPO,
                                     stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.name = "bringup"

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def child_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"\[bringup\] started \S+ \(pid (\d+)\)", self.log())]

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log_file.close()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def publish_sensors(probe: Probe, namespaces: list[str]):
    """A camera and joint_states per arm, like a robot driver would, so the actors can act."""
    from sensor_msgs.msg import Image, JointState

    from hilserl.nodes.image_conv import rgb_to_image_msg
    from hilserl.robot import HOME, JOINTS

    node = probe.node
    image, joints = Image(), JointState(name=list(JOINTS), position=list(HOME))
    rgb_to_image_msg(np.random.default_rng(0).integers(0, 256, (84, 84, 3), dtype=np.uint8), image)
    pubs = [(node.create_publisher(Image, f"{ns}/camera/image_raw", 10),
             node.create_publisher(JointState, f"{ns}/joint_states", 10)) for ns in namespaces]

    def tick():
        image.header.stamp = joints.header.stamp = node.get_clock().now().to_msg()
        for image_pub, joint_pub in pubs:
            image_pub.publish(image)
            joint_pub.publish(joints)
    return node.create_timer(0.05, tick)


def test_bringup_two_actors_runs_episodes_then_stops_everything(checkpoint, tmp_path):
    """Hardware mode, two arms: namespaces, remappings and parameter files as rcl applies them."""
    from rcl_interfaces.msg import Log
    from rclpy.parameter_client import AsyncParameterClient
    from std_msgs.msg import Float64MultiArray

    domain = unique_domain_id()
    params = tmp_path / "site.yaml"  # short episodes: the actors end one every 4 steps
    params.write_text("/**/actor:\n  ros__parameters:\n    max_episode_steps: 4\n    control_hz: 20.0\n")
    run_dir = tmp_path / "run"
    probe = Probe(domain)
    bringup = Bringup([f"checkpoint:={checkpoint}", "sim:=false", "num_actors:=2", f"params_file:={params}",
                       f"run_dir:={run_dir}", "--episodes", "30"], ros_env(domain), tmp_path / "bringup.log")
    commands = {i: probe.subscribe(Float64MultiArray, f"/actor_{i}/forward_position_controller/commands", 10)
                for i in (0, 1)}
    rosout = probe.subscribe(Log, "/rosout", 1000)
    timers = []
    try:
        wait_for(lambda: "starting 2 actor(s)" in bringup.log(), STARTUP, "the learner's weights", [bringup])
        # Every topic graph.py says these nodes publish exists under the name it computes.
        specs = graph.build_graph(graph.parse_launch_args({"checkpoint": checkpoint, "sim": "false",
                                                           "num_actors": "2", "run_dir": str(run_dir)}))
        expected = {graph.resolve_topic(t, s) for s in specs for t in graph.PUBLISHED_TOPICS[s.role]
                    if t != "/diagnostics"}  # /diagnostics: test_diagnostics.py
        assert "/actor_1/forward_position_controller/commands" in expected
        wait_for(lambda: expected <= {n for n, _ in probe.node.get_topic_names_and_types()}, STARTUP,
                 f"topics {sorted(expected)}", [bringup])
        client = AsyncParameterClient(probe.node, "/actor_1/actor")
        assert client.wait_for_services(timeout_sec=30)
        future = client.get_parameters(["max_episode_steps", "control_hz", "seed", "lockstep", "image_topics"])
        values = wait_for(lambda: future.done() and future.result(), 30, "actor_1's parameters")
        got = [v for v in values.values]
        assert got[0].integer_value == 4 and got[1].double_value == 20.0  # params_file, applied last
        assert got[2].integer_value == 1 and got[3].bool_value is False  # override; config/actor.yaml
        assert list(got[4].string_array_value) == ["camera/image_raw"]
        # actor_1's arm first, actor_0's once actor_1 commands its own: both take part before the stop.
        timers.append(publish_sensors(probe, ["/actor_1"]))
        wait_for(lambda: commands[1], STARTUP, "actor_1 commanding /actor_1/forward_position_controller/commands",
                 [bringup])
        timers.append(publish_sensors(probe, ["/actor_0"]))
        wait_for(lambda: commands[0], STARTUP, "actor_0 commanding before the episodes run out", [bringup])
        bringup.proc.wait(timeout=STARTUP)
        # The learner's close() ran before ROS shut down: its last words reached /rosout.
        wait_for(lambda: any(m.name == "learner" and "training state saved" in m.msg for _, m in rosout), 10,
                 "the learner's shutdown message on /rosout")
    finally:
        for timer in timers:
            probe.node.destroy_timer(timer)
        bringup.stop()
        probe.close()
    log = bringup.log()
    assert bringup.proc.returncode == 0, log[-3000:]
    assert commands[0] and commands[1], "each actor commands only its own arm's remapped topic"
    finished = re.findall(r"\[bringup\] episode (\d+) done \((actor_\d)/actor episode \d+\): success=(True|False)", log)
    assert finished and int(finished[-1][0]) >= 30, log[-3000:]
    assert re.search(r"\[bringup\] \d+ episodes done, \d+ successes", log)
    assert "[actor_1/actor]" in log and "[learner]" in log  # prefixed node output
    pids = bringup.child_pids()
    assert len(pids) == 3 and all(gone(p) for p in pids)
    assert {p.name for p in (run_dir / "logs").iterdir()} == {"learner.log", "actor_0.actor.log", "actor_1.actor.log"}

    # Each actor's finished episodes landed in its metrics, and the run plots.
    for actor in {a for _, a, _ in finished}:
        csv = run_dir / actor / "actor" / "metrics.csv"
        assert csv.is_file(), f"{csv} missing: the actor's metrics wiring (hilserl/nodes/diagnostics.py docstring)"
        rows = [line for line in csv.read_text().splitlines() if ",episode/success," in line]
        assert len(rows) >= sum(a == actor for _, a, _ in finished)
    plotted = subprocess.run([sys.executable, "-m", "hilserl", "plot", str(run_dir)], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
    assert plotted.returncode == 0 and (run_dir / "plots" / "success_rate.png").is_file(), plotted.stderr


def test_bringup_stops_all_nodes_on_sigterm(checkpoint, tmp_path):
    domain = unique_domain_id()
    bringup = Bringup([f"checkpoint:={checkpoint}", "sim:=false", f"run_dir:={tmp_path / 'run'}", "--episodes", "0"],
                      ros_env(domain), tmp_path / "bringup.log")
    try:
        wait_for(lambda: "starting 1 actor(s)" in bringup.log() and "[actor]" in bringup.log(), STARTUP,
                 "the actor to start", [bringup])
        pids = bringup.child_pids()
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        os.kill(bringup.proc.pid, signal.SIGTERM)
        bringup.proc.wait(timeout=30)
    finally:
        bringup.stop()
    log = bringup.log()
    assert bringup.proc.returncode == 0 and "SIGTERM: stopping" in log and "all nodes stopped" in log, log[-2000:]
    assert all(gone(p) for p in pids)
