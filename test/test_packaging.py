"""The ament_python package: package.xml, setup.py and an install done the way colcon does it.

colcon builds an ament_python package with `setup.py egg_info build install --single-version-externally-
managed` into install/<pkg>; this test runs exactly that into a temporary prefix and then uses the
installed console scripts with only that prefix on AMENT_PREFIX_PATH, as `ros2 run` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hilserl.__main__ import COMMANDS
from rosutil import REPO

ROS_DEPENDENCIES = {"rclpy", "std_msgs", "sensor_msgs", "std_srvs", "trajectory_msgs", "diagnostic_msgs",
                    "visualization_msgs", "launch_ros", "cv_bridge", "robot_state_publisher"}


def test_package_xml_is_format_3_ament_python_with_the_ros_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "hilserl"
    assert root.findtext("export/build_type") == "ament_python"
    assert root.findtext("buildtool_depend") == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}
    assert ROS_DEPENDENCIES <= exec_deps, ROS_DEPENDENCIES - exec_deps
    assert root.findtext("version") == __import__("hilserl").__version__
    assert (REPO / "resource" / "hilserl").is_file()


def installed_prefix(tmp: Path) -> Path:
    build, prefix = tmp / "build", tmp / "install"
    build.mkdir()
    result = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(build),
                             "build", "--build-base", str(build / "build"),
                             "install", "--prefix", str(prefix), "--record", str(build / "install.log"),
                             "--single-version-externally-managed"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return prefix


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    return installed_prefix(tmp_path_factory.mktemp("colcon"))


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def test_install_lays_out_share_and_lib_like_colcon(prefix):
    share = prefix / "share" / "hilserl"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "hilserl").is_file()
    for path in ("package.xml", "launch/bringup.launch.py", "config/learner.yaml", "config/actor.yaml",
                 "config/sim.yaml", "config/hilserl.rviz"):
        assert (share / path).is_file(), path
    if (REPO / "checkpoints").is_dir():  # shipped checkpoints travel with the package
        for f in (REPO / "checkpoints").rglob("*"):
            if f.is_file():
                assert (share / f.relative_to(REPO)).is_file(), f
    scripts = {p.name for p in (prefix / "lib" / "hilserl").iterdir()}
    assert scripts == {c.replace("-", "_") for c in COMMANDS}, "one console script per `python -m hilserl` command"
    assert (site_packages(prefix) / "hilserl" / "graph.py").is_file()


def installed_env(prefix: Path) -> dict[str, str]:
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(site_packages(prefix)))
    return env


def test_installed_scripts_run_the_same_main_and_find_their_share(prefix, tmp_path):
    env = installed_env(prefix)
    result = subprocess.run([str(prefix / "lib" / "hilserl" / "plot"), "--help"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and "usage: python -m hilserl plot" in result.stdout

    checkpoint = tmp_path / "ckpt"
    (checkpoint).mkdir()
    (checkpoint / "config.json").write_text('{"policy": {"policy": "drqv2"}}')
    result = subprocess.run([str(prefix / "lib" / "hilserl" / "bringup"), "--dry-run", f"checkpoint:={checkpoint}",
                             f"run_dir:={tmp_path / 'run'}"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    share_config = prefix / "share" / "hilserl" / "config"
    assert f"--params-file {share_config / 'learner.yaml'}" in result.stdout  # the installed copy, not the source tree
    assert str(REPO / "config") not in result.stdout

    # Without the workspace sourced the installed package says what to do.
    env.pop("AMENT_PREFIX_PATH")
    result = subprocess.run([str(prefix / "lib" / "hilserl" / "bringup"), "--dry-run", f"checkpoint:={checkpoint}"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and "source install/setup.bash" in result.stderr


def test_entry_points_pass_argv_to_the_command(monkeypatch, capsys):
    from hilserl import entry_points

    for command in COMMANDS:
        assert callable(getattr(entry_points, command.replace("-", "_"))), command
    monkeypatch.setattr(sys, "argv", ["plot", "/nonexistent/run"])
    assert entry_points.plot() == 2
    assert "/nonexistent/run is not a directory" in capsys.readouterr().err
