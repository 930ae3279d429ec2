"""Bytes <-> ROS uint8[] fields without per-element Python work.

rclpy stores uint8[] as array.array('B'): handing it one is a memcpy, while handing it `bytes` makes the
generated setter check all 12 million elements one by one.
"""

from __future__ import annotations

import array


def bytes_to_msg_data(payload: bytes | bytearray | memoryview) -> array.array:
    data = array.array("B")
    data.frombytes(payload)
    return data
