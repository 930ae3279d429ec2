"""Process plumbing shared by every node: transport set-up, init, spin, clean shutdown."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from hilserl.nodes.dds import configure_transport


def run_node(make_node: Callable[[list[str]], object], argv: list[str]) -> int:
    """`python -m hilserl <node> [--ros-args ...]`: build the node, spin until SIGINT/SIGTERM."""
    configure_transport()  # before the first participant exists; respects a user's own Fast DDS settings
    keep_large_buffers()
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


def keep_large_buffers() -> None:
    """Let glibc reuse freed multi-megabyte buffers instead of returning them to the kernel.

    Every weights message passes through several 12 MB buffers (rclpy, Fast DDS, the decoder). By default
    glibc maps each one fresh and unmaps it on free, so every copy also pays ~3000 page faults; keeping
    them in the heap halves the transfer time. Memory held stays bounded by the largest messages in flight.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 256 << 20)
    libc.mallopt(m_trim_threshold, 512 << 20)

