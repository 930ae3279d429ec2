"""The Panda URDF for robot_state_publisher and RViz, taken from the Genesis install the sim uses.

Genesis ships `assets/urdf/panda_bullet/panda.urdf` with `package://meshes/...` mesh paths that name no
ROS package; RViz could not resolve them. `panda_urdf()` rewrites them to absolute `file://` paths, so the
description works without a ROS package for the meshes. The joint names are the ones the sim publishes
on /joint_states (hilserl.robot.JOINTS); `panda_finger_joint2` mimics `panda_finger_joint1`, which
robot_state_publisher resolves itself.

    python -m hilserl.nodes.robot_description > panda.urdf      # the URDF, e.g. for a hand-run RViz
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from hilserl.robot import JOINTS

URDF_RELATIVE = Path("assets", "urdf", "panda_bullet", "panda.urdf")
BASE_FRAME = "panda_link0"  # the URDF's root link: RViz's fixed frame and the markers' frame


def genesis_urdf_path() -> Path:
    """Where Genesis keeps the Panda URDF, found without importing Genesis (that takes seconds)."""
    spec = importlib.util.find_spec("genesis")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("genesis-world is not installed: the Panda URDF comes from its assets "
                                "(pip install -r requirements.txt)")
    path = Path(spec.origin).parent / URDF_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the Genesis install; reinstall genesis-world")
    return path


def panda_urdf(path: Path | None = None) -> str:
    """The URDF text with every mesh as an absolute file:// URI; checks the joints match JOINTS."""
    path = Path(path) if path else genesis_urdf_path()
    text = path.read_text()
    base = path.parent.resolve()
    text = re.sub(r'filename="package://([^"]+)"', lambda m: f'filename="file://{base / m.group(1)}"', text)
    declared = set(re.findall(r'<joint\s+name="([^"]+)"', text))
    missing = [j for j in JOINTS if j not in declared]
    if missing:
        raise ValueError(f"{path} has no joint(s) {missing}; the sim publishes {list(JOINTS)} on /joint_states")
    return text


def mesh_paths(urdf: str) -> list[Path]:
    """Local mesh files a URDF names (for checking that RViz will find them)."""
    return [Path(p) for p in re.findall(r'filename="file://([^"]+)"', urdf)]


if __name__ == "__main__":
    sys.stdout.write(panda_urdf())
