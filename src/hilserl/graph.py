"""The hilserl ROS graph as plain data: which nodes run, with which parameters and remappings.

`launch/bringup.launch.py` (for `ros2 launch hilserl bringup.launch.py`) and `python -m hilserl bringup`
(processes from a plain venv) both turn the same `build_graph(parse_launch_args(...))` into running nodes,
so the two cannot start different graphs; test/test_bringup_parity.py compares what each would start.
Nothing here imports rclpy, launch or torch: the launch file imports this module at launch time.

The graph, for `num_actors` = N:
  learner                      root namespace; trains and publishes /policy_weights
  actor (+ sim when sim:=true) N = 1: root namespace, exactly the topics a single real arm uses.
                               N > 1: one per namespace actor_0, actor_1, ...; every per-arm topic
                               (/joint_states, the command topic, /clock, /joy) is remapped into that
                               namespace, so each actor drives its own arm (its own sim) and they share
                               only /policy_weights and the learner.
  robot_state_publisher        sim:=true and rviz:=true: the Panda URDF for RViz (a real arm's own bringup
                               already runs one)
  rviz2                        rviz:=true, with config/hilserl.rviz (N > 1: shows actor_0's arm)

Parameters come from config/<node>.yaml (keys `/**/<node name>`, so they apply in any namespace), then
config/sim.yaml for the actor when sim:=true (the actor settings a simulated arm needs), then the user's
`params_file`, then the overrides computed here from the launch arguments. Later wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from hilserl import names
from hilserl.names import PER_ARM_TOPICS, POLICY_TYPES
from hilserl.sim.task import TASKS

PACKAGE = "hilserl"
DEFAULT_TASK = "reach"
POLICIES = POLICY_TYPES


def task_checkpoint(task: str) -> str:
    """The shipped policy for a task, relative to the package root (source tree or share/hilserl)."""
    return f"checkpoints/{task}"


def task_reward_classifier(task: str) -> str:
    """The shipped reward classifier for a task (the actor uses it when it exists), relative to the package root."""
    return f"checkpoints/{task}_reward"


DEFAULT_CHECKPOINT = task_checkpoint(DEFAULT_TASK)


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


# The launch file declares exactly these; `python -m hilserl bringup name:=value` takes the same.
LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("sim", "true", "true: Genesis sim node(s) stand in for the arm; false: a real arm's "
                                  "ros2_control is already running"),
    LaunchArgument("task", DEFAULT_TASK, f"the task, one of {TASKS}: picks the sim's task, the default checkpoint "
                                         f"({task_checkpoint('<task>')}) and the actor's reward classifier "
                                         f"({task_reward_classifier('<task>')}, where the package has one)"),
    LaunchArgument("checkpoint", "", f"checkpoint directory for the learner ('' = {task_checkpoint('<task>')} in the "
                                     "package)"),
    LaunchArgument("num_actors", "1", "actor count; above 1 each actor (and its sim) gets namespace actor_<i>"),
    LaunchArgument("policy", "", "drqv2 or sac: refuse to start unless the checkpoint holds this policy "
                                 "('' = whatever it holds)"),
    LaunchArgument("rviz", "false", "start RViz with config/hilserl.rviz (and robot_state_publisher in sim)"),
    LaunchArgument("use_sim_time", "false", "learner, actors and RViz follow the sim's /clock"),
    LaunchArgument("run_dir", "", "metrics and logs go here ('' = runs/<date-time> in the working directory)"),
    LaunchArgument("params_file", "", "extra ROS parameters file applied to every hilserl node, last "
                                      "(a real arm's joints, limits, topics)"),
)


@dataclass(frozen=True)
class GraphArgs:
    sim: bool = True
    task: str = DEFAULT_TASK
    checkpoint: str = ""
    num_actors: int = 1
    policy: str = ""
    rviz: bool = False
    use_sim_time: bool = False
    run_dir: str = ""
    params_file: str = ""


@dataclass
class NodeSpec:
    """One node to start: what `launch_ros.actions.Node` takes, as plain data."""

    package: str
    executable: str
    name: str
    namespace: str = ""  # "" = root; else without slashes, e.g. "actor_0"
    param_files: list[str] = field(default_factory=list)  # absolute paths, applied in order
    overrides: dict[str, object] = field(default_factory=dict)  # applied after the files
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)  # before --ros-args
    role: str = ""  # learner / actor / sim / robot_state_publisher / rviz: how bringup sequences it

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. /actor_0/actor."""
        return f"/{self.namespace}/{self.name}" if self.namespace else f"/{self.name}"


class GraphError(ValueError):
    """A launch argument or config file that cannot make a graph; the message says what to change."""


# -- where the package's files are -----------------------------------------------------------------
def package_root() -> Path:
    """The source tree when running from it, else the installed share/hilserl (colcon build)."""
    source = Path(__file__).resolve().parents[2]
    if (source / "package.xml").is_file() and (source / "config").is_dir():
        return source
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as err:
        raise GraphError(f"hilserl is not running from its source tree ({source}) and ament_index_python is "
                         "missing: source the ROS 2 workspace it was built in") from err
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, OSError) as err:  # OSError: AMENT_PREFIX_PATH unset
        raise GraphError(f"package '{PACKAGE}' is not in AMENT_PREFIX_PATH ({err}): `colcon build` it and "
                         "`source install/setup.bash`") from err


def config_file(name: str) -> Path:
    return package_root() / "config" / name


# -- arguments -------------------------------------------------------------------------------------
def parse_bool(name: str, value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise GraphError(f"launch argument {name}:={value!r} is not a boolean: use true or false")


def parse_launch_args(values: dict[str, str]) -> GraphArgs:
    """Launch-argument strings (as `ros2 launch` resolves them) -> GraphArgs; unknown names are an error."""
    known = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise GraphError(f"unknown launch argument(s) {unknown}; known: {sorted(known)}")
    v = known | {k: str(x) for k, x in values.items()}
    try:
        num_actors = int(v["num_actors"])
    except ValueError:
        raise GraphError(f"num_actors:={v['num_actors']!r} is not an integer") from None
    if num_actors < 1:
        raise GraphError(f"num_actors:={num_actors}: at least one actor is needed")
    if v["policy"] not in ("", *POLICIES):
        raise GraphError(f"policy:={v['policy']!r}: use one of {POLICIES} (or leave it empty)")
    if v["task"] not in TASKS:
        raise GraphError(f"task:={v['task']!r}: use one of {TASKS}")
    return GraphArgs(sim=parse_bool("sim", v["sim"]), task=v["task"], checkpoint=v["checkpoint"], num_actors=num_actors,
                     policy=v["policy"], rviz=parse_bool("rviz", v["rviz"]),
                     use_sim_time=parse_bool("use_sim_time", v["use_sim_time"]), run_dir=v["run_dir"],
                     params_file=v["params_file"])


def resolve_checkpoint(args: GraphArgs) -> Path:
    """The checkpoint the learner loads, checked here so a wrong path fails before anything starts."""
    path = Path(args.checkpoint).expanduser() if args.checkpoint else package_root() / task_checkpoint(args.task)
    config = path / "config.json"
    if not config.is_file():
        hint = (f"train one with `python -m hilserl pretrain --task {args.task} --action-space ee_delta --out {path}`, "
                f"or for an untrained stand-in `python -m hilserl init-checkpoint --policy {args.policy or 'drqv2'} "
                f"--action-space ee_delta --seed 0 --out {path}`")
        raise GraphError(f"no checkpoint at {path} (expected {config}): {hint}; "
                         "or pass checkpoint:=DIR")
    if args.policy:
        held = checkpoint_policy(config)["policy"]
        if held != args.policy:
            raise GraphError(f"policy:={args.policy} but checkpoint {path} holds a {held} policy: pass "
                             f"policy:={held} or a {args.policy} checkpoint")
    return path.resolve()


def checkpoint_policy(config: Path) -> dict:
    """The policy section of a checkpoint's config.json."""
    try:
        policy = json.loads(config.read_text())["policy"]
        policy["policy"]
    except (ValueError, KeyError, TypeError) as err:
        raise GraphError(f"{config} is not a hilserl checkpoint config: {err}") from err
    return policy


def default_run_dir() -> str:
    return str(Path("runs", time.strftime("%Y%m%d-%H%M%S")).resolve())


# -- the graph -------------------------------------------------------------------------------------
def build_graph(args: GraphArgs) -> list[NodeSpec]:
    """The nodes for these arguments, in start order (sim, learner, actors, then the viewers)."""
    checkpoint = resolve_checkpoint(args)
    run_dir = str(Path(args.run_dir).expanduser().resolve()) if args.run_dir else default_run_dir()
    extra = [str(Path(args.params_file).expanduser().resolve())] if args.params_file else []
    for path in extra:
        if not Path(path).is_file():
            raise GraphError(f"params_file:={path} does not exist")
    sim_time = {"use_sim_time": args.use_sim_time}
    specs: list[NodeSpec] = []
    namespaces = [""] if args.num_actors == 1 else [f"actor_{i}" for i in range(args.num_actors)]
    per_arm = [] if args.num_actors == 1 else [(topic, topic.lstrip("/")) for topic in PER_ARM_TOPICS]

    policy = checkpoint_policy(checkpoint / "config.json")
    # In sim, the sim renders as many cameras as the policy sees and the actor subscribes to each; a real arm's
    # camera topics come from its params_file.
    cameras = int(policy.get("num_cameras", 1))
    actor_cameras = {"image_topics": names.camera_image_topics(cameras)} if args.sim and cameras > 1 else {}
    if args.sim:  # the sim keeps wall-clock time: it is what publishes /clock
        for i, ns in enumerate(namespaces):
            specs.append(NodeSpec(PACKAGE, "sim", "sim", ns, [str(config_file("sim.yaml")), *extra],
                                  {"seed": i, "run_dir": run_dir, "task": args.task, "num_cameras": cameras},
                                  list(per_arm), role="sim"))
    specs.append(NodeSpec(PACKAGE, "learner", "learner", "", [str(config_file("learner.yaml")), *extra],
                          {"checkpoint": str(checkpoint), "run_dir": run_dir} | sim_time, role="learner"))
    # The actor acts in the checkpoint's action space and refuses weights for any other (older
    # checkpoints, without the field, are joint_delta).
    action_space = policy.get("action_space", "joint_delta")
    actor_files = [str(config_file("actor.yaml"))] + ([str(config_file("sim.yaml"))] if args.sim else [])
    # The task's shipped reward classifier, when the package has one, gives the reward on a real arm.
    classifier = package_root() / task_reward_classifier(args.task)
    reward = {"reward_classifier": str(classifier)} if (classifier / "config.json").is_file() else {}
    for i, ns in enumerate(namespaces):
        specs.append(NodeSpec(PACKAGE, "actor", "actor", ns, actor_files + extra,
                              {"seed": i, "run_dir": run_dir, "action_space": action_space} | actor_cameras | reward
                              | sim_time,
                              list(per_arm), role="actor"))

    if args.rviz:
        # RViz's config names root topics; with several actors it shows actor_0's.
        view = [] if args.num_actors == 1 else [
            (f"/{t}", f"/{namespaces[0]}/{t}") for t in ("camera/image_raw", "sim/markers", "joint_states")]
        if args.sim:
            from hilserl.nodes.robot_description import panda_urdf

            specs.append(NodeSpec("robot_state_publisher", "robot_state_publisher", "robot_state_publisher", "",
                                  [], {"robot_description": panda_urdf()} | sim_time, list(view),
                                  role="robot_state_publisher"))
        specs.append(NodeSpec("rviz2", "rviz2", "rviz2", "", [], dict(sim_time), list(view),
                              arguments=["-d", str(config_file("hilserl.rviz"))], role="rviz"))
    return specs


# -- what each node publishes (RViz config and probes check against this) -------------------------
# Relative names resolve in the node's namespace. Kept beside the graph so a rename shows up in one diff.
PUBLISHED_TOPICS: dict[str, tuple[str, ...]] = {
    "learner": (names.WEIGHTS_TOPIC, names.STATUS_TOPIC, names.DIAGNOSTICS_TOPIC),
    "actor": (names.COMMAND_TOPIC, names.STATUS_TOPIC, names.WEIGHTS_LOADED_TOPIC, names.EPISODES_TOPIC,
              names.DIAGNOSTICS_TOPIC),
    "sim": (names.JOINT_STATES_TOPIC, names.CAMERA_TOPIC, names.CAMERA_INFO_TOPIC, names.STEP_TOPIC,
            names.SIM_EPISODES_TOPIC, names.MARKERS_TOPIC, names.CLOCK_TOPIC, names.STATUS_TOPIC,
            names.DIAGNOSTICS_TOPIC, names.ROBOT_DESCRIPTION_TOPIC),
    "robot_state_publisher": ("/robot_description", "/tf", "/tf_static"),
    "teleop": (names.TELEOP_TOPIC, names.SPACENAV_TWIST_TOPIC, names.SPACENAV_JOY_TOPIC, names.DIAGNOSTICS_TOPIC),
    "operator": (names.SPACENAV_TWIST_TOPIC, names.SPACENAV_JOY_TOPIC, names.STATUS_TOPIC),
}


def resolve_topic(topic: str, spec: NodeSpec) -> str:
    """A node's topic name as the graph sees it: namespace, `~` and this spec's remappings applied."""
    if topic.startswith("~/"):
        name = f"{spec.fqn}/{topic[2:]}"
    elif topic.startswith("/"):
        name = topic
    else:
        name = f"/{spec.namespace}/{topic}" if spec.namespace else f"/{topic}"
    for source, target in spec.remappings:
        if name == source:
            return target if target.startswith("/") else (f"/{spec.namespace}/{target}" if spec.namespace
                                                           else f"/{target}")
    return name


def graph_topics(specs: list[NodeSpec]) -> set[str]:
    """Every topic the hilserl nodes and robot_state_publisher of this graph publish."""
    return {resolve_topic(t, s) for s in specs for t in PUBLISHED_TOPICS.get(s.role, ())}
