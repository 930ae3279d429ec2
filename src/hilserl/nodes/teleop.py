"""Keyboard teleop: publishes `sensor_msgs/Joy` like a gamepad driver (`joy` package) would.

On the real arm the actor listens to the `joy` package's `/joy`; in simulation this node stands in for it.
Joy layout (the actor's defaults read it this way):
  axes[i], i = 0..7    joint i's velocity command in [-1, 1] (7 arm joints, then the gripper)
  buttons[0]           dead-man: while 1, the human's axes replace the policy's action (intervention)
  buttons[1]           mark the episode a success and end it
  buttons[2]           mark the episode a failure and end it

Keys: q/a w/s e/d r/f t/g y/h u/j = joints 1..7 +/-, i/k = gripper open/close, space = hold/release the
dead-man (a keyboard cannot hold two keys reliably, so it toggles), p = success, n = failure, x = quit.
Each key press drives its axis for `key_hold` seconds, like a held stick.
"""

from __future__ import annotations

import argparse
import dataclasses
import select
import sys
import termios
import threading
import time
import tty

from rclpy.node import Node
from sensor_msgs.msg import Joy

from hilserl.health import OK, Report
from hilserl.names import TELEOP_TOPIC
from hilserl.nodes.diagnostics import Diagnostics
from hilserl.nodes.params import TELEOP_PARAMS, declare
from hilserl.nodes.qos import TELEOP
from hilserl.nodes.runtime import run_node

AXIS_KEYS = {"q": (0, 1.0), "a": (0, -1.0), "w": (1, 1.0), "s": (1, -1.0), "e": (2, 1.0), "d": (2, -1.0),
             "r": (3, 1.0), "f": (3, -1.0), "t": (4, 1.0), "g": (4, -1.0), "y": (5, 1.0), "h": (5, -1.0),
             "u": (6, 1.0), "j": (6, -1.0), "i": (7, 1.0), "k": (7, -1.0)}
NUM_AXES, NUM_BUTTONS = 8, 3
DEADMAN, SUCCESS, FAILURE = 0, 1, 2
BUTTON_PULSE_S = 0.3  # success/failure read as pressed for this long


class KeyboardState:
    """Key presses -> Joy axes/buttons. Plain Python so it is testable without a terminal."""

    def __init__(self, key_hold: float = 0.25):
        self.key_hold = key_hold
        self.axis_until: dict[int, tuple[float, float]] = {}  # axis -> (value, until)
        self.button_until: dict[int, float] = {}
        self.deadman = False
        self.quit = False

    def press(self, key: str, now: float) -> None:
        if key in AXIS_KEYS:
            axis, value = AXIS_KEYS[key]
            self.axis_until[axis] = (value, now + self.key_hold)
        elif key == " ":
            self.deadman = not self.deadman
        elif key == "p":
            self.button_until[SUCCESS] = now + BUTTON_PULSE_S
        elif key == "n":
            self.button_until[FAILURE] = now + BUTTON_PULSE_S
        elif key == "x":
            self.quit = True

    def joy(self, now: float) -> tuple[list[float], list[int]]:
        axes = [0.0] * NUM_AXES
        for axis, (value, until) in self.axis_until.items():
            if now < until:
                axes[axis] = value
        buttons = [0] * NUM_BUTTONS
        buttons[DEADMAN] = int(self.deadman)
        for button, until in self.button_until.items():
            if now < until:
                buttons[button] = 1
        return axes, buttons


class TeleopNode(Node):
    def __init__(self, argv: list[str]):
        super().__init__("teleop")
        parser = argparse.ArgumentParser(prog="python -m hilserl teleop", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--rate", type=float, default=20.0, help="Joy messages per second (parameter rate)")
        parser.add_argument("--key-hold", type=float, default=0.25,
                            help="seconds a key press drives its axis (parameter key_hold)")
        args = parser.parse_args(argv)
        flags = {"rate": args.rate, "key_hold": args.key_hold}  # defaults; ROS parameters override them
        p = declare(self, [dataclasses.replace(spec, default=flags[spec.name]) for spec in TELEOP_PARAMS])
        self.state = KeyboardState(p["key_hold"])
        self.pub = self.create_publisher(Joy, TELEOP_TOPIC, TELEOP)
        self.lock = threading.Lock()
        self.create_timer(1.0 / p["rate"], self.publish)
        self.diagnostics = Diagnostics(self, self.health)
        self.reader = threading.Thread(target=self.read_keys, daemon=True)
        self.reader.start()
        self.get_logger().info("keyboard teleop: space = dead-man on/off, q/a..u/j = joints, i/k = gripper, "
                               "p = success, n = failure, x = quit")

    def read_keys(self) -> None:
        stream = sys.stdin
        interactive = stream.isatty()
        saved = termios.tcgetattr(stream) if interactive else None
        try:
            if interactive:
                tty.setcbreak(stream.fileno())
            while not self.state.quit:
                ready, _, _ = select.select([stream], [], [], 0.1)
                if ready:
                    key = stream.read(1)
                    if key == "":  # end of input (piped keys): keep publishing what was last set
                        return
                    with self.lock:
                        self.state.press(key.lower(), time.monotonic())
        finally:
            if saved is not None:
                termios.tcsetattr(stream, termios.TCSADRAIN, saved)

    def health(self) -> Report:
        return Report(OK, "dead-man held: human in control" if self.state.deadman else "dead-man released",
                      {"deadman": self.state.deadman})

    def publish(self) -> None:
        with self.lock:
            if self.state.quit:
                raise KeyboardInterrupt
            axes, buttons = self.state.joy(time.monotonic())
        msg = Joy(axes=axes, buttons=buttons)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)


def main(argv: list[str]) -> int:
    return run_node(TeleopNode, argv)
