"""RViz markers for the task: the target, the cube, the end-effector and its trail, interventions in red.

The sim node owns an `EndEffectorTrail`, adds the end-effector position every control step, and publishes
`task_markers(...)` on `sim/markers` (visualization_msgs/MarkerArray). Trail segments driven by a person
(an intervention) are red, the policy's blue, and a text "HUMAN" floats over the gripper while a person
drives, so intervention periods stay visible in the trail after they end. Positions are in the robot
base frame (`panda_link0`, the URDF root robot_state_publisher publishes), in metres.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from hilserl.nodes.robot_description import BASE_FRAME

TRAIL_POINTS = 300  # 30 s at 10 Hz
TARGET_DIAMETER = 0.04
CUBE_SIZE = 0.04
EE_DIAMETER = 0.025
TRAIL_WIDTH = 0.006

POLICY_COLOUR = (0.15, 0.45, 1.0, 1.0)
HUMAN_COLOUR = (1.0, 0.15, 0.1, 1.0)
TARGET_COLOUR = (0.1, 0.85, 0.2, 0.6)
CUBE_COLOUR = (1.0, 0.6, 0.0, 1.0)

Vec3 = Sequence[float]


class EndEffectorTrail:
    """The last `maxlen` end-effector positions, each with who was driving when it was reached."""

    def __init__(self, maxlen: int = TRAIL_POINTS):
        self.points: deque[tuple[tuple[float, float, float], bool]] = deque(maxlen=maxlen)

    def add(self, position: Vec3, intervening: bool) -> None:
        x, y, z = (float(v) for v in position)
        self.points.append(((x, y, z), bool(intervening)))

    def clear(self) -> None:
        """A new episode starts a new trail."""
        self.points.clear()


def colour(rgba: tuple[float, float, float, float]) -> ColorRGBA:
    return ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])


def _marker(ns: str, kind: int, frame_id: str, stamp) -> Marker:
    m = Marker(ns=ns, id=0, type=kind, action=Marker.ADD)
    m.header.frame_id = frame_id
    if stamp is not None:
        m.header.stamp = stamp
    m.pose.orientation.w = 1.0
    return m


def _deleted(ns: str, frame_id: str, stamp) -> Marker:
    m = _marker(ns, Marker.SPHERE, frame_id, stamp)
    m.action = Marker.DELETE
    return m


def _place(m: Marker, position: Vec3) -> None:
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in position)


def task_markers(trail: EndEffectorTrail, target: Vec3 | None = None, cube: Vec3 | None = None,
                 cube_orientation: Sequence[float] | None = None, intervening: bool = False,
                 frame_id: str = BASE_FRAME, stamp=None) -> MarkerArray:
    """One MarkerArray with namespaces target, cube, end_effector, trail and intervention.

    A missing target or cube (a task without one) deletes its marker, so nothing stale stays on screen.
    `cube_orientation` is a quaternion (x, y, z, w).
    """
    markers = []
    if target is not None:
        m = _marker("target", Marker.SPHERE, frame_id, stamp)
        _place(m, target)
        m.scale.x = m.scale.y = m.scale.z = TARGET_DIAMETER
        m.color = colour(TARGET_COLOUR)
        markers.append(m)
    else:
        markers.append(_deleted("target", frame_id, stamp))
    if cube is not None:
        m = _marker("cube", Marker.CUBE, frame_id, stamp)
        _place(m, cube)
        if cube_orientation is not None:
            o = m.pose.orientation
            o.x, o.y, o.z, o.w = (float(v) for v in cube_orientation)
        m.scale.x = m.scale.y = m.scale.z = CUBE_SIZE
        m.color = colour(CUBE_COLOUR)
        markers.append(m)
    else:
        markers.append(_deleted("cube", frame_id, stamp))

    if trail.points:
        latest = trail.points[-1][0]
        m = _marker("end_effector", Marker.SPHERE, frame_id, stamp)
        _place(m, latest)
        m.scale.x = m.scale.y = m.scale.z = EE_DIAMETER
        m.color = colour(HUMAN_COLOUR if intervening else POLICY_COLOUR)
        markers.append(m)
    else:
        markers.append(_deleted("end_effector", frame_id, stamp))

    if len(trail.points) >= 2:  # a line strip needs two points
        m = _marker("trail", Marker.LINE_STRIP, frame_id, stamp)
        m.scale.x = TRAIL_WIDTH
        m.points = [Point(x=p[0], y=p[1], z=p[2]) for p, _ in trail.points]
        m.colors = [colour(HUMAN_COLOUR if human else POLICY_COLOUR) for _, human in trail.points]
        markers.append(m)
    else:
        markers.append(_deleted("trail", frame_id, stamp))

    if intervening and trail.points:
        m = _marker("intervention", Marker.TEXT_VIEW_FACING, frame_id, stamp)
        x, y, z = trail.points[-1][0]
        _place(m, (x, y, z + 0.08))
        m.scale.z = 0.05  # text height
        m.color = colour(HUMAN_COLOUR)
        m.text = "HUMAN"
        markers.append(m)
    else:
        markers.append(_deleted("intervention", frame_id, stamp))
    return MarkerArray(markers=markers)
