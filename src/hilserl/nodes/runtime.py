"""Process plumbing shared by every node: transport set-up, init, spin, clean shutdown."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from hilserl.nodes.dds import configure_transport
from hilserl.nodes.params import ParameterError

LAST_WORDS_S = 0.5  # s a node that closes waits before its writers go: reliable delivery of its last messages


def run_node(make_node: Callable[[list[str]], object], argv: list[str]) -> int:
    """`python -m hilserl <node> [--ros-args ...]`: build the node, spin until SIGINT/SIGTERM.

    A node that refuses a parameter value (ParameterError) ends the process with exit code 2 and the error's
    one line on stderr. A signal stops the spinning, not ROS: the node's `close()` (the learner saves its training state) then
    runs with the context alive, so what it logs still reaches /rosout and it can still publish.
    """
    configure_transport()  # before the first participant exists; respects a user's own Fast DDS settings
    keep_large_buffers()
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    args = [sys.argv[0], *argv]
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = None
    executor = SingleThreadedExecutor()
    try:
        try:
            node = make_node(rclpy.utilities.remove_ros_args(args)[1:])
        except ParameterError as err:  # one line naming the parameter, the value and what is allowed
            print(err, file=sys.stderr, flush=True)
            sys.stdout.flush()
            # Nothing has started that needs closing; leaving at once also skips tearing down a half-built
            # rclpy node after its context, which crashed such a process now and then (SIGSEGV, not exit 2).
            os._exit(2)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # the timeout bounds how long a signal waits to be seen
    except (KeyboardInterrupt, ExternalShutdownException):  # KeyboardInterrupt: a node asking to quit
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
                # Deleting a writer drops what its readers have not acknowledged yet: give what close() logged
                # and published (the learner's "training state saved" on /rosout) time to arrive.
                time.sleep(LAST_WORDS_S)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
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

