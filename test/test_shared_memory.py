"""A node that dies hard must not keep its Fast DDS shared memory (RAM in /dev/shm) until reboot.

Real processes on real Fast DDS: a node is SIGKILLed, its segment stays behind, and the next hilserl
process reclaims it, while the segment of a participant that is still alive is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilserl.nodes.dds import OWNER_LOCK_SUFFIX, SEGMENT_PREFIX, SHM_DIR, reclaim_stale_segments
from rosutil import REPO, ros_env, unique_domain_id

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="Fast DDS keeps shared memory in /dev/shm on Linux only")

# A participant that idles until killed; prints once Fast DDS has made its segment.
PARTICIPANT = """
from hilserl.nodes.dds import configure_transport
configure_transport()
import rclpy, time
rclpy.init()
node = rclpy.create_node("shm_owner")
print("up", flush=True)
time.sleep(600)
"""


def segments() -> set[str]:
    return {name[: -len(OWNER_LOCK_SUFFIX)] for name in os.listdir(SHM_DIR)
            if name.startswith(SEGMENT_PREFIX) and name.endswith(OWNER_LOCK_SUFFIX)}


def start_participant(env: dict[str, str]) -> tuple[subprocess.Popen, set[str]]:
    before = segments()
    proc = subprocess.Popen([sys.executable, "-c", PARTICIPANT], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    deadline = time.monotonic() + 20
    while not (new := segments() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc, new


def test_segment_of_a_killed_node_is_reclaimed_and_a_live_one_is_kept(tmp_path: Path):
    env = ros_env(unique_domain_id())
    killed, killed_segments = start_participant(env)
    alive, alive_segments = start_participant(env)
    try:
        assert killed_segments and alive_segments, "the profile's shared-memory transport made no segment"
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert killed_segments <= segments(), "Fast DDS removed the dead node's segment by itself; nothing to reclaim"

        count, freed = reclaim_stale_segments(min_age_s=0.0)

        assert not killed_segments & segments(), "the dead node's segment is still in /dev/shm"
        assert alive_segments <= segments(), "a live participant's segment was removed"
        assert count >= len(killed_segments) and freed > 0
        assert alive.poll() is None
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    reclaim_stale_segments(min_age_s=0.0)


def test_young_segments_are_left_for_a_participant_still_starting(tmp_path: Path):
    # A lock file nobody holds yet, as between Fast DDS creating it and locking it.
    name = f"{SEGMENT_PREFIX}hilserltest{os.getpid():08x}"
    lock, segment = SHM_DIR / f"{name}{OWNER_LOCK_SUFFIX}", SHM_DIR / name
    lock.write_bytes(b"")
    segment.write_bytes(b"x" * 4096)
    try:
        reclaim_stale_segments()  # default age threshold: too young to judge
        assert lock.exists() and segment.exists()
        old = time.time() - 3600
        os.utime(lock, (old, old))
        count, freed = reclaim_stale_segments()
        assert not lock.exists() and not segment.exists()
        assert count >= 1 and freed >= 4096
    finally:
        lock.unlink(missing_ok=True)
        segment.unlink(missing_ok=True)
