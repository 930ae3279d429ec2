"""Policy configuration: what fixes the shapes and the meaning of a policy's inference state.

The fingerprint of a config is carried with every weights message; an actor built from one config
refuses weights made for another, so a tensor of the right shape can never be read with the wrong
meaning (another frame stack, another action order, another algorithm).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hilserl.kinematics.action_space import ACTION_SPACES, DEFAULT_EE_ROT_STEP, DEFAULT_EE_STEP, EeActionSpace
from hilserl.names import PANDA_JOINTS, POLICY_TYPES  # noqa: F401 - re-exported for the policies

GRIPPER_MODES = ("continuous", "discrete")
# The discrete gripper's settings, written only when gripper is "discrete": a continuous config's JSON (and so
# its fingerprint) is the same as before the fields existed.
DISCRETE_GRIPPER_FIELDS = ("gripper", "grasp_penalty", "grasp_epsilon")


@dataclass(frozen=True)
class PolicyConfig:
    policy: str = "drqv2"
    action_dim: int = len(PANDA_JOINTS)
    state_dim: int = 0  # proprioceptive inputs (joint positions in `joints` order); 0 = pixels only
    image_size: int = 84
    frame_stack: int = 3
    num_cameras: int = 1
    encoder_channels: int = 32
    feature_dim: int = 50
    hidden_dim: int = 1024
    # DrQ-v2 exploration: std of the Gaussian noise added to the deterministic action.
    stddev_schedule: str = "linear(1.0,0.1,100000)"
    stddev_clip: float = 0.3
    # SAC: bounds of the actor's log standard deviation; frozen encoder = critic does not train it.
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    freeze_encoder: bool = False
    # What an action means (hilserl.kinematics.action_space): "joint_delta" = one delta per entry of the actor's
    # `joints`; "ee_delta" = end-effector deltas in the base frame ([dx, dy, dz] for ee_axes "xyz", plus
    # [droll, dpitch, dyaw] for "xyz_rpy") scaled by ee_step (m) / ee_rot_step (rad), then one gripper value.
    # Configs written before these fields existed read as joint_delta.
    action_space: str = "joint_delta"
    ee_axes: str = "xyz"
    ee_step: float = DEFAULT_EE_STEP
    ee_rot_step: float = DEFAULT_EE_ROT_STEP
    # The gripper value of an ee_delta action: "continuous" = the actor head outputs it like every other value;
    # "discrete" = the actor head outputs the arm's values only and a grasp critic (Q over the commands close,
    # stay, open = -1, 0, +1) picks the gripper command: argmax, epsilon-greedy while exploring. Training
    # subtracts grasp_penalty from the grasp critic's reward on every transition whose executed gripper command
    # moved the fingers (close or open, not stay). Configs written before these fields existed read as continuous.
    gripper: str = "continuous"
    grasp_penalty: float = 0.02
    grasp_epsilon: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_TYPES:
            raise ValueError(f"unknown policy type {self.policy!r}; expected one of {POLICY_TYPES}")
        for name in ("action_dim", "image_size", "frame_stack", "num_cameras", "encoder_channels",
                     "feature_dim", "hidden_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"policy config: {name} must be positive, got {getattr(self, name)}")
        if self.state_dim < 0:
            raise ValueError(f"policy config: state_dim must be >= 0, got {self.state_dim}")
        parse_schedule(self.stddev_schedule, 0)  # a malformed schedule fails here, not mid-training
        if self.image_size < 16:
            raise ValueError(f"policy config: image_size {self.image_size} is too small for the encoder (>= 16)")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"policy config: action_space must be one of {ACTION_SPACES}, got {self.action_space!r}")
        ee = self.ee_action_space()  # checked under joint_delta too, so a mistyped field fails at load
        if self.action_space == "ee_delta" and self.action_dim != ee.dim:
            raise ValueError(f"policy config: an ee_delta policy with ee_axes {self.ee_axes!r} has action_dim "
                             f"{ee.dim} (motion + gripper), got {self.action_dim}")
        if self.gripper not in GRIPPER_MODES:
            raise ValueError(f"policy config: gripper must be one of {GRIPPER_MODES}, got {self.gripper!r}")
        if self.gripper == "discrete" and self.action_space != "ee_delta":
            raise ValueError("policy config: gripper 'discrete' needs action_space 'ee_delta' (the gripper value is "
                             f"its last action), got {self.action_space!r}")
        if self.gripper == "continuous" and (self.grasp_penalty, self.grasp_epsilon) != (
                PolicyConfig.grasp_penalty, PolicyConfig.grasp_epsilon):
            raise ValueError("policy config: grasp_penalty and grasp_epsilon apply to gripper 'discrete' only")
        if not self.grasp_penalty >= 0:
            raise ValueError(f"policy config: grasp_penalty must be >= 0, got {self.grasp_penalty}")
        if not 0 <= self.grasp_epsilon <= 1:
            raise ValueError(f"policy config: grasp_epsilon must be in [0, 1], got {self.grasp_epsilon}")

    @property
    def discrete_gripper(self) -> bool:
        return self.gripper == "discrete"

    @property
    def arm_action_dim(self) -> int:
        """Action values the actor head outputs (and the continuous critics read): all of them, or all but the
        gripper value when a grasp critic picks it."""
        return self.action_dim - 1 if self.discrete_gripper else self.action_dim

    @property
    def image_channels(self) -> int:
        """Channels the encoder sees: RGB x stacked frames x cameras."""
        return 3 * self.frame_stack * self.num_cameras

    def ee_action_space(self) -> EeActionSpace:
        """The end-effector action settings (raises ValueError, with the reason, when they are unusable)."""
        try:
            return EeActionSpace(self.ee_axes, self.ee_step, self.ee_rot_step)
        except ValueError as err:
            raise ValueError(f"policy config: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.discrete_gripper:
            for name in DISCRETE_GRIPPER_FIELDS:
                del data[name]
        return data

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, so equal configs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        if not isinstance(data, dict):
            raise ValueError(f"policy config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"policy config has unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "PolicyConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"policy config is not valid JSON: {err}") from err
        return cls.from_dict(data)


def parse_schedule(schedule: str | float, step: int) -> float:
    """DrQ-v2 style schedules: a constant, or 'linear(init,final,duration)'."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    text = schedule.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("linear(") and text.endswith(")"):
        try:
            init, final, duration = (float(v) for v in text[len("linear("):-1].split(","))
        except ValueError:  # not three numbers
            duration = 0.0
        if duration > 0:
            mix = min(max(step / duration, 0.0), 1.0)
            return (1.0 - mix) * init + mix * final
    raise ValueError(f"cannot parse schedule {schedule!r}; use a number or 'linear(init,final,steps)'")
