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
  lift   go above the cube, come down around it, close the fingers, then rise with it.
"""

from __future__ import annotations

import math

import numpy as np

import pinocchio as pin

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.kinematics.panda import panda_arm
from hilserl.robot import ACTION_SCALE, FINGER_CLOSED, FINGER_OPEN, TCP_OFFSET
from hilserl.sim.task import Observation, PandaTask, TaskConfig

APPROACH_HEIGHT = 0.10  # m above the cube's centre before coming down (push, lift)
XY_TOLERANCE = 0.012  # m: close enough above the cube / behind it to come down
GRASP_TOLERANCE = 0.012  # m: gripper centre this close to the cube's centre closes the fingers
GRASPED_FINGER = 0.03  # finger opening below which the cube counts as held
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
                 config: TaskConfig | None = None):
        """`space`: the policy's end-effector action settings, or None for joint-delta actions (Genesis IK: they
        need the `task`). Without a task (outside the sim's process), `config` names the task and sizes."""
        if task is None and (config is None or space is None):
            raise ValueError("a ScriptedExpert without a Genesis task needs its TaskConfig and an ee action space")
        self.task, self.gain, self.space = task, gain, space
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
        hand = (finger - obs.joint_positions[7]) / self.scale[7]
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
        init = np.append(q, q[7])  # both fingers
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
        cube, tcp, finger = obs.cube_position, obs.ee_position, obs.joint_positions[7]
        xy_error = float(np.linalg.norm(tcp[:2] - cube[:2]))
        between_fingers = xy_error < GRASP_TOLERANCE * 2 and abs(tcp[2] - cube[2]) < GRASP_TOLERANCE * 2
        if finger < GRASPED_FINGER and between_fingers:
            return obs.target_position + np.array([0.0, 0.0, 0.02]), cube_yaw(obs), FINGER_CLOSED  # held: rise
        if np.linalg.norm(tcp - cube) < GRASP_TOLERANCE:
            return cube, cube_yaw(obs), FINGER_CLOSED  # around the cube: close
        height = self.descent_height(xy_error)
        return cube + np.array([0.0, 0.0, height]), cube_yaw(obs), FINGER_OPEN

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
