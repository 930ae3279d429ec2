"""ament_python package `hilserl`: `colcon build` in a ROS 2 workspace, then `ros2 run hilserl <node>` and
`ros2 launch hilserl bringup.launch.py`. Python-only dependencies (torch, safetensors, genesis-world):
`pip install -r requirements.txt`."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "hilserl"
HERE = Path(__file__).resolve().parent
# One console script per `python -m hilserl` command; test/test_packaging.py keeps this in step.
SCRIPTS = ["learner", "actor", "sim", "teleop", "operator", "init_checkpoint", "infer", "pretrain", "bringup", "plot",
           "record_frames", "reward_classifier"]


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing `folder` (recursively) under share/hilserl/."""
    if not (HERE / folder).is_dir():
        return []
    entries = []
    for directory in sorted(p for p in (HERE / folder).rglob("*") if p.is_dir()) + [HERE / folder]:
        files = sorted(str(f.relative_to(HERE)) for f in directory.iterdir() if f.is_file())
        if files:
            entries.append((f"share/{PACKAGE}/{directory.relative_to(HERE)}", files))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("checkpoints"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="hilserl maintainers",
    maintainer_email="hilserl@example.com",
    description="Human-in-the-loop sample-efficient RL on ROS 2 arms",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {PACKAGE}.entry_points:{name}" for name in SCRIPTS]},
)
