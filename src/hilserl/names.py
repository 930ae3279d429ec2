"""Names every part of hilserl shares: topics, services, joint names and policy types.

Plain constants, importable without torch or rclpy (the launch file, graph.py and the parameter checks
load this before anything heavy). The QoS profiles that go with the topics live in hilserl/nodes/qos.py,
where importing rclpy is fine. Topic names are a contract: extend, don't rename.
"""

from __future__ import annotations

# -- topics and services ---------------------------------------------------------------------------
WEIGHTS_TOPIC = "/policy_weights"  # learner -> actors: the whole inference state, latched
TRANSITIONS_TOPIC = "/transitions"  # actors -> learner: batches of experience
ACK_TOPIC = "/transitions_ack"  # learner -> actors: "stored through N" per stream
COMMAND_TOPIC = "/forward_position_controller/commands"  # a ros2_control forward position controller
JOINT_STATES_TOPIC = "/joint_states"
CAMERA_TOPIC = "camera/image_raw"
CAMERA_INFO_TOPIC = "camera/camera_info"
TELEOP_TOPIC = "/joy"  # sensor_msgs/Joy from the joy package or `hilserl teleop`
SPACENAV_TWIST_TOPIC = "/spacenav/twist"  # geometry_msgs/Twist from the spacenav driver (a SpaceMouse)
SPACENAV_JOY_TOPIC = "/spacenav/joy"  # sensor_msgs/Joy: the SpaceMouse's buttons
ROBOT_DESCRIPTION_TOPIC = "/robot_description"  # std_msgs/String URDF, latched (robot_state_publisher, the sim)
CLOCK_TOPIC = "/clock"
DIAGNOSTICS_TOPIC = "/diagnostics"
STATUS_TOPIC = "~/status"  # every node: compact JSON, latched
WEIGHTS_LOADED_TOPIC = "~/weights_loaded"  # actor: what it loaded, digests from its own modules
EPISODES_TOPIC = "~/episodes"  # actor: one JSON line per finished episode, latched history
INTERVENTION_TOPIC = "intervention"  # actor -> its sim's markers: a person is driving
STEP_TOPIC = "sim/step"  # sim -> actor: reward and episode flags of every step, keyed by (episode, step)
SIM_EPISODES_TOPIC = "sim/episodes"  # sim: one JSON line per finished episode, latched history
MARKERS_TOPIC = "sim/markers"
RESET_SERVICE = "sim/reset"

# Per-arm topics. With several actors each is remapped into the actor's namespace (absolute -> relative).
PER_ARM_TOPICS = (JOINT_STATES_TOPIC, COMMAND_TOPIC, CLOCK_TOPIC, TELEOP_TOPIC, SPACENAV_TWIST_TOPIC, SPACENAV_JOY_TOPIC,
                  ROBOT_DESCRIPTION_TOPIC)


def camera_prefix(index: int) -> str:
    """Camera 0 is `camera/...`, further ones `camera_1/...`, `camera_2/...`."""
    return "camera" if index == 0 else f"camera_{index}"


def camera_image_topics(cameras: int) -> list[str]:
    """The image topics of the first `cameras` cameras, as the sim publishes them: `camera/image_raw`, ..."""
    return [f"{camera_prefix(i)}/image_raw" for i in range(cameras)]


# -- the arm and the policies ----------------------------------------------------------------------
# The Franka Panda as commanded through ros2_control: 7 arm joints and one gripper command.
PANDA_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1",)

POLICY_TYPES = ("drqv2", "sac")
