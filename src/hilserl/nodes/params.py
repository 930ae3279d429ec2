"""Node parameters as ROS users expect them: described, range-checked, and refused with one clear line.

Each node lists its parameters as `Param` specs (the tables below) and calls `declare(node, specs)`:

  - every parameter is declared with a `ParameterDescriptor` (description, `floating_point_range` or
    `integer_range` where a range applies), so `ros2 param describe` and rqt show them;
  - an integer is accepted where a float is declared (`control_hz:=5`), and one number where a per-joint
    list is declared (`action_scale:=0.02`: the same for every joint);
  - an invalid value raises `ParameterError` with one line naming the parameter, the value and what is
    allowed; `run_node` prints that line on stderr and exits with code 2, without a traceback;
  - later `ros2 param set` calls are checked against the same spec and refused with the same reason.

Values are read with a descriptor that allows any type, checked and converted here, and the parameter
is then given its final typed descriptor, so a later set of the wrong type is refused by rclpy too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hilserl import names
from hilserl.control.teleop_ee import GamepadEeMapping
from hilserl.kinematics.action_space import ACTION_SPACES, DEFAULT_EE_ROT_STEP, DEFAULT_EE_STEP, EE_AXES
from hilserl.sim import operator as operator_defaults
from hilserl.sim.task import TASKS, VARIANTS
from hilserl.robot import (ACTION_SCALE, JOINT_LOWER, JOINT_UPPER, JOINTS, ORIENTATION_LOWER, ORIENTATION_REFERENCE,
                           ORIENTATION_UPPER, TCP_FRAME, TCP_OFFSET, WORKSPACE_LOWER, WORKSPACE_UPPER)
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult

KINDS = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
         "float": ParameterType.PARAMETER_DOUBLE, "str": ParameterType.PARAMETER_STRING,
         "str[]": ParameterType.PARAMETER_STRING_ARRAY, "int[]": ParameterType.PARAMETER_INTEGER_ARRAY,
         "float[]": ParameterType.PARAMETER_DOUBLE_ARRAY}


class ParameterError(ValueError):
    """A parameter value a node cannot run with; the message is the one line the user reads."""


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    kind: str  # one of KINDS
    low: float | None = None  # numbers (or list elements): at least this ...
    high: float | None = None  # ... and at most this
    above: bool = False  # `low` itself is not allowed (a rate > 0)
    below: bool = False  # `high` itself is not allowed (a probability threshold < 1)
    choices: tuple[str, ...] = ()
    per_joint: bool = False  # a list with one value per entry of `joints`; one number means all joints
    non_empty: bool = False  # strings and lists
    check: Callable[[object], str | None] | None = None  # a further problem with the value, or None

    def allowed(self) -> str:
        """What the parameter accepts, in words (the README's tables and error lines use it)."""
        element = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[
            self.kind.rstrip("[]")]
        if self.low is not None or self.high is not None:
            bounds = [f"{'>' if self.above else '>='} {self.low:g}" if self.low is not None else "",
                      f"{'<' if self.below else '<='} {self.high:g}" if self.high is not None else ""]
            element += " " + " and ".join(b for b in bounds if b)
        if self.choices:
            element = "one of " + ", ".join(self.choices)
        if self.kind.endswith("[]"):
            text = f"a list of {element.replace('an integer', 'integers').replace('a number', 'numbers')}"
            text = text.replace("a string", "strings")
            if self.per_joint:
                text += " with one value per joint (or one value for all)"
            return text + (", not empty" if self.non_empty else "")
        return element + (", not empty" if self.non_empty else "")

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=KINDS[self.kind],
                                description=self.description + f" Allowed: {self.allowed()}.")
        if self.low is not None or self.high is not None:
            if self.kind.startswith("float"):
                d.floating_point_range = [FloatingPointRange(
                    from_value=float(self.low if self.low is not None else -math.inf),
                    to_value=float(self.high if self.high is not None else math.inf))]
            elif self.kind.startswith("int"):
                d.integer_range = [IntegerRange(from_value=int(self.low if self.low is not None else -2 ** 63),
                                                to_value=int(self.high if self.high is not None else 2 ** 63 - 1),
                                                step=1)]
        return d

    def convert(self, value):
        """The value as this parameter's type, or ParameterError naming the parameter and what is allowed."""
        converted = self._convert(value)
        if converted is None:
            raise ParameterError(f"invalid parameter {self.name}:={format_value(value)}: allowed: {self.allowed()}")
        problem = self.check(converted) if self.check is not None else None
        if problem:
            raise ParameterError(f"invalid parameter {self.name}:={format_value(value)}: {problem}")
        return converted

    def _convert(self, value):
        if self.kind.endswith("[]"):
            if self.per_joint and not isinstance(value, (list, tuple)) and self._scalar(value) is not None:
                return [self._scalar(value)]  # one value: the caller repeats it for every joint
            if not isinstance(value, (list, tuple)) or (self.non_empty and not value):
                return None
            items = [self._scalar(v) for v in value]
            return None if any(v is None for v in items) else items
        return self._scalar(value)

    def _scalar(self, value):
        kind = self.kind.rstrip("[]")
        if kind == "bool":
            return value if isinstance(value, bool) else None
        if kind == "str":
            if not isinstance(value, str) or (self.non_empty and not value.strip()):
                return None
            return value if not self.choices or value in self.choices else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if kind == "int":
            if not isinstance(value, int):
                return None
        else:
            value = float(value)
            if not math.isfinite(value):
                return None
        if self.low is not None and (value < self.low or (self.above and value == self.low)):
            return None
        if self.high is not None and (value > self.high or (self.below and value == self.high)):
            return None
        return value


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def declare(node, specs: Sequence[Param]) -> dict[str, object]:
    """Declare `specs` on `node`; returns {name: checked value}. Raises ParameterError on the first bad one."""
    values = {}
    for spec in specs:
        if node.has_parameter(spec.name):
            raw = node.get_parameter(spec.name).value
        else:
            raw = node.declare_parameter(spec.name, spec.default,
                                         ParameterDescriptor(description=spec.description, dynamic_typing=True)).value
        try:
            value = spec.convert(raw)
        except ParameterError as err:
            raise ParameterError(f"{node.get_name()}: {err}") from None
        if type(raw) is not type(value) or raw != value:  # e.g. 5 -> 5.0: store the declared type
            from rclpy.parameter import Parameter

            node.set_parameters([Parameter(spec.name, value=value)])
        node.set_descriptor(spec.name, spec.descriptor())
        values[spec.name] = value
    by_name = {spec.name: spec for spec in specs}

    def on_set(params) -> SetParametersResult:
        for param in params:
            if param.name in by_name:
                try:
                    by_name[param.name].convert(param.value)
                except ParameterError as err:
                    return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)
    node.add_on_set_parameters_callback(on_set)
    return values


def per_joint(spec: Param, value: list, joints: Sequence[str], table: dict[str, object] | None = None,
              node: str = "actor") -> list:
    """A per-joint list for `joints`: as given, one value repeated, or picked by name from `table`.

    `table` maps the default arm's joint names to their defaults: a list of the default arm's length is
    read by joint name, so a subset of its joints needs no list of its own.
    """
    if len(value) == len(joints):
        return list(value)
    if len(value) == 1:
        return list(value) * len(joints)
    if table is not None and len(value) == len(table) and list(value) == list(table.values()):
        unknown = [j for j in joints if j not in table]
        if unknown:
            raise ParameterError(f"{node}: invalid parameter joints:={format_value(list(joints))}: unknown joint(s) "
                                 f"{', '.join(unknown)}; known: {', '.join(table)} (or give {spec.name} "
                                 "with one value per joint)")
        return [table[j] for j in joints]
    raise ParameterError(f"{node}: invalid parameter {spec.name}:={format_value(value)}: allowed: {len(joints)} values, "
                         f"one per entry of joints ({len(joints)}), or one value for all")


# -- checks shared by the tables -------------------------------------------------------------------
def checkpoint_dir(path: str) -> str | None:
    if path and not (Path(path).expanduser() / "config.json").is_file():
        return f"no checkpoint there (expected {Path(path) / 'config.json'})"
    return None


def existing_file(path: str) -> str | None:
    return "no such file" if path and not Path(path).expanduser().is_file() else None


def unique(values: list) -> str | None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    return f"names must be unique; repeated: {', '.join(repeated)}" if repeated else None


def values_count(*counts: int) -> Callable[[list], str | None]:
    def check(values: list) -> str | None:
        return None if len(values) in counts else f"allowed: {' or '.join(map(str, counts))} values"
    return check


def actor_action_space(value: str) -> str | None:
    return None if value in ("", *ACTION_SPACES) else "allowed: '' (the weights'), " + " or ".join(ACTION_SPACES)


def device_name(value: str) -> str | None:
    """The spelling only: whether this machine has that device is asked of torch by `torch_device`."""
    kind, _, index = value.partition(":")
    if kind in ("auto", "cpu") and not index or kind == "cuda" and (not index or index.isdigit()):
        return None
    return "allowed: auto, cpu, cuda, cuda:N"


def torch_device(node_name: str, value: str):
    """The torch.device for a `device` parameter; a device this machine lacks is a ParameterError."""
    from hilserl.policies.device import resolve_device

    try:
        return resolve_device(value)
    except ValueError as err:
        raise ParameterError(f"{node_name}: invalid parameter device:={format_value(value)}: {err}") from None


# -- the nodes' parameter tables (the README's tables show the same; a test keeps them equal) --------
# Defaults: hilserl.training.learner.LearnerSettings and hilserl.training.loop (kept equal by a test).
LEARNER_PARAMS = (
    Param("checkpoint", "", "Checkpoint directory to load and publish (required). Set at run time: load it and "
          "publish it as the next version.", "str", non_empty=True, check=checkpoint_dir),
    Param("run_id", "", "Names this run in every weights message; '' = a new id per start.", "str"),
    Param("training", True, "Train from the actors' /transitions; false = publish the checkpoint only.", "bool"),
    Param("state_dir", "", "Journal, run.json and training state; a restart on it resumes the run "
          "('' = RUN_DIR/learner, else a temporary folder).", "str"),
    Param("run_dir", "", "Metrics, TensorBoard events and (without state_dir) the training state go here.", "str"),
    Param("device", "auto", "Torch device the agent trains on (auto = a GPU when torch sees one).", "str",
          check=device_name),
    Param("batch_size", 256, "Transitions per gradient update.", "int", low=1),
    Param("utd_ratio", 1.0, "Gradient updates per received transition.", "float", low=0.0, above=True),
    Param("warmup_transitions", 500, "No updates before this many transitions are stored.", "int", low=0),
    Param("demo_ratio", 0.5, "Share of each batch drawn from interventions (RLPD: 0.5).", "float", low=0.0, high=1.0),
    Param("buffer_capacity", 50_000, "Transitions each replay buffer keeps.", "int", low=1),
    Param("gamma", 0.99, "Discount factor.", "float", low=0.0, high=1.0),
    Param("n_step", 3, "Steps of the n-step return.", "int", low=1),
    Param("publish_every_updates", 100, "Publish the weights every N gradient updates.", "int", low=1),
    Param("publish_every_seconds", 0.0, "And/or every N seconds of training (0 = off).", "float", low=0.0),
    Param("checkpoint_every_updates", 1000, "Save the training state every N updates (and on shutdown).",
          "int", low=1),
    Param("torch_threads", 0, "Torch CPU threads for training (0 = torch's default).", "int", low=0),
    Param("load_demos", True, "Fill the demonstration buffer from CHECKPOINT/demos.safetensors at start.", "bool"),
    Param("actor_warmup_updates", 0, "Critic-only updates at start (and after a rollback) before the actor learns.",
          "int", low=0),
    Param("bc_weight", 0.0, "Weight of behaviour cloning on demonstration/intervention rows in the actor loss, "
          "relative to the batch's mean |Q|.", "float", low=0.0),
    Param("encoder_bc_weight", 0.0, "Weight of behaviour cloning on demonstration/intervention rows added to the "
          "critic loss, so it also trains the encoder (0 = the encoder learns from the critic alone).", "float",
          low=0.0),
    Param("encoder_lr_scale", 1.0, "The encoder's learning rate relative to the critic's (0 freezes it).", "float",
          low=0.0),
    Param("guard", True, "Republish the best weights version when a newer one is clearly worse.", "bool"),
    Param("guard_min_episodes", 5, "Episodes a version needs before the guard judges it.", "int", low=1),
    Param("guard_window", 10, "Newest episodes of later versions compared with the best version.", "int", low=1),
    Param("guard_margin", 0.2, "Success-rate drop below the best version that counts as clearly worse.", "float",
          low=0.0, high=1.0),
    Param("guard_alpha", 0.05, "Significance of the one-sided test behind a rollback.", "float", low=0.0,
          high=1.0, above=True),
    Param("clone_updates", 0, "Behaviour-cloning updates of every inference module on the interventions before "
          "RL (a new cell: a person's first demonstrations), and per later round (clone_every); 0 = none.", "int",
          low=0),
    Param("clone_after", 300, "Intervention transitions stored before the cloning updates start (RL waits for "
          "them).", "int", low=1),
    Param("clone_lr", 3e-4, "Learning rate of the cloning updates.", "float", low=0.0, above=True),
    Param("clone_batch_size", 64, "Intervention transitions per cloning update.", "int", low=1),
    Param("clone_every", 0, "Another clone_updates cloning updates each time this many more intervention "
          "transitions have arrived (a person's corrections, as in human-gated DAgger); 0 = once.", "int", low=0),
    Param("clone_average", 0.0, "Decay of the moving average of a cloning round's weights that the round ends on "
          "and publishes; 0 = its last step's weights.", "float", low=0.0, high=1.0, below=True),
)


ACTOR_PARAMS = (
    Param("policy_config", "", "A checkpoint's config.json: refuse weights made for any other config "
          "('' = build from the first weights).", "str", check=existing_file),
    Param("weights_topic", names.WEIGHTS_TOPIC, "Where the learner publishes weights.", "str", non_empty=True),
    Param("image_topics", [names.CAMERA_TOPIC], "One camera topic per policy camera, in its order.", "str[]",
          non_empty=True),
    Param("joint_states_topic", names.JOINT_STATES_TOPIC, "sensor_msgs/JointState input.", "str", non_empty=True),
    Param("command_topic", names.COMMAND_TOPIC, "Joint position targets output.", "str", non_empty=True),
    Param("joints", list(JOINTS), "Commanded joints, in command order.", "str[]", non_empty=True, check=unique),
    Param("joint_lower", list(JOINT_LOWER), "Lower limit per joint (rad or m).", "float[]", per_joint=True),
    Param("joint_upper", list(JOINT_UPPER), "Upper limit per joint (rad or m).", "float[]", per_joint=True),
    Param("action_scale", list(ACTION_SCALE), "Target change per step at |action| = 1, per joint.", "float[]",
          low=0.0, per_joint=True),
    Param("control_hz", 10.0, "Policy steps per second (real-time mode).", "float", low=0.0, above=True),
    Param("deterministic", False, "Act with the policy's mean action (evaluation).", "bool"),
    Param("stale_after", 0.5, "Seconds: older camera/joint data puts the actor in HOLDING.", "float", low=0.0,
          above=True),
    Param("lockstep", False, "Act once per sim step, when every sensor shows it (the sim's lockstep).", "bool"),
    Param("seed", 0, "Seed of the policy's exploration noise.", "int", low=0),
    Param("episode_topic", names.STEP_TOPIC, "The sim's per-step reports ('' or absent: none, as on hardware).",
          "str"),
    Param("reset_service", "", "std_srvs/Trigger called when a person labels an episode ('' = none).", "str"),
    Param("max_episode_steps", 0, "An episode ends after this many actions (0 = by flags or labels only).",
          "int", low=0),
    Param("action_space", "", "joint_delta or ee_delta: refuse weights acting in another action space "
          "('' = the weights' own).", "str", check=actor_action_space),
    Param("command_interface", "joint_position", "ee_delta only: joint_position = IK to joint targets on "
          "command_topic; cartesian_pose = the TCP target as PoseStamped on target_pose_topic.", "str",
          choices=("joint_position", "cartesian_pose")),
    Param("target_pose_topic", "target_pose", "geometry_msgs/PoseStamped TCP targets (cartesian_pose), "
          "frame_id = the URDF's root link.", "str", non_empty=True),
    Param("urdf", "", "ee_delta: the robot's URDF file ('' = read robot_description_topic).", "str",
          check=existing_file),
    Param("robot_description_topic", names.ROBOT_DESCRIPTION_TOPIC, "std_msgs/String URDF, latched (as "
          "robot_state_publisher publishes it).", "str", non_empty=True),
    Param("tcp_frame", TCP_FRAME, "ee_delta: the URDF link the TCP is fixed to.", "str", non_empty=True),
    Param("tcp_offset", [0.0, 0.0, TCP_OFFSET], "TCP in tcp_frame: [x, y, z] or [x, y, z, roll, pitch, yaw] "
          "(m, rad).", "float[]", check=values_count(3, 6)),
    Param("workspace_lower", list(WORKSPACE_LOWER), "TCP box, lower x, y, z in the base frame (m).", "float[]",
          check=values_count(3)),
    Param("workspace_upper", list(WORKSPACE_UPPER), "TCP box, upper x, y, z in the base frame (m).", "float[]",
          check=values_count(3)),
    Param("orientation_reference", list(ORIENTATION_REFERENCE), "Roll, pitch, yaw of the TCP orientation the "
          "limits are measured from (rad, base frame).", "float[]", check=values_count(3)),
    Param("orientation_lower", list(ORIENTATION_LOWER), "Lower roll, pitch, yaw away from the reference (rad).",
          "float[]", check=values_count(3)),
    Param("orientation_upper", list(ORIENTATION_UPPER), "Upper roll, pitch, yaw away from the reference (rad).",
          "float[]", check=values_count(3)),
    Param("teleop_topic", names.TELEOP_TOPIC, "sensor_msgs/Joy for interventions.", "str", non_empty=True),
    Param("teleop_axes", list(range(len(JOINTS))), "Joy axis per joint (-1 = none).", "int[]", low=-1,
          per_joint=True),
    Param("teleop_scale", 1.0, "Joy axis value to action.", "float", low=0.0),
    Param("deadman_button", 0, "Held: the person's axes replace the policy (-1 = none).", "int", low=-1),
    Param("success_button", 1, "Ends the episode as a success (-1 = none).", "int", low=-1),
    Param("failure_button", 2, "Ends the episode as a failure (-1 = none).", "int", low=-1),
    Param("spacenav_twist_topic", names.SPACENAV_TWIST_TOPIC, "ee_delta: geometry_msgs/Twist of a SpaceMouse "
          "(spacenav driver); motion beyond teleop_dead_band takes over.", "str", non_empty=True),
    Param("spacenav_joy_topic", names.SPACENAV_JOY_TOPIC, "ee_delta: sensor_msgs/Joy of the SpaceMouse buttons "
          "(left closes, right opens the gripper).", "str", non_empty=True),
    Param("teleop_dead_band", 0.1, "ee_delta: SpaceMouse and stick values within this read as 0.", "float",
          low=0.0, high=1.0),
    Param("ee_teleop_axes", list(GamepadEeMapping.axes), "ee_delta gamepad: Joy axis for x, y, z, roll, pitch, "
          "yaw (-1 = none).", "int[]", low=-1, check=values_count(6)),
    Param("ee_teleop_signs", list(GamepadEeMapping.signs), "ee_delta gamepad: sign per axis of ee_teleop_axes.",
          "float[]", check=values_count(6)),
    Param("ee_deadman_button", GamepadEeMapping.deadman_button, "ee_delta gamepad: held, the sticks drive the "
          "TCP (-1 = none).", "int", low=-1),
    Param("ee_close_button", GamepadEeMapping.close_button, "ee_delta gamepad: closes the gripper (-1 = none).",
          "int", low=-1),
    Param("ee_open_button", GamepadEeMapping.open_button, "ee_delta gamepad: opens the gripper (-1 = none).",
          "int", low=-1),
    Param("ee_success_button", GamepadEeMapping.success_button, "ee_delta gamepad: ends the episode as a "
          "success (-1 = none).", "int", low=-1),
    Param("ee_failure_button", GamepadEeMapping.failure_button, "ee_delta gamepad: ends the episode as a "
          "failure (-1 = none).", "int", low=-1),
    Param("teleop_timeout", 0.5, "Seconds: a silent teleop device hands control back.", "float", low=0.0,
          above=True),
    Param("teleop_release_at_rest", False, "ee_delta SpaceMouse: a resting puck (no motion beyond teleop_dead_band, no "
          "button) hands back at once instead of after teleop_timeout, so letting go records no 'hold still' "
          "steps as the person's action.", "bool"),
    Param("teleop_wait", 0.1, "Lock-step only: seconds a step waits, while a person is in control, for their "
          "reading made after the step was shown (0 = act at once on their previous reading).", "float",
          low=0.0, high=1.0),
    Param("send_transitions", True, "Stream experience to the learner (acknowledged, resent, spilled).", "bool"),
    Param("transition_batch", 16, "Transitions per batch sent.", "int", low=1),
    Param("spill_dir", "", "Unacknowledged batches wait here ('' = runs/actor_spill/<node>).", "str"),
    Param("run_dir", "", "Metrics and TensorBoard events go to RUN_DIR/<node> ('' = none).", "str"),
    Param("device", "cpu", "Torch device the policy runs on (auto = a GPU when torch sees one).", "str",
          check=device_name),
    Param("reward_classifier", "", "A reward classifier checkpoint: its confirmed success ends an episode with "
          "reward 1 ('' = off).", "str", check=checkpoint_dir),
    Param("reward_threshold", 0.0, "The classifier's p(success) above this counts as a success step (0 = the "
          "threshold stored with the classifier, chosen when it was trained; 0.8 for one without).", "float",
          low=0.0, high=1.0, below=True),
    Param("reward_confirm_steps", 2, "Consecutive success steps that confirm a success.", "int", low=1),
    Param("record_frames_dir", "", "Record each observation's frames here, labelled success while the success "
          "button is held (which then ends no episode) ('' = off).", "str"),
)
PER_JOINT_DEFAULTS = {"joint_lower": JOINT_LOWER, "joint_upper": JOINT_UPPER, "action_scale": ACTION_SCALE,
                      "teleop_axes": tuple(range(len(JOINTS)))}


SIM_PARAMS = (
    Param("task", "reach", "The Genesis task.", "str", choices=TASKS),
    Param("variant", "standard", "Task variant; easy = fixed cube, start pose and lighting, 8 cm success; "
          "shifted = a cell unlike the training sim (dimmer light, camera moved 5 cm and turned 2-3 degrees, other "
          "colours, cube 10% larger and slipperier).", "str", choices=tuple(VARIANTS)),
    Param("seed", 0, "Episode i is reset with seed + i.", "int", low=0),
    Param("lockstep", False, "Advance one control period per command (true) or in real time (false).", "bool"),
    Param("lockstep_max_hz", 0.0, "Lock-step only: at most this many steps per second (0 = no cap).", "float",
          low=0.0),
    Param("control_hz", 10.0, "Real-time mode: physics steps per wall-clock second.", "float", low=0.0, above=True),
    Param("image_size", 84, "Camera image width and height (px).", "int", low=16),
    Param("num_cameras", 1, "Cameras published: camera/, camera_1/, ...", "int", low=1, high=3),
    Param("episode_steps", 50, "Time limit (truncation) per episode, in steps.", "int", low=1),
    Param("max_episodes", 0, "Stop stepping after this many episodes (0 = run forever).", "int", low=0),
)
_OPERATOR = operator_defaults.OperatorSettings()
OPERATOR_PARAMS = (
    Param("task", "reach", "The sim's task (the expert's plan and the distance to go).", "str", choices=TASKS),
    Param("variant", "standard", "The sim's task variant (the cube size the expert plans with).", "str",
          choices=tuple(VARIANTS)),
    Param("stall_steps", _OPERATOR.stall_steps, "Steps without progress after which it takes over.", "int", low=1),
    Param("progress_epsilon", _OPERATOR.progress_epsilon, "m the distance to go must fall below its best of the "
          "episode to count as progress.", "float", low=0.0),
    Param("takeover_steps", _OPERATOR.takeover_steps, "Steps it drives per intervention before letting go.", "int",
          low=1),
    Param("max_interventions_per_episode", _OPERATOR.max_interventions_per_episode, "Interventions at most per "
          "episode (0 = only watches).", "int", low=0),
    Param("demo_episodes", _OPERATOR.demo_episodes, "Episodes it drives whole, from the first step to the end, "
          "before it only watches and corrects (demonstrations on this cell).", "int", low=0),
    Param("demo_noise", _OPERATOR.demo_noise, "Std of the Gaussian noise on its motion in those demonstrations "
          "(action units): a person's hand is not a script.", "float", low=0.0),
    Param("stray_steps", _OPERATOR.stray_steps, "Steps in a row the arm goes off the expert's course (heads "
          "elsewhere, or its fingers go the other way) after which it takes over; 0 = never.", "int", low=0),
    Param("stray_fraction", _OPERATOR.stray_fraction, "Fraction of the expert's step the arm must make toward the "
          "expert's waypoint to count as on course.", "float", low=0.0, high=1.0),
    Param("exam_every", _OPERATOR.exam_every, "While it does not trust the policy, every this many episodes after "
          "the demonstrations the policy works alone (it steps in only outside the safe box), and it judges the "
          "result; once trust_level of the last trust_window judged episodes were done alone it trusts the policy "
          "(every episode then runs and is judged as an exam) until they fall below again. 0 = never.", "int",
          low=0),
    Param("trust_window", _OPERATOR.trust_window, "Judged episodes its trust in the policy rests on (exam_every).",
          "int", low=1),
    Param("trust_level", _OPERATOR.trust_level, "Share of the last trust_window judged episodes the policy must "
          "have done alone to be trusted (exam_every).", "float", low=0.0, above=True, high=1.0),
    Param("trust_forgives", _OPERATOR.trust_forgives, "Failures beyond trust_level among the last trust_window "
          "judged episodes that a policy it trusts is forgiven before it stops trusting it (exam_every); 0 = "
          "trust is lost at the first fall below trust_level.", "int", low=0),
    Param("twist_scale", _OPERATOR.twist_scale, "Twist published per unit of the expert's action: 1 / the actor's "
          "teleop_scale.", "float", low=0.0, above=True),
    Param("safe_lower", list(_OPERATOR.safe_lower), "Safe box, lower x, y, z of the gripper centre (m, base "
          "frame); outside it, it takes over.", "float[]", check=values_count(3)),
    Param("safe_upper", list(_OPERATOR.safe_upper), "Safe box, upper x, y, z (m, base frame).", "float[]",
          check=values_count(3)),
    Param("ee_axes", "xyz", "The actor's end-effector axes: xyz, or xyz_rpy (the twist's angular part too).",
          "str", choices=tuple(EE_AXES)),
    Param("ee_step", DEFAULT_EE_STEP, "The policy's ee_step: m per step at |action| = 1.", "float", low=0.0,
          above=True),
    Param("ee_rot_step", DEFAULT_EE_ROT_STEP, "The policy's ee_rot_step: rad per step at |action| = 1.", "float",
          low=0.0, above=True),
    Param("joint_states_topic", names.JOINT_STATES_TOPIC, "sensor_msgs/JointState input.", "str", non_empty=True),
    Param("episode_topic", names.STEP_TOPIC, "The sim's per-step reports.", "str", non_empty=True),
    Param("markers_topic", names.MARKERS_TOPIC, "The sim's markers: gripper, cube and target positions.", "str",
          non_empty=True),
    Param("spacenav_twist_topic", names.SPACENAV_TWIST_TOPIC, "geometry_msgs/Twist output, as a SpaceMouse.",
          "str", non_empty=True),
    Param("spacenav_joy_topic", names.SPACENAV_JOY_TOPIC, "sensor_msgs/Joy output: the SpaceMouse's buttons.",
          "str", non_empty=True),
)
TELEOP_PARAMS = (
    Param("mode", "joint", "joint: Joy axes per joint on /joy (a gamepad stand-in); ee: end-effector keys as "
          "a SpaceMouse's Twist + Joy, labels on /joy.", "str", choices=("joint", "ee")),
    Param("rate", 20.0, "Joy messages per second.", "float", low=0.0, above=True),
    Param("key_hold", 0.25, "Seconds a key press drives its axis, like a held stick.", "float", low=0.0, above=True),
)


def markdown_table(specs: Sequence[Param]) -> str:
    """The README's table of a node's parameters (a test checks the README holds exactly this)."""
    rows = ["| parameter | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for s in specs:
        default = format_value(s.default).replace("|", "\\|")
        rows.append(f"| `{s.name}` | `{default}` | {s.allowed()} | {s.description} |")
    return "\n".join(rows)
