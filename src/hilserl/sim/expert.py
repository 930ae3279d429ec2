"""A scripted expert for the Genesis task: a gripper-centre waypoint (and a top-down orientation) turned into
a policy action in the policy's action space:
  joint_delta  Genesis inverse kinematics toward the waypoint, as joint deltas in units of ACTION_SCALE,
               clipped to [-1, 1];
  ee_delta     the TCP's straight-line step toward the waypoint in units of ee_step (scaled down as a whole
               when beyond 1, so the direction is kept), with ee_axes xyz_rpy the rotation toward the
               top-down orientation in units of ee_rot_step; the finger as a joint delta.

The expert is a function of the current state only (joint positions, cube pose, goal), never of its own
history, so it can label any state the learner visits: that is what DAgger-style relabelling needs.

  reach  waypoint = the task's target above the cube; gripper open.
  push   go above a point behind the cube (seen from the goal), come down to cube height, then drive the
         gripper centre through the cube toward the goal; fingers closed.
  lift   go above the cube, come down around it, close the fingers, then rise with it as soon as they touch
         it (the cube sits at any yaw under a hand whose orientation ee_axes xyz holds, so the fingers may
         meet its corners; rising squeezes it straight).

The gripper value is the finger's joint delta toward the stage's finger target; with `discrete_gripper` it is
the grasp critic's command instead (close -1, stay 0, open +1: hilserl.policies.inference.GRIPPER_COMMANDS).
"""

from __future__ import annotations

import math

import numpy as np

import pinocchio as pin

import torch

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.panda import panda_arm
from hilserl.policies.inference import GRIPPER_COMMANDS, gripper_command_index
from hilserl.robot import ACTION_SCALE, FINGER_CLOSED, FINGER_INDEX, FINGER_OPEN, TCP_OFFSET
from hilserl.sim.task import Observation, PandaTask, TaskConfig

APPROACH_HEIGHT = 0.10  # m above the cube's centre before coming down (push, lift)
XY_TOLERANCE = 0.012  # m: close enough above the cube / behind it to come down
GRASP_TOLERANCE = 0.012  # m: gripper centre this close to the cube's centre (in the plane, and not above it
# by more) closes the fingers: the fingers take a few steps to close, the hand finishes its descent meanwhile
BETWEEN_FINGERS = 0.03  # m: gripper centre this close to the cube's centre (in the plane and in height) has it
# between the fingers (a held cube slides along the finger pads while rising)
TOUCHING_FINGER = 0.034  # finger opening below which closed fingers hold the cube: its half-width is 0.025 m
# face on, up to 0.035 m on its corners; the squeeze while rising turns it face on
SQUEEZING_FINGER = 0.02  # closed fingers stopped above this opening have the cube between them
LOW_IN_HAND = 0.06  # m: a squeezed cube may slide this far below the gripper centre and still be held
XY_LEAD = 2.0  # the approach's gain on the gripper centre's error in the plane
LIFT_MARGIN = 0.03  # m past the lift point that a held cube is raised toward
IK_MAX_SAMPLES = 4  # random restarts when the first IK solve misses (rare near the workspace)


def top_down_quat(yaw: float) -> np.ndarray:
    """Hand orientation (w, x, y, z) pointing the fingers at the floor, rotated by `yaw` about the vertical."""
    # Rz(yaw) * Rx(pi): the hand's z axis points down.
    return np.array([0.0, math.cos(yaw / 2), math.sin(yaw / 2), 0.0])


def cube_yaw(obs: Observation) -> float:
    """Yaw of the cube from its (x, y, z, w) quaternion, folded to (-pi/4, pi/4] since a cube has 4-fold symmetry."""
    x, y, z, w = obs.cube_quaternion
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4


class ScriptedExpert:
    def __init__(self, task: PandaTask | None, gain: float = 1.0, space: EeActionSpace | None = None,
                 config: TaskConfig | None = None, discrete_gripper: bool = False):
        """`space`: the policy's end-effector action settings, or None for joint-delta actions (Genesis IK: they
        need the `task`). Without a task (outside the sim's process), `config` names the task and sizes.
        `discrete_gripper`: the gripper value is a command (close, stay, open), as a grasp critic picks it."""
        if task is None and (config is None or space is None):
            raise ValueError("a ScriptedExpert without a Genesis task needs its TaskConfig and an ee action space")
        if discrete_gripper and space is None:
            raise ValueError("a discrete gripper needs end-effector actions (give `space`)")
        self.task, self.gain, self.space, self.discrete_gripper = task, gain, space, discrete_gripper
        self.config = task.config if task is not None else config
        self.scale = np.asarray(ACTION_SCALE, dtype=np.float64)
        self.arm = panda_arm() if space is not None and space.rotates else None  # the TCP's orientation

    def plan(self, obs: Observation) -> tuple[np.ndarray, float, float]:
        """Where the gripper centre should head now: (waypoint, hand yaw, finger opening FINGER_OPEN/CLOSED)."""
        kind = self.config.task
        if kind == "reach":
            return obs.target_position, 0.0, FINGER_OPEN
        if kind == "push":
            return self._push(obs)
        return self._lift(obs)

    def act(self, obs: Observation, env: int = 0) -> np.ndarray:
        """The expert's action in [-1, 1]^action_dim for this observation of environment `env`."""
        waypoint, yaw, finger = self.plan(obs)
        hand = (finger - obs.joint_positions[FINGER_INDEX]) / self.scale[FINGER_INDEX]
        if self.discrete_gripper:  # the command whose thresholds the joint delta passes (stay when within a step)
            hand = GRIPPER_COMMANDS[int(gripper_command_index(torch.tensor(float(np.clip(hand, -1.0, 1.0)))))]
        if self.space is not None:
            return np.clip(np.append(self.ee_motion(obs, waypoint, yaw), hand), -1.0, 1.0)
        q_goal = self.solve_ik(waypoint, top_down_quat(yaw), obs.joint_positions, env)
        arm = (q_goal[:7] - obs.joint_positions[:7]) / self.scale[:7] * self.gain
        return np.clip(np.append(arm, hand), -1.0, 1.0)

    def ee_motion(self, obs: Observation, waypoint: np.ndarray, yaw: float) -> np.ndarray:
        """The end-effector motion values toward the waypoint (and the top-down orientation at `yaw`)."""
        translation = (waypoint - obs.ee_position) / self.space.step * self.gain
        translation /= max(1.0, float(np.abs(translation).max()))  # a full step along the straight line
        if not self.space.rotates:
            return translation
        current = self.arm.tcp_pose(obs.joint_positions).rotation
        goal = pin.rpy.rpyToMatrix(math.pi, 0.0, yaw)  # top_down_quat(yaw) as a matrix
        rotation = np.asarray(pin.rpy.matrixToRpy(goal @ current.T)) / self.space.rot_step * self.gain
        return np.append(translation, np.clip(rotation, -1.0, 1.0))

    def solve_ik(self, tcp_position: np.ndarray, quat_wxyz: np.ndarray, q: np.ndarray, env: int) -> np.ndarray:
        """Joint positions (9 dofs) putting the gripper centre at `tcp_position`, starting from `q` (8 commands)."""
        task = self.task
        init = np.append(q, q[FINGER_INDEX])  # both fingers
        kwargs = dict(link=task.hand, local_point=np.array([0.0, 0.0, TCP_OFFSET]), max_samples=IK_MAX_SAMPLES,
                      seed=0)
        if task.batched:
            qpos = task.robot.inverse_kinematics(pos=tcp_position[None], quat=quat_wxyz[None], init_qpos=init[None],
                                                 envs_idx=[env], **kwargs)[0]
        else:
            qpos = task.robot.inverse_kinematics(pos=tcp_position, quat=quat_wxyz, init_qpos=init, **kwargs)
        return np.asarray(qpos.detach().cpu().numpy() if hasattr(qpos, "detach") else qpos, dtype=np.float64)

    # -- multi-stage tasks: the stage is read from the state --------------------------------------
    def descent_height(self, xy_error: float) -> float:
        """Height above the cube to hold while still `xy_error` off in the plane: smooth, so the waypoint does
        not chatter between 'above' and 'down' while the arm settles."""
        return float(np.clip((xy_error - XY_TOLERANCE / 2) * 8.0, 0.0, APPROACH_HEIGHT))

    def _lift(self, obs: Observation) -> tuple[np.ndarray, float, float]:
        cube, tcp, finger = obs.cube_position, obs.ee_position, obs.joint_positions[FINGER_INDEX]
        xy_error, above = float(np.linalg.norm(tcp[:2] - cube[:2])), float(tcp[2] - cube[2])
        between_fingers = xy_error < BETWEEN_FINGERS and abs(above) < BETWEEN_FINGERS
        # A cube that slid down the finger pads while rising (a slow rise, a jolt) is still held while the fingers
        # stay stopped on it: opening there would drop it.
        low_in_hand = xy_error < BETWEEN_FINGERS and 0.0 <= above < LOW_IN_HAND and finger > SQUEEZING_FINGER
        if finger < TOUCHING_FINGER and (between_fingers or low_in_hand):
            # held: rise, moving the hand so that the cube (not the hand) ends up past the lift point, and at
            # full speed until close to it (the arm sags under gravity, so a short step rises less than asked)
            goal = obs.target_position + np.array([0.0, 0.0, LIFT_MARGIN])
            return tcp + goal - cube, cube_yaw(obs), FINGER_CLOSED
        # Aim past the cube in the plane by the remaining error: the arm settles short of a small step, so an
        # error of a few millimetres would otherwise never close.
        aim = cube + np.array([*(cube[:2] - tcp[:2]) * (XY_LEAD - 1.0), 0.0])
        if xy_error < GRASP_TOLERANCE and above < GRASP_TOLERANCE:
            return aim, cube_yaw(obs), FINGER_CLOSED  # around the cube: close
        height = self.descent_height(xy_error)
        if xy_error < BETWEEN_FINGERS:  # the open fingers straddle the cube: line up in the plane, never back up
            height = min(height, max(above, 0.0))
        return aim + np.array([0.0, 0.0, height]), cube_yaw(obs), FINGER_OPEN

    def _push(self, obs: Observation) -> tuple[np.ndarray, float, float]:
        cube, tcp, goal = obs.cube_position, obs.ee_position, obs.target_position
        to_goal = goal[:2] - cube[:2]
        direction = to_goal / max(np.linalg.norm(to_goal), 1e-6)
        behind_xy = cube[:2] - direction * (self.config.cube_size / 2 + 0.03)
        yaw = math.atan2(direction[1], direction[0]) + math.pi / 2  # fingers across the push direction
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
        low = self.config.cube_size / 2
        offset = tcp[:2] - cube[:2]
        behind = float(offset @ direction) < -self.config.cube_size / 2  # gripper on the far side from the goal
        lateral = abs(float(offset @ np.array([-direction[1], direction[0]])))
        if behind and lateral < XY_TOLERANCE * 2 and tcp[2] < low + 0.03:
            push_to = cube[:2] + direction * 0.06  # drive through the cube toward the goal
            return np.array([*push_to, low]), yaw, FINGER_CLOSED
        height = self.descent_height(float(np.linalg.norm(tcp[:2] - behind_xy)))
        return np.array([*behind_xy, low + height]), yaw, FINGER_CLOSED
