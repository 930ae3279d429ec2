"""Fast DDS transport for hilserl's nodes.

Weights messages are ~12 MB. Fast DDS's default shared-memory segment (512 KB) chops such a message into
many fragments and its UDP path adds copies; a larger shared-memory segment sends a whole version in one
go on one host, while UDPv4 stays enabled so actors on other hosts still discover and receive. The profile
is written once per process and used only when the user has not configured Fast DDS themselves
(FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_BUILTIN_TRANSPORTS), so a real
deployment's own XML always wins. Set HILSERL_DDS_PROFILE=0 to use plain Fast DDS defaults.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def configure_transport() -> str:
    """Point Fast DDS at hilserl's profile unless the user configured it. Returns what is in force."""
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if os.environ.get("HILSERL_DDS_PROFILE", "1").lower() in ("0", "false", "no", "off"):
        return "fastdds-defaults"
    for name in USER_SETTINGS:
        if os.environ.get(name):
            return f"user:{name}={os.environ[name]}"
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile_path())
    return f"hilserl-profile:{os.environ['FASTDDS_DEFAULT_PROFILES_FILE']}"
