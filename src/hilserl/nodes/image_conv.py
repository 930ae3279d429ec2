"""sensor_msgs/Image <-> numpy RGB, for the encodings cameras and sims publish.

A ROS 2 install has cv_bridge; PyPI does not, and these few encodings are all the policy path needs,
so hilserl converts them itself and refuses anything else with a clear error.
"""

from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_msg_to_rgb(msg) -> np.ndarray:
    """HxWx3 uint8 RGB from a sensor_msgs/Image; raises ValueError naming what is wrong."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported; publish one of {sorted(CHANNELS)}")
    h, w, step = msg.height, msg.width, msg.step
    if h == 0 or w == 0 or step < w * channels or len(msg.data) < h * step:
        raise ValueError(f"malformed image: {w}x{h} {msg.encoding}, step {step}, {len(msg.data)} data bytes")
    pixels = np.frombuffer(msg.data, dtype=np.uint8, count=h * step).reshape(h, step)[:, : w * channels]
    pixels = pixels.reshape(h, w, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]
    return np.ascontiguousarray(pixels[:, :, :3])


def rgb_to_image_msg(rgb: np.ndarray, msg) -> None:
    """Fill a sensor_msgs/Image (header left to the caller) with an HxWx3 uint8 RGB frame."""
    from hilserl.nodes.wire import bytes_to_msg_data

    h, w, _ = rgb.shape
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = h, w, "rgb8", 0, w * 3
    msg.data = bytes_to_msg_data(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
