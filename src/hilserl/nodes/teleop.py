"""Keyboard teleop: publishes what a gamepad (`joy` package) or a SpaceMouse (`spacenav` driver) would.

On the real arm the actor listens to those drivers; in simulation this node stands in for them.

Parameter `mode: joint` (default; for joint_delta policies): `sensor_msgs/Joy` on /joy, laid out as the
actor's joint defaults read it:
  axes[i], i = 0..7    joint i's velocity command in [-1, 1] (7 arm joints, then the gripper)
  buttons[0]           dead-man: while 1, the human's axes replace the policy's action (intervention)
  buttons[1]           mark the episode a success and end it
  buttons[2]           mark the episode a failure and end it

Keys: q/a w/s e/d r/f t/g y/h u/j = joints 1..7 +/-, i/k = gripper open/close, space = hold/release the
dead-man (a keyboard cannot hold two keys reliably, so it toggles), p = success, n = failure, x = quit.
Each key press drives its axis for `key_hold` seconds, like a held stick.

`mode: ee` (for ee_delta policies): the keys move the gripper in the robot's base frame, as a SpaceMouse:
  /spacenav/twist  geometry_msgs/Twist, linear x, y, z in [-1, 1]: w/s = +x/-x (forward/back), a/d = +y/-y
                   (left/right), r/f = +z/-z (up/down); motion takes over, silence hands back
  /spacenav/joy    sensor_msgs/Joy, buttons [close, open]: c = close the gripper, o = open it
  /joy             sensor_msgs/Joy in the actor's ee gamepad layout (GamepadEeMapping defaults): space
                   toggles the dead-man (button 4: take over holding still / hand back), p = success
                   (button 3), n = failure (button 2)
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

from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy

from hilserl.health import OK, Report
from hilserl.control.teleop_ee import GamepadEeMapping
from hilserl.names import SPACENAV_JOY_TOPIC, SPACENAV_TWIST_TOPIC, TELEOP_TOPIC
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
# ee mode: axes = twist linear x, y, z; buttons = the ee gamepad layout on /joy, then the SpaceMouse's two.
EE_AXIS_KEYS = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
PAD = GamepadEeMapping()
EE_PAD_BUTTONS = max(PAD.deadman_button, PAD.success_button, PAD.failure_button) + 1
SPACENAV_CLOSE, SPACENAV_OPEN = EE_PAD_BUTTONS, EE_PAD_BUTTONS + 1  # the SpaceMouse's left and right button
MODES = {"joint": dict(axis_keys=AXIS_KEYS, num_axes=NUM_AXES, num_buttons=NUM_BUTTONS, deadman=DEADMAN,
                       pulses={"p": SUCCESS, "n": FAILURE}),
         "ee": dict(axis_keys=EE_AXIS_KEYS, num_axes=3, num_buttons=EE_PAD_BUTTONS + 2, deadman=PAD.deadman_button,
                    pulses={"p": PAD.success_button, "n": PAD.failure_button, "c": SPACENAV_CLOSE,
                            "o": SPACENAV_OPEN})}


class KeyboardState:
    """Key presses -> axes/buttons (of one mode in MODES). Plain Python so it is testable without a terminal."""

    def __init__(self, key_hold: float = 0.25, mode: str = "joint"):
        self.key_hold = key_hold
        m = MODES[mode]
        self.axis_keys, self.num_axes, self.num_buttons = m["axis_keys"], m["num_axes"], m["num_buttons"]
        self.deadman_button, self.pulses = m["deadman"], m["pulses"]
        self.axis_until: dict[int, tuple[float, float]] = {}  # axis -> (value, until)
        self.button_until: dict[int, float] = {}
        self.deadman = False
        self.quit = False

    def press(self, key: str, now: float) -> None:
        if key in self.axis_keys:
            axis, value = self.axis_keys[key]
            self.axis_until[axis] = (value, now + self.key_hold)
        elif key == " ":
            self.deadman = not self.deadman
        elif key in self.pulses:
            self.button_until[self.pulses[key]] = now + BUTTON_PULSE_S
        elif key == "x":
            self.quit = True

    def joy(self, now: float) -> tuple[list[float], list[int]]:
        axes = [0.0] * self.num_axes
        for axis, (value, until) in self.axis_until.items():
            if now < until:
                axes[axis] = value
        buttons = [0] * self.num_buttons
        buttons[self.deadman_button] = int(self.deadman)
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
        parser.add_argument("--mode", choices=tuple(MODES), default="joint", help="parameter mode")
        args = parser.parse_args(argv)
        flags = {"rate": args.rate, "key_hold": args.key_hold, "mode": args.mode}  # ROS parameters override them
        p = declare(self, [dataclasses.replace(spec, default=flags[spec.name]) for spec in TELEOP_PARAMS])
        self.mode = p["mode"]
        self.state = KeyboardState(p["key_hold"], self.mode)
        self.pub = self.create_publisher(Joy, TELEOP_TOPIC, TELEOP)
        if self.mode == "ee":
            self.twist_pub = self.create_publisher(Twist, SPACENAV_TWIST_TOPIC, TELEOP)
            self.spacenav_pub = self.create_publisher(Joy, SPACENAV_JOY_TOPIC, TELEOP)
        self.lock = threading.Lock()
        self.create_timer(1.0 / p["rate"], self.publish)
        self.diagnostics = Diagnostics(self, self.health)
        self.reader = threading.Thread(target=self.read_keys, daemon=True)
        self.reader.start()
        keys = ("w/s a/d r/f = TCP +-x +-y +-z, c/o = close/open the gripper" if self.mode == "ee"
                else "q/a..u/j = joints, i/k = gripper")
        self.get_logger().info(f"keyboard teleop ({self.mode}): space = dead-man on/off, {keys}, p = success, "
                               "n = failure, x = quit")

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
        stamp = self.get_clock().now().to_msg()
        if self.mode == "ee":
            twist = Twist()
            twist.linear.x, twist.linear.y, twist.linear.z = axes
            self.twist_pub.publish(twist)
            self.spacenav_pub.publish(joy(stamp, [0.0] * 6, buttons[SPACENAV_CLOSE:]))
            axes, buttons = [0.0] * NUM_AXES, buttons[:SPACENAV_CLOSE]
        self.pub.publish(joy(stamp, axes, buttons))


def joy(stamp, axes: list[float], buttons: list[int]) -> Joy:
    msg = Joy(axes=axes, buttons=buttons)
    msg.header.stamp = stamp
    return msg


def main(argv: list[str]) -> int:
    return run_node(TeleopNode, argv)
