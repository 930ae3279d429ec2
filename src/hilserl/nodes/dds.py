"""Fast DDS transport for hilserl's nodes.

Weights messages are ~12 MB. Fast DDS's default shared-memory segment (512 KB) chops such a message into
many fragments and its UDP path adds copies; a larger shared-memory segment sends a whole version in one
go on one host, while UDPv4 stays enabled so actors on other hosts still discover and receive. The profile
is written once per process and used only when the user has not configured Fast DDS themselves
(FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_BUILTIN_TRANSPORTS), so a real
deployment's own XML always wins. Set HILSERL_DDS_PROFILE=0 to use plain Fast DDS defaults.

Fast DDS keeps each participant's shared memory in /dev/shm, which is RAM. A process that dies without
closing its participant (SIGKILL, a crash, an out-of-memory kill) leaves its segment behind until reboot,
64 MB with this profile; a few hundred such deaths fill the machine's memory. `reclaim_stale_segments()`,
run by every hilserl process before its first participant, removes the segments whose owner is gone, as
`fastdds shm clean` does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path

SHM_SEGMENT_BYTES = 64 << 20  # holds several weights versions in flight
PROFILE_XML = f"""<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>hilserl_shm</transport_id>
        <type>SHM</type>
        <segment_size>{SHM_SEGMENT_BYTES}</segment_size>
        <maxMessageSize>{SHM_SEGMENT_BYTES // 4}</maxMessageSize>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>hilserl_udp</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>8388608</sendBufferSize>
        <receiveBufferSize>8388608</receiveBufferSize>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="hilserl_participant" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports>
          <transport_id>hilserl_shm</transport_id>
          <transport_id>hilserl_udp</transport_id>
        </userTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""

USER_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


def profile_path() -> Path:
    path = Path(tempfile.gettempdir()) / f"hilserl-fastdds-{os.getuid()}-{hashlib.sha256(PROFILE_XML.encode()).hexdigest()[:10]}.xml"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(PROFILE_XML)
        tmp.replace(path)
    return path


SHM_DIR = Path("/dev/shm")
SEGMENT_PREFIX = "fastdds_"
OWNER_LOCK_SUFFIX = "_el"  # Fast DDS holds an exclusive flock on <segment>_el for as long as the owner lives
MIN_STALE_AGE_S = 10.0  # a lock file younger than this may belong to a participant still starting up


def reclaim_stale_segments(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_STALE_AGE_S) -> tuple[int, int]:
    """Remove Fast DDS shared-memory segments whose owning process is gone. Returns (segments, bytes) freed.

    The owner's exclusive flock on `<segment>_el` is released by the kernel when the owner dies, however it
    dies; a lock we can take therefore marks a segment nobody can use again. Segments of live processes,
    on any domain and of any program, are left alone.
    """
    try:
        names = os.listdir(shm_dir)
    except OSError:  # no /dev/shm (not Linux): Fast DDS keeps nothing there either
        return 0, 0
    now = time.time()
    segments = freed = 0
    for name in names:
        if not (name.startswith(SEGMENT_PREFIX) and name.endswith(OWNER_LOCK_SUFFIX)):
            continue
        lock_path = shm_dir / name
        segment_path = shm_dir / name[: -len(OWNER_LOCK_SUFFIX)]
        try:
            if now - lock_path.stat().st_mtime < min_age_s:
                continue
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:  # removed meanwhile, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its owner is alive
            os.close(fd)
            continue
        try:
            try:
                size = segment_path.stat().st_blocks * 512
                segment_path.unlink()
                segments += 1
                freed += size
            except FileNotFoundError:
                pass
            lock_path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)
    return segments, freed


def configure_transport() -> str:
    """Point Fast DDS at hilserl's profile unless the user configured it. Returns what is in force."""
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    reclaim_stale_segments()
    if os.environ.get("HILSERL_DDS_PROFILE", "1").lower() in ("0", "false", "no", "off"):
        return "fastdds-defaults"
    for name in USER_SETTINGS:
        if os.environ.get(name):
            return f"user:{name}={os.environ[name]}"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile_path())
    return f"hilserl-profile:{os.environ['FASTDDS_DEFAULT_PROFILES_FILE']}"
