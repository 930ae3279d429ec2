"""Process plumbing shared by every node: transport set-up, init, spin, clean shutdown."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from hilserl.nodes.dds import configure_transport


def run_node(make_node: Callable[[list[str]], object], argv: list[str]) -> int:
    """`python -m hilserl <node> [--ros-args ...]`: build the node, spin until SIGINT/SIGTERM."""
    configure_transport()  # before the first participant exists; respects a user's own Fast DDS settings
    import rclpy
    from rclpy.executors import ExternalShutdownException

    args = [sys.argv[0], *argv]
    rclpy.init(args=args)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = None
    try:
        node = make_node(rclpy.utilities.remove_ros_args(args)[1:])
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def env_flag(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")
