"""The arm's kinematic model from its URDF: TCP forward kinematics and damped-least-squares differential IK.

    arm = ArmKinematics(urdf_text, joints=JOINTS, tcp_frame="panda_hand", tcp_offset=(0, 0, 0.1034))
    pose = arm.tcp_pose(q)                  # pinocchio.SE3 of the TCP in the base (root link) frame
    result = arm.solve_ik(target_pose, q)   # joint positions in `joints` order, within the joint limits

Joint vectors are always in the project's `joints` order (the order of the position controller's command
array). Each name is looked up in the URDF. `joints` that move the TCP are the arm joints; the others
(finger joints) are the gripper joints, which IK leaves alone. URDF joints missing from `joints` (a mimic
finger) are held at zero: they must not move the TCP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

TCP_FRAME_NAME = "hilserl_tcp"  # the frame added to the model: tcp_frame composed with tcp_offset
# Differential IK: a few iterations of q += J^T (J J^T + damping^2 I)^-1 e, each clipped to the joint limits.
# One control step's target is a few centimetres away, reached in 2-4 iterations; far targets take more.
IK_MAX_ITERATIONS = 100
IK_DAMPING = 1e-3  # m (or rad): keeps the step bounded near singularities, negligible elsewhere
IK_POSITION_TOLERANCE = 1e-5  # m
IK_ROTATION_TOLERANCE = 1e-4  # rad
IK_MAX_JOINT_STEP = 0.2  # rad per iteration: keeps each iteration within the Jacobian's linear range


@dataclass
class IkResult:
    q: np.ndarray  # joint positions in `joints` order, within the joint limits
    pose: pin.SE3  # the TCP's pose at q
    position_error: float  # m, TCP distance from the target at q
    rotation_error: float  # rad, TCP rotation angle from the target at q
    iterations: int

    def reached(self, position_tolerance: float = 1e-3, rotation_tolerance: float = 1e-2) -> bool:
        return self.position_error <= position_tolerance and self.rotation_error <= rotation_tolerance


def offset_placement(tcp_offset: Sequence[float]) -> pin.SE3:
    """[x, y, z] or [x, y, z, roll, pitch, yaw] (m, rad) as a placement in the tcp_frame."""
    values = np.asarray(tcp_offset, dtype=np.float64)
    if values.shape not in ((3,), (6,)) or not np.isfinite(values).all():
        raise ValueError(f"tcp_offset must be 3 (xyz, m) or 6 (xyz + roll, pitch, yaw) finite numbers, "
                         f"got {tcp_offset}")
    rotation = pin.rpy.rpyToMatrix(*values[3:]) if values.size == 6 else np.eye(3)
    return pin.SE3(rotation, values[:3])


class ArmKinematics:
    def __init__(self, urdf: str, joints: Sequence[str], tcp_frame: str, tcp_offset: Sequence[float] = (0.0, 0.0, 0.0),
                 joint_lower: Sequence[float] | None = None, joint_upper: Sequence[float] | None = None):
        try:
            self.model = pin.buildModelFromXML(urdf)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot build a kinematic model from the URDF: {err}") from err
        self.data = self.model.createData()
        self.base_frame = self.model.frames[1].name  # the URDF's root link: the frame of every pose here
        self.joints = tuple(joints)
        self.tcp_frame = tcp_frame
        self._add_tcp_frame(tcp_frame, offset_placement(tcp_offset))
        self._map_joints()
        self._set_limits(joint_lower, joint_upper)
        self._q = pin.neutral(self.model)  # full configuration; joints outside `joints` stay at neutral

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "ArmKinematics":
        return cls(Path(path).read_text(), **kwargs)

    # -- set-up ---------------------------------------------------------------------------------------
    def _add_tcp_frame(self, tcp_frame: str, offset: pin.SE3) -> None:
        if not self.model.existFrame(tcp_frame):
            links = [f.name for f in self.model.frames if f.type == pin.FrameType.BODY]
            raise ValueError(f"tcp_frame {tcp_frame!r} is not a frame of the URDF; its links are {links}")
        parent = self.model.frames[self.model.getFrameId(tcp_frame)]
        frame = pin.Frame(TCP_FRAME_NAME, parent.parentJoint, self.model.getFrameId(tcp_frame),
                          parent.placement * offset, pin.FrameType.OP_FRAME)
        self.tcp_id = self.model.addFrame(frame)
        self.data = self.model.createData()

    def _map_joints(self) -> None:
        model = self.model
        unknown = [name for name in self.joints if not model.existJointName(name)]
        if unknown:
            raise ValueError(f"joints {unknown} are not in the URDF; its movable joints are {list(model.names[1:])}")
        ids = [model.getJointId(name) for name in self.joints]
        multi = [name for name, j in zip(self.joints, ids) if model.joints[j].nq != 1]
        if multi:
            raise ValueError(f"joints {multi} are not single-axis (revolute with limits or prismatic); "
                             "only those can be commanded by position")
        self.q_index = np.array([model.joints[j].idx_q for j in ids])
        self.v_index = np.array([model.joints[j].idx_v for j in ids])
        chain = set(model.supports[model.frames[self.tcp_id].parentJoint]) - {0}
        missing = sorted(model.names[j] for j in chain - set(ids))
        if missing:
            raise ValueError(f"joints {missing} move tcp_frame {self.tcp_frame!r} but are not in `joints`")
        self.arm_index = np.array([i for i, j in enumerate(ids) if j in chain], dtype=np.int64)
        self.gripper_index = np.array([i for i, j in enumerate(ids) if j not in chain], dtype=np.int64)

    def _set_limits(self, joint_lower, joint_upper) -> None:
        """The URDF's limits, narrowed by the given ones (the actor's joint_lower / joint_upper) where tighter."""
        def given(values, name: str) -> np.ndarray:
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (len(self.joints),):
                raise ValueError(f"{name} has {values.size} values for {len(self.joints)} joints")
            return values

        lower = self.model.lowerPositionLimit[self.q_index].copy()
        upper = self.model.upperPositionLimit[self.q_index].copy()
        if joint_lower is not None:
            lower = np.maximum(lower, given(joint_lower, "joint_lower"))
        if joint_upper is not None:
            upper = np.minimum(upper, given(joint_upper, "joint_upper"))
        if (lower > upper).any():
            empty = [self.joints[i] for i in np.flatnonzero(lower > upper)]
            raise ValueError(f"joint limits of {empty} are empty (lower > upper) once the URDF's and the given "
                             "ones are combined")
        self.lower, self.upper = lower, upper

    # -- kinematics -----------------------------------------------------------------------------------
    def _configuration(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joints),):
            raise ValueError(f"expected {len(self.joints)} joint positions ({', '.join(self.joints)}), "
                             f"got shape {q.shape}")
        full = self._q.copy()
        full[self.q_index] = q
        return full

    def tcp_pose(self, q: Sequence[float]) -> pin.SE3:
        """The TCP's pose in the base frame at joint positions `q` (`joints` order)."""
        full = self._configuration(q)
        pin.forwardKinematics(self.model, self.data, full)
        return pin.updateFramePlacement(self.model, self.data, self.tcp_id).copy()

    def solve_ik(self, target: pin.SE3, q_start: Sequence[float], max_iterations: int = IK_MAX_ITERATIONS) -> IkResult:
        """Arm joint positions putting the TCP at `target`, by damped least squares from `q_start`.

        Every iterate is clipped to the joint limits, so the result never leaves them; where the target is
        out of reach the result is the closest the iteration got (see `position_error`, `rotation_error`).
        Gripper joints keep their `q_start` values (clipped to their limits).
        """
        q = np.clip(np.asarray(q_start, dtype=np.float64), self.lower, self.upper)
        full = self._configuration(q)
        arm_q, arm_v = self.q_index[self.arm_index], self.v_index[self.arm_index]
        lower, upper = self.lower[self.arm_index], self.upper[self.arm_index]
        eye6 = np.eye(6)
        for iteration in range(max_iterations + 1):
            pin.forwardKinematics(self.model, self.data, full)
            current = pin.updateFramePlacement(self.model, self.data, self.tcp_id)
            # Error in the base frame: the translation to go and the rotation vector from current to target.
            error = np.concatenate([target.translation - current.translation,
                                    pin.log3(target.rotation @ current.rotation.T)])
            position_error, rotation_error = float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
            if (position_error <= IK_POSITION_TOLERANCE and rotation_error <= IK_ROTATION_TOLERANCE) \
                    or iteration == max_iterations:
                break
            pin.computeJointJacobians(self.model, self.data, full)
            jacobian = pin.getFrameJacobian(self.model, self.data, self.tcp_id,
                                            pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)[:, arm_v]
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + IK_DAMPING ** 2 * eye6, error)
            step *= min(1.0, IK_MAX_JOINT_STEP / max(float(np.abs(step).max()), 1e-12))
            full[arm_q] = np.clip(full[arm_q] + step, lower, upper)
        return IkResult(q=full[self.q_index].copy(), pose=current.copy(), position_error=position_error,
                        rotation_error=rotation_error, iterations=iteration)
