"""Interventions in end-effector space, in plain Python: teleop readings -> an `ee_delta` action, or None.

Both devices give actions in the policy's `ee_delta` space (hilserl.kinematics.action_space): motion values
in [-1, 1] for x, y, z (and roll, pitch, yaw with ee_axes xyz_rpy), base frame, then one gripper value.
The gripper value is latched: the close button makes it -1 and the open button +1 for every following step
(a closing gripper keeps squeezing what it holds); before any press it is 0 (the fingers hold still).

SpaceMouse (the ROS `spacenav` driver: geometry_msgs/Twist on /spacenav/twist, sensor_msgs/Joy on
/spacenav/joy): motion beyond `dead_band` on any axis, or a button, takes over; silence (nothing beyond the
dead band, no button) for `timeout` seconds hands back to the policy: the arm holds still meanwhile, recorded
as the person's action. With `release_at_rest` a resting puck (a twist and a Joy reading with nothing beyond
the dead band and no button) hands back at once, as HIL-SERL's SpaceMouse does: letting go leaves no "hold
still" steps in the person's corrections, which cloning and the BC term would otherwise learn as hesitation.
Twist linear x, y, z -> dx, dy, dz; angular x, y, z -> droll, dpitch, dyaw. Its left button (0) closes the
gripper, its right (1) opens it.

    mouse = SpaceMouseIntervention(EeActionSpace("xyz"))
    mouse.update_twist(now, (lx, ly, lz), (ax, ay, az))      # each /spacenav/twist
    mouse.update_buttons(TeleopReading(now, axes, buttons))  # each /spacenav/joy
    action = mouse.human_action(now)                         # None while the policy is in control

Gamepad (sensor_msgs/Joy from the `joy` driver): while the dead-man button is held and the reading is
fresh, the sticks drive the TCP; buttons close/open the gripper and label the episode a success or a
failure. The defaults fit an Xbox-layout pad on Linux: left stick up/down -> x, left/right -> y,
right stick up/down -> z, left/right -> yaw; LB dead-man, A close, B open, Y success, X failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hilserl.control.episode import TeleopReading, held, pressed
from hilserl.kinematics.action_space import EeActionSpace

NO_AXIS = -1  # in GamepadEeMapping.axes: this motion value is not on the pad (always 0)


@dataclass
class GripperLatch:
    close_button: int
    open_button: int
    value: float = 0.0  # 0 until a button is pressed: the fingers hold still

    def update(self, buttons: Sequence[int]) -> bool:
        """Latch on a pressed button; returns whether one was pressed."""
        if pressed(buttons, self.close_button):
            self.value = -1.0
        elif pressed(buttons, self.open_button):
            self.value = 1.0
        else:
            return False
        return True

    def reset(self) -> None:
        self.value = 0.0


def beyond_dead_band(values: np.ndarray, dead_band: float) -> np.ndarray:
    """Values within the dead band read as 0 (a resting stick or puck never drifts the arm)."""
    return np.where(np.abs(values) > dead_band, values, 0.0)


def ee_action(space: EeActionSpace, motion6: np.ndarray, gripper: float) -> np.ndarray:
    """[x, y, z, roll, pitch, yaw] motion + gripper -> the space's action (rotation dropped for ee_axes xyz)."""
    return np.append(np.clip(motion6[:space.motion_dim], -1.0, 1.0), gripper)


@dataclass
class SpaceMouseIntervention:
    space: EeActionSpace
    dead_band: float = 0.1  # |twist component| beyond this takes over (the driver's values are in about [-1, 1])
    scale: float = 1.0  # twist value x scale = action value, clipped to [-1, 1]
    timeout: float = 0.5  # s of silence that hands back to the policy
    close_button: int = 0
    open_button: int = 1
    release_at_rest: bool = False  # a resting puck hands back at once (else after `timeout`, holding still meanwhile)
    gripper: GripperLatch = field(init=False)
    motion: np.ndarray = field(init=False)  # the latest twist as [x, y, z, roll, pitch, yaw], dead band applied
    motion_received: float | None = field(init=False, default=None)
    buttons_received: float | None = field(init=False, default=None)
    last_active: float | None = field(init=False, default=None)  # newest motion beyond the dead band, or button
    button_held: bool = field(init=False, default=False)  # in the latest Joy reading

    def __post_init__(self) -> None:
        if self.dead_band < 0 or self.timeout <= 0:
            raise ValueError(f"dead_band must be >= 0 and teleop_timeout > 0, got {self.dead_band} and {self.timeout}")
        self.gripper = GripperLatch(self.close_button, self.open_button)
        self.motion = np.zeros(6)

    def update_twist(self, received: float, linear: Sequence[float], angular: Sequence[float]) -> None:
        raw = np.concatenate([np.asarray(linear, dtype=np.float64), np.asarray(angular, dtype=np.float64)])
        if raw.shape != (6,) or not np.isfinite(raw).all():
            raise ValueError(f"a twist has 3 linear and 3 angular finite values, got {linear} and {angular}")
        # only the axes the policy acts on can take over: a twist of the puck does nothing in ee_axes xyz
        used = np.arange(6) < self.space.motion_dim
        self.motion = np.where(used, beyond_dead_band(raw * self.scale, self.dead_band), 0.0)
        self.motion_received = received
        if self.motion.any():
            self.last_active = received
        self.let_go_if_at_rest()

    def update_buttons(self, reading: TeleopReading) -> None:
        self.buttons_received = reading.received
        self.button_held = self.gripper.update(reading.buttons)
        if self.button_held:
            self.last_active = reading.received
        self.let_go_if_at_rest()

    def let_go_if_at_rest(self) -> None:
        """With `release_at_rest`: the puck at rest and no button held is the person letting go."""
        if self.release_at_rest and not self.button_held and not self.motion.any():
            self.last_active = None

    def in_control(self, now: float) -> bool:
        return self.last_active is not None and now - self.last_active <= self.timeout

    def release(self) -> None:
        """A new episode starts with the policy in control: only motion or a button from now on takes over, and
        the gripper holds still until a button is pressed again."""
        self.last_active = None
        self.button_held = False
        self.gripper.reset()

    def read_at(self, now: float) -> float | None:
        """When the person in control last gave a whole reading (twist and, once the driver sent any, buttons);
        None while the policy is in control."""
        if not self.in_control(now) or self.motion_received is None:
            return None
        return self.motion_received if self.buttons_received is None else min(self.motion_received,
                                                                                self.buttons_received)

    def human_action(self, now: float) -> np.ndarray | None:
        if not self.in_control(now):
            return None
        fresh = self.motion_received is not None and now - self.motion_received <= self.timeout
        return ee_action(self.space, self.motion if fresh else np.zeros(6), self.gripper.value)


@dataclass
class GamepadEeMapping:
    """Which Joy axis drives each motion value and which buttons do what: the actor's teleop parameters."""

    axes: tuple[int, ...] = (1, 0, 4, NO_AXIS, NO_AXIS, 3)  # x, y, z, roll, pitch, yaw; NO_AXIS = not mapped
    signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    deadman_button: int = 4
    close_button: int = 0
    open_button: int = 1
    success_button: int = 3
    failure_button: int = 2

    def __post_init__(self) -> None:
        if len(self.axes) != 6 or len(self.signs) != 6:
            raise ValueError(f"a gamepad mapping names 6 axes and 6 signs (x, y, z, roll, pitch, yaw), got "
                             f"{len(self.axes)} and {len(self.signs)}")


@dataclass
class GamepadEeIntervention:
    space: EeActionSpace
    mapping: GamepadEeMapping = field(default_factory=GamepadEeMapping)
    dead_band: float = 0.1
    scale: float = 1.0
    timeout: float = 0.5  # a silent pad releases control back to the policy
    last: TeleopReading | None = field(init=False, default=None)
    gripper: GripperLatch = field(init=False)
    _previous_buttons: tuple[int, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.dead_band < 0 or self.timeout <= 0:
            raise ValueError(f"dead_band must be >= 0 and teleop_timeout > 0, got {self.dead_band} and {self.timeout}")
        self.gripper = GripperLatch(self.mapping.close_button, self.mapping.open_button)

    def update(self, reading: TeleopReading) -> str | None:
        """Store a reading; returns "success"/"failure" on the press (rising edge) of a label button."""
        previous, self._previous_buttons = self._previous_buttons, reading.buttons
        self.last = reading
        self.gripper.update(reading.buttons)
        for label, button in (("success", self.mapping.success_button), ("failure", self.mapping.failure_button)):
            if pressed(reading.buttons, button) and not pressed(previous, button):
                return label
        return None

    def success_held(self, now: float) -> bool:
        return held(self.last, now, self.timeout, self.mapping.success_button)

    def read_at(self, now: float) -> float | None:
        """When the person in control sent the reading used now; None while the policy is in control."""
        return self.last.received if self.human_action(now) is not None else None

    def release(self) -> None:
        """A new episode starts with the policy in control: the next reading with the dead-man held takes over."""
        self.last = None
        self.gripper.reset()

    def human_action(self, now: float) -> np.ndarray | None:
        r = self.last
        if r is None or now - r.received > self.timeout or not pressed(r.buttons, self.mapping.deadman_button):
            return None
        raw = np.array([r.axes[i] if 0 <= i < len(r.axes) else 0.0 for i in self.mapping.axes], dtype=np.float64)
        motion = beyond_dead_band(raw * np.asarray(self.mapping.signs) * self.scale, self.dead_band)
        return ee_action(self.space, motion, self.gripper.value)
