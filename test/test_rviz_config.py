"""config/hilserl.rviz shows only what the graph publishes; the URDF and markers it displays are sound."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from hilserl import graph
from hilserl.nodes.robot_description import BASE_FRAME, mesh_paths, panda_urdf
from hilserl.robot import JOINTS
from rosutil import REPO, Probe, ros_env, unique_domain_id, wait_for

RVIZ = REPO / "config" / "hilserl.rviz"
# rviz_default_plugins classes the config may use (a misspelt class loads as an error display).
KNOWN_CLASSES = {"rviz_common/Displays", "rviz_default_plugins/Grid", "rviz_default_plugins/RobotModel",
                 "rviz_default_plugins/MarkerArray", "rviz_default_plugins/Image", "rviz_default_plugins/TF",
                 "rviz_default_plugins/Interact", "rviz_default_plugins/MoveCamera", "rviz_default_plugins/Select",
                 "rviz_default_plugins/FocusCamera", "rviz_default_plugins/Measure", "rviz_default_plugins/Orbit"}


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def rviz_topics(doc) -> set[str]:
    return {d[key]["Value"] for d in walk(doc) for key in ("Topic", "Description Topic")
            if isinstance(d.get(key), dict)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt")
    (path / "config.json").write_text('{"policy": {"policy": "drqv2"}}')  # the graph reads only this
    return str(path)


def test_rviz_names_only_topics_the_graph_publishes(checkpoint, tmp_path):
    doc = yaml.safe_load(RVIZ.read_text())
    topics = rviz_topics(doc)
    assert topics == {"/robot_description", "/camera/image_raw", "/sim/markers"}
    for num_actors in (1, 3):
        specs = graph.build_graph(graph.parse_launch_args({"checkpoint": checkpoint, "rviz": "true",
                                                           "num_actors": str(num_actors), "run_dir": str(tmp_path)}))
        rviz = next(s for s in specs if s.role == "rviz")
        published = graph.graph_topics(specs)
        seen = {graph.resolve_topic(t, rviz) for t in topics}  # after the launch's remappings for rviz2
        assert seen <= published, (num_actors, seen - published)
        if num_actors > 1:
            assert "/actor_0/camera/image_raw" in seen


def test_rviz_frame_classes_and_views():
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == BASE_FRAME
    links = {link.get("name") for link in ET.fromstring(panda_urdf()).iter("link")}
    assert BASE_FRAME in links
    classes = {d["Class"] for d in walk(doc) if "Class" in d and d["Class"]}
    assert classes <= KNOWN_CLASSES, classes - KNOWN_CLASSES
    displays = {d["Class"] for d in manager["Displays"] if d.get("Enabled")}
    assert {"rviz_default_plugins/RobotModel", "rviz_default_plugins/Image",
            "rviz_default_plugins/MarkerArray"} <= displays


def test_urdf_joints_match_the_sim_and_meshes_resolve():
    urdf = panda_urdf()
    root = ET.fromstring(urdf)  # well-formed
    joints = {j.get("name"): j.get("type") for j in root.iter("joint")}
    assert all(joints.get(j) in ("revolute", "prismatic") for j in JOINTS), joints
    assert "package://" not in urdf
    meshes = mesh_paths(urdf)
    assert meshes and all(p.is_absolute() and p.is_file() for p in meshes)
    printed = subprocess.run([sys.executable, "-m", "hilserl.nodes.robot_description"], capture_output=True,
                             text=True, cwd=REPO, timeout=60, check=True).stdout
    assert printed == urdf


def test_markers_show_target_cube_trail_and_interventions():
    from visualization_msgs.msg import Marker

    from hilserl.nodes.markers import HUMAN_COLOUR, POLICY_COLOUR, EndEffectorTrail, task_markers

    trail = EndEffectorTrail(maxlen=3)
    for i, human in enumerate([False, False, True, True]):  # the first point falls out of the trail
        trail.add((0.3 + 0.01 * i, 0.0, 0.4), human)
    array = task_markers(trail, target=(0.5, 0.1, 0.2), cube=(0.45, 0.0, 0.02), intervening=True)
    by_ns = {m.ns: m for m in array.markers}
    assert set(by_ns) == {"target", "cube", "end_effector", "trail", "intervention"}
    assert all(m.header.frame_id == BASE_FRAME for m in array.markers)
    assert by_ns["target"].action == Marker.ADD and by_ns["target"].pose.position.x == pytest.approx(0.5)
    assert by_ns["cube"].type == Marker.CUBE
    line = by_ns["trail"]
    assert line.type == Marker.LINE_STRIP and len(line.points) == 3 == len(line.colors)
    assert [round(c.r, 2) for c in line.colors] == [POLICY_COLOUR[0], HUMAN_COLOUR[0], HUMAN_COLOUR[0]]
    assert by_ns["intervention"].text == "HUMAN" and by_ns["intervention"].action == Marker.ADD

    trail.clear()  # a new episode, policy driving, a task without a cube
    by_ns = {m.ns: m for m in task_markers(trail, target=(0.5, 0.1, 0.2)).markers}
    assert by_ns["cube"].action == by_ns["trail"].action == by_ns["intervention"].action == Marker.DELETE


@pytest.mark.skipif(importlib.util.find_spec("hilserl.sim.task") is None,
                    reason="hilserl.sim.task (the Genesis task) is not in the tree yet")
def test_running_sim_publishes_what_rviz_shows_and_its_health(tmp_path):
    """A real sim process: the topics graph.py documents for it exist, markers arrive, /diagnostics reads."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from visualization_msgs.msg import MarkerArray

    domain = unique_domain_id()
    probe = Probe(domain)
    log = open(tmp_path / "sim.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hilserl", "sim", "--ros-args", "--params-file",  # as bringup does
                             str(graph.config_file("sim.yaml"))], env=ros_env(domain), cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        markers = probe.subscribe(MarkerArray, "/sim/markers", qos_profile_sensor_data)
        spec = graph.NodeSpec("hilserl", "sim", "sim", role="sim")
        expected = {graph.resolve_topic(t, spec) for t in graph.PUBLISHED_TOPICS["sim"]}
        def topics_up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"sim exited with {proc.returncode}:\n{(tmp_path / 'sim.log').read_text()[-3000:]}")
            return expected <= {n for n, _ in probe.node.get_topic_names_and_types()}
        wait_for(topics_up, 240, f"the sim's topics {sorted(expected)}")
        wait_for(lambda: markers, 60, "a MarkerArray on /sim/markers")
        latest = {m.ns: m for m in probe.messages("/sim/markers")[-1].markers}
        assert all(m.header.frame_id == BASE_FRAME for m in latest.values())
        assert {"target", "cube", "end_effector"} <= {ns for ns, m in latest.items() if m.action == m.ADD}

        diagnostics = probe.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=20))
        sim = wait_for(lambda: next((s for _, a in list(diagnostics) for s in a.status if s.name == "sim"), None),
                       30, "the sim's diagnostics")
        values = {kv.key: kv.value for kv in sim.values}
        assert sim.level == bytes([0]) and values["mode"] == "lockstep" and "real_time_factor" in values
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        probe.close()
