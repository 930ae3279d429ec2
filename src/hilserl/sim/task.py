"""The Genesis manipulation task: a Franka Panda, a cube on the floor and headless RGB cameras.

Tasks (`TaskConfig.task`)
  reach  bring the gripper centre (between the fingertips) to `hover_height` above the cube's top face,
         within `success_radius`. Ends (terminated) on success.
  push   push the cube's centre to within `success_radius` of the fixed goal `push_goal` (a green pad).
  lift   grasp the cube and raise it `lift_height` above the floor.

Single environment (`n_envs = 0`, the default), as the sim node runs it:
  task = PandaTask(TaskConfig())           # builds the Genesis scene (first build of a machine compiles)
  obs = task.reset(seed=3)                 # same seed -> same cube pose, start pose, lighting, images
  result = task.step(targets)              # 8 absolute joint position targets in `hilserl.robot.JOINTS` order
                                           # (7 arm joints + one finger command applied to both fingers);
                                           # advances `control_dt` (default 0.1 s = 10 physics steps of 0.01 s)
                                           # under PD position control
  result.observation, result.reward, result.success, result.terminated, result.truncated
  task.validate_command(targets)           # None, or why the targets would be refused (wrong length, NaN/inf,
                                           # beyond a joint limit by more than LIMIT_TOLERANCE); `step` raises
                                           # ValueError with that reason and applies nothing
  targets = action_to_targets(obs.joint_positions, action)   # a policy action (joint deltas in [-1, 1])

`Observation` holds `images` (one HxWx3 uint8 RGB array per camera), `joint_positions` and
`joint_velocities` (8, JOINTS order; the finger is panda_finger_joint1), `ee_position` (gripper centre),
`cube_position`, `cube_quaternion` (x, y, z, w, as ROS writes it), `target_position` (reach target, push
goal or lift height point) and `step` (control steps since reset).

Batched environments (`n_envs = N > 0`) share one Genesis scene (`scene.build(n_envs=N)`), one physics
call per step for all of them and one render per environment:
  observations = task.reset_batch(seeds, envs_idx=None)   # reset some or all environments
  results = task.step_batch(targets)                       # targets [N, 8] -> N StepResults
An environment that terminated or was truncated must be reset before the next `step_batch`. Lighting is
one for the whole scene: in batched mode it is drawn from the first seed of each `reset_batch` call.

Domain randomisation: cube pose ranges, start-pose noise, lighting (intensity, tint, ambient) and camera
pose jitter are all `TaskConfig` fields, drawn per episode from the reset seed.

Variants (`variant_config(name, **fields)`): "standard" is the task as above; "easy" removes what makes a
task slow to learn from scratch: the cube always at the workspace centre with no yaw, the same start pose
and lighting every episode, success within 8 cm instead of 4, dense reward felt from twice as far, and
(reach) a target 15 cm above the cube, ~0.2 m from the start pose instead of ~0.33 m. "shifted" stands in
for a real cell unlike the sim a policy was trained in, with fixed (not random) changes: a dimmer light
(intensity 2.0, ambient 0.15) from another direction, the camera moved 5 cm (up 3 cm, sideways 4 cm) and
turned 3 degrees in pan and 2 in tilt, an orange cube on a grey floor, the cube 10% larger (5.5 cm) and
slipperier (friction 0.5). The sim node's `variant` parameter and `infer --sim --variant` select one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hilserl.robot import HOME, JOINT_LOWER, JOINT_UPPER, JOINTS, TCP_OFFSET, action_to_targets

__all__ = ["TASKS", "VARIANTS", "TaskConfig", "variant_config", "Observation", "StepResult", "PandaTask",
           "action_to_targets", "init_genesis"]

TASKS = ("reach", "push", "lift")
N_COMMANDS = len(JOINTS)  # 7 arm joints + 1 finger command
# Commands this far past a limit are accepted and clipped to it: a measured pose held as a target may sit a
# float rounding or a contact's give beyond the limit (an open finger reads 0.04000003).
LIMIT_TOLERANCE = 1e-4  # rad, or m for the finger
# Joint-space PD gains of the Panda's position actuators: the arm's as in the MJCF model; the fingers stiffer
# than the model's, so a closed gripper squeezes a cube hard enough (~20 N) to lift it.
KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0, 800.0, 800.0)
KV = (450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0, 40.0, 40.0)
# (position, look-at) per camera, in the robot base frame: front-oblique, left side, right-top.
CAMERA_POSES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((1.00, 0.00, 0.80), (0.50, 0.00, 0.12)),
    ((0.55, 0.90, 0.60), (0.55, 0.00, 0.15)),
    ((0.75, -0.65, 0.90), (0.50, 0.00, 0.12)),
)


@dataclass(frozen=True)
class TaskConfig:
    task: str = "reach"
    n_envs: int = 0  # 0 = one unbatched environment; N > 0 = N batched environments in one scene
    seed: int | None = None  # seeds resets called without a seed
    # Cameras
    image_size: int = 84
    num_cameras: int = 1
    camera_fov: float = 55.0  # vertical field of view, degrees
    # Timing
    control_dt: float = 0.1  # one `step`
    physics_dt: float = 0.01  # one Genesis step; control_dt / physics_dt physics steps per control step
    episode_steps: int = 50  # time limit: truncated after this many steps
    # False: success does not end the episode (it runs to the time limit): recording labelled frames keeps the
    # frames of a success held, not only the first one
    end_on_success: bool = True
    # Reward and success
    # "dense": shaped progress minus one, in [-1, 0), and 0 on success; every step short of success costs
    # something, so ending the episode by succeeding is always worth more than lingering near the goal.
    # "sparse": 1 on success, else 0.
    reward: str = "dense"
    shaping_distance: float = 0.1  # m: dense progress is 1 - tanh(distance / this); larger = felt from farther
    cube_size: float = 0.05
    hover_height: float = 0.05  # reach: target height of the gripper centre above the cube's top face
    success_radius: float = 0.04
    lift_height: float = 0.08  # lift: the cube's bottom must rise this far above the floor
    push_goal: tuple[float, float] = (0.45, -0.15)
    # Domain randomisation, drawn per episode from the reset seed
    cube_x_range: tuple[float, float] = (0.45, 0.65)
    cube_y_range: tuple[float, float] = (-0.15, 0.15)
    cube_yaw_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    start_joint_noise: float = 0.03  # rad, uniform on each arm joint around HOME
    light_intensity: float = 3.0
    light_jitter: float = 0.2  # relative: intensity x U(1-j, 1+j), colour tint and ambient likewise
    ambient: float = 0.3
    camera_pos_jitter: float = 0.0  # m, uniform on each camera position and look-at coordinate
    # The scene's fixed appearance and physics: the same every episode (what the "shifted" variant changes)
    light_direction: tuple[float, float, float] = (-0.5, -0.3, -1.0)
    cube_color: tuple[float, float, float] = (0.85, 0.1, 0.1)
    floor_color: tuple[float, float, float] = (0.6, 0.55, 0.45)
    cube_friction: float | None = None  # None: Genesis's default for a rigid body (1.0)
    # Every camera moved by camera_offset (m, base frame), then turned about its own position: camera_pan
    # (degrees, about the vertical, counter-clockwise seen from above) and camera_tilt (degrees, positive
    # looks further down). Applied before the per-episode camera_pos_jitter.
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    camera_pan: float = 0.0
    camera_tilt: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.reward not in ("dense", "sparse"):
            raise ValueError(f"reward must be 'dense' or 'sparse', got {self.reward!r}")
        if not 1 <= self.num_cameras <= len(CAMERA_POSES):
            raise ValueError(f"num_cameras must be 1..{len(CAMERA_POSES)}, got {self.num_cameras}")
        if self.cube_friction is not None and not 0.01 <= self.cube_friction <= 5.0:
            raise ValueError(f"cube_friction must be in [0.01, 5] (or None), got {self.cube_friction}")
        if self.n_envs < 0 or self.image_size < 16 or self.episode_steps < 1:
            raise ValueError(f"invalid task config: n_envs {self.n_envs} (>= 0), image_size {self.image_size} "
                             f"(>= 16), episode_steps {self.episode_steps} (>= 1)")
        ratio = self.control_dt / self.physics_dt
        if self.physics_dt <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(f"control_dt {self.control_dt} must be a positive multiple of "
                             f"physics_dt {self.physics_dt}")

    @property
    def substeps(self) -> int:
        return int(round(self.control_dt / self.physics_dt))


VARIANTS: dict[str, dict] = {
    "standard": {},
    "easy": {"cube_x_range": (0.5, 0.5), "cube_y_range": (0.0, 0.0), "cube_yaw_range": (0.0, 0.0),
             "start_joint_noise": 0.0, "light_jitter": 0.0, "hover_height": 0.15, "success_radius": 0.08,
             "shaping_distance": 0.2},
    # A stand-in for a real cell that differs from the sim a policy was trained in: fixed, not random, changes
    # to the light, the camera mounting, the colours, the cube and its friction.
    "shifted": {"light_intensity": 2.0, "ambient": 0.15, "light_direction": (0.3, -0.6, -1.0),
                "cube_color": (0.8, 0.3, 0.1), "floor_color": (0.5, 0.5, 0.52), "cube_size": 0.055,
                "cube_friction": 0.5, "camera_offset": (0.0, 0.04, 0.03), "camera_pan": 3.0, "camera_tilt": 2.0},
}


def variant_config(variant: str = "standard", **fields) -> TaskConfig:
    """A TaskConfig for a named variant; explicit `fields` override the variant's own settings."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown task variant {variant!r}; expected one of {tuple(VARIANTS)}")
    return TaskConfig(**(VARIANTS[variant] | fields))


@dataclass
class Observation:
    images: list[np.ndarray]  # one HxWx3 uint8 RGB frame per camera
    joint_positions: np.ndarray  # (8,) JOINTS order, finger = panda_finger_joint1
    joint_velocities: np.ndarray  # (8,)
    ee_position: np.ndarray  # (3,) gripper centre between the fingertips
    cube_position: np.ndarray  # (3,)
    cube_quaternion: np.ndarray  # (4,) x, y, z, w
    target_position: np.ndarray  # (3,) reach target / push goal / lift point
    step: int = 0


@dataclass
class StepResult:
    observation: Observation
    reward: float
    success: bool
    terminated: bool  # the episode ended on its own (success)
    truncated: bool  # the time limit was reached
    info: dict = field(default_factory=dict)


def init_genesis():
    """Genesis on the CPU backend, initialised once per process."""
    import genesis as gs

    if not gs._initialized:
        gs.init(backend=gs.cpu, logging_level="warning")
    return gs


def quat_rotate(quat_wxyz: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Rotate `vec` [..., 3] by unit quaternions [..., 4] in (w, x, y, z) order."""
    w, xyz = quat_wxyz[..., :1], quat_wxyz[..., 1:]
    t = 2.0 * np.cross(xyz, vec)
    return vec + w * t + np.cross(xyz, t)


def yaw_quat_wxyz(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def mounted_camera(pos, lookat, config: TaskConfig) -> tuple[np.ndarray, np.ndarray]:
    """A camera's (position, look-at) after the config's fixed mounting change: moved by camera_offset, then
    its viewing direction turned by camera_pan about the vertical and camera_tilt about its horizontal axis."""
    offset = np.asarray(config.camera_offset, dtype=np.float64)
    pos, lookat = np.asarray(pos, dtype=np.float64), np.asarray(lookat, dtype=np.float64)
    if config.camera_pan == 0.0 and config.camera_tilt == 0.0:
        return pos + offset, lookat + offset  # a pure move: standard's poses stay exact to the last bit
    view = lookat - pos
    pos = pos + offset
    pan, tilt = math.radians(config.camera_pan), math.radians(config.camera_tilt)
    view = np.array([view[0] * math.cos(pan) - view[1] * math.sin(pan),
                     view[0] * math.sin(pan) + view[1] * math.cos(pan), view[2]])
    horizontal = math.hypot(view[0], view[1])
    elevation = math.atan2(view[2], horizontal) - tilt  # positive tilt looks further down
    length = float(np.linalg.norm(view))
    heading = view[:2] / max(horizontal, 1e-9)
    view = length * np.array([*(heading * math.cos(elevation)), math.sin(elevation)])
    return pos, pos + view


class PandaTask:
    def __init__(self, config: TaskConfig | None = None):
        self.config = config or TaskConfig()
        cfg = self.config
        gs = init_genesis()
        self.batched = cfg.n_envs > 0
        self.n = max(cfg.n_envs, 1)
        self.lower = np.asarray(JOINT_LOWER, dtype=np.float64)
        self.upper = np.asarray(JOINT_UPPER, dtype=np.float64)
        self._rng = np.random.default_rng(cfg.seed)

        light = gs.options.vis.DirectionalLight(dir=cfg.light_direction, color=(1.0, 1.0, 1.0),
                                                intensity=cfg.light_intensity)
        self.scene = gs.Scene(
            sim_options=gs.options.SimOptions(dt=cfg.physics_dt),
            vis_options=gs.options.VisOptions(show_world_frame=False, shadow=False, background_color=(0.55, 0.6, 0.65),
                                              ambient_light=(cfg.ambient,) * 3, lights=[light],
                                              split_envs=self.batched),
            show_viewer=False,
        )
        self.scene.add_entity(gs.morphs.Plane(), surface=gs.surfaces.Default(color=cfg.floor_color))
        self.robot = self.scene.add_entity(gs.morphs.MJCF(file="xml/franka_emika_panda/panda.xml"))
        half = cfg.cube_size / 2
        material = None if cfg.cube_friction is None else gs.materials.Rigid(friction=cfg.cube_friction)
        self.cube = self.scene.add_entity(gs.morphs.Box(size=(cfg.cube_size,) * 3, pos=(0.55, 0.0, half)),
                                          material=material, surface=gs.surfaces.Default(color=cfg.cube_color))
        if cfg.task == "push":  # a flat visual pad marking the goal; nothing collides with it
            self.scene.add_entity(gs.morphs.Box(size=(0.08, 0.08, 0.002), pos=(*cfg.push_goal, 0.001), fixed=True,
                                                collision=False), surface=gs.surfaces.Default(color=(0.1, 0.7, 0.2)))
        self.camera_poses = [mounted_camera(pos, lookat, cfg) for pos, lookat in CAMERA_POSES[:cfg.num_cameras]]
        self.cameras = [self.scene.add_camera(res=(cfg.image_size, cfg.image_size), pos=pos, lookat=lookat,
                                              fov=cfg.camera_fov, GUI=False)
                        for pos, lookat in self.camera_poses]
        self.scene.build(n_envs=cfg.n_envs)
        self.robot.set_dofs_kp(np.asarray(KP))
        self.robot.set_dofs_kv(np.asarray(KV))
        self.hand = self.robot.get_link("hand")
        self._light_nodes = self._find_lights()

        self.physics_steps = 0  # Genesis steps run since construction (all environments at once)
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.done = np.ones(self.n, dtype=bool)  # every environment needs a reset first
        self.cube_start = np.zeros((self.n, 3))

    # -- public API ----------------------------------------------------------------------------
    def validate_command(self, targets) -> str | None:
        """Why `targets` would be refused (wrong length, NaN/inf, outside the joint limits), or None."""
        try:
            t = np.asarray(targets, dtype=np.float64)
        except (TypeError, ValueError):
            return f"joint targets must be numbers, got {type(targets).__name__}"
        if t.ndim != 1 or t.shape[0] != N_COMMANDS:
            return f"expected {N_COMMANDS} joint targets in the order {list(JOINTS)}, got shape {tuple(t.shape)}"
        bad = ~np.isfinite(t)
        if bad.any():
            return f"non-finite joint target for {[JOINTS[i] for i in np.flatnonzero(bad)]}"
        out = (t < self.lower - LIMIT_TOLERANCE) | (t > self.upper + LIMIT_TOLERANCE)
        if out.any():
            parts = [f"{JOINTS[i]}={t[i]:.5f} not in [{self.lower[i]}, {self.upper[i]}]" for i in np.flatnonzero(out)]
            return "joint target outside the limits: " + ", ".join(parts)
        return None

    def reset(self, seed: int | None = None) -> Observation:
        """Start a new episode; deterministic for a given seed."""
        self._require(batched=False, what="reset")
        return self.reset_batch([seed])[0]

    def step(self, joint_targets) -> StepResult:
        """Advance one control period toward `joint_targets` (absolute, JOINTS order)."""
        self._require(batched=False, what="step")
        return self.step_batch(np.asarray(joint_targets, dtype=np.float64)[None])[0]

    def reset_batch(self, seeds: Sequence[int | None], envs_idx: Sequence[int] | None = None) -> list[Observation]:
        """Reset the environments `envs_idx` (default: all), one seed each; returns their observations."""
        envs = np.arange(self.n) if envs_idx is None else np.asarray(envs_idx, dtype=np.int64)
        if len(seeds) != len(envs) or len(envs) == 0:
            raise ValueError(f"{len(seeds)} seeds for {len(envs)} environments: give one seed per environment")
        if envs.min() < 0 or envs.max() >= self.n or len(set(envs.tolist())) != len(envs):
            raise ValueError(f"envs_idx {envs.tolist()} must be distinct indices in [0, {self.n})")
        cfg = self.config
        rngs = [np.random.default_rng(self._rng.integers(2**63) if s is None else s) for s in seeds]
        q0, cube_pos, cube_quat = np.zeros((len(envs), 9)), np.zeros((len(envs), 3)), np.zeros((len(envs), 4))
        cam_poses = []
        for k, rng in enumerate(rngs):
            # Draw in a fixed order so a seed always means the same episode.
            x, y = rng.uniform(*cfg.cube_x_range), rng.uniform(*cfg.cube_y_range)
            while cfg.task == "push" and math.dist((x, y), cfg.push_goal) < 2 * cfg.success_radius:
                x, y = rng.uniform(*cfg.cube_x_range), rng.uniform(*cfg.cube_y_range)  # not already pushed
            cube_pos[k] = (x, y, cfg.cube_size / 2)
            cube_quat[k] = yaw_quat_wxyz(rng.uniform(*cfg.cube_yaw_range))
            arm = np.asarray(HOME[:7]) + rng.uniform(-cfg.start_joint_noise, cfg.start_joint_noise, 7)
            q0[k, :7] = np.clip(arm, self.lower[:7], self.upper[:7])
            q0[k, 7:] = HOME[7]
            cam_poses.append([(p + rng.uniform(-1, 1, 3) * cfg.camera_pos_jitter,
                               a + rng.uniform(-1, 1, 3) * cfg.camera_pos_jitter)
                              for p, a in self.camera_poses])
            if k == 0:
                light_draw = rng.uniform(-1, 1, 5)

        idx = self._envs_arg(envs)
        self.scene.reset(envs_idx=idx)
        self.robot.set_dofs_kp(np.asarray(KP))
        self.robot.set_dofs_kv(np.asarray(KV))
        self.robot.set_dofs_position(self._rows(q0), envs_idx=idx, zero_velocity=True)
        self.robot.control_dofs_position(self._rows(q0), envs_idx=idx)
        self.cube.set_pos(self._rows(cube_pos), envs_idx=idx, zero_velocity=True)
        self.cube.set_quat(self._rows(cube_quat), envs_idx=idx, zero_velocity=True)
        for c, cam in enumerate(self.cameras):
            pos = np.stack([p[c][0] for p in cam_poses])
            lookat = np.stack([p[c][1] for p in cam_poses])
            if self.batched:
                cam.set_pose(pos=pos, lookat=lookat, envs_idx=envs)
            else:
                cam.set_pose(pos=pos[0], lookat=lookat[0])
        self._set_lighting(light_draw)
        self.steps[envs] = 0
        self.done[envs] = False
        self.cube_start[envs] = cube_pos
        state = self._read_state()
        images = self._render()
        return [self._observation(state, images, int(e)) for e in envs]

    def step_batch(self, joint_targets) -> list[StepResult]:
        """Advance every environment one control period; targets [n_envs, 8]."""
        targets = np.asarray(joint_targets, dtype=np.float64)
        if targets.ndim != 2 or targets.shape[0] != self.n:
            raise ValueError(f"expected joint targets of shape ({self.n}, {N_COMMANDS}), got {targets.shape}")
        for e in range(self.n):
            reason = self.validate_command(targets[e])
            if reason:
                raise ValueError(f"command refused, not applied: {reason}" + (f" (env {e})" if self.batched else ""))
        if self.done.any():
            raise RuntimeError(f"environment(s) {np.flatnonzero(self.done).tolist()} ended or were never reset; "
                               "call reset() / reset_batch() before stepping")
        targets = np.clip(targets, self.lower, self.upper)  # only within LIMIT_TOLERANCE of them by now
        q9 = np.concatenate([targets[:, :7], targets[:, 7:8], targets[:, 7:8]], axis=1)
        self.robot.control_dofs_position(self._rows(q9))
        for _ in range(self.config.substeps):
            self.scene.step(update_visualizer=False)
        self.physics_steps += self.config.substeps
        self.steps += 1
        state = self._read_state()
        images = self._render()
        results = []
        for e in range(self.n):
            obs = self._observation(state, images, e)
            reward, success, info = self._evaluate(obs, e)
            terminated = success and self.config.end_on_success
            truncated = bool(self.steps[e] >= self.config.episode_steps) and not terminated
            self.done[e] = terminated or truncated
            results.append(StepResult(obs, reward, success, terminated=terminated, truncated=truncated, info=info))
        return results

    # -- task logic ----------------------------------------------------------------------------
    def target_for(self, cube_position: np.ndarray, env: int = 0) -> np.ndarray:
        cfg = self.config
        if cfg.task == "reach":
            return cube_position + np.array([0.0, 0.0, cfg.cube_size / 2 + cfg.hover_height])
        if cfg.task == "push":
            return np.array([*cfg.push_goal, cfg.cube_size / 2])
        start = self.cube_start[env]
        return np.array([start[0], start[1], cfg.cube_size / 2 + cfg.lift_height])

    def _evaluate(self, obs: Observation, env: int) -> tuple[float, bool, dict]:
        cfg = self.config

        def closeness(d: float) -> float:  # 1 at d = 0, falling off over shaping_distance
            return 1.0 - math.tanh(d / cfg.shaping_distance)

        tcp_to_cube = float(np.linalg.norm(obs.ee_position - obs.cube_position))
        if cfg.task == "reach":
            distance = float(np.linalg.norm(obs.ee_position - obs.target_position))
            success = distance < cfg.success_radius
            shaped = closeness(distance)
        elif cfg.task == "push":
            distance = float(np.linalg.norm(obs.cube_position[:2] - obs.target_position[:2]))
            success = distance < cfg.success_radius
            shaped = 0.5 * closeness(tcp_to_cube) + 0.5 * closeness(distance)
        else:
            rise = float(obs.cube_position[2] - cfg.cube_size / 2)
            distance = max(cfg.lift_height - rise, 0.0)
            success = rise >= cfg.lift_height and tcp_to_cube < cfg.cube_size
            shaped = 0.5 * closeness(tcp_to_cube) + 0.5 * min(max(rise / cfg.lift_height, 0.0), 1.0)
        reward = (0.0 if success else shaped - 1.0) if cfg.reward == "dense" else float(success)
        return reward, bool(success), {"distance": distance, "tcp_to_cube": tcp_to_cube}

    # -- Genesis plumbing ----------------------------------------------------------------------
    def _require(self, batched: bool, what: str) -> None:
        if self.batched != batched:
            hint = f"use {what}_batch()" if self.batched else f"use {what}()"
            raise RuntimeError(f"{what}: this task has n_envs={self.config.n_envs}; {hint}")

    def _envs_arg(self, envs: np.ndarray):
        return envs if self.batched else None

    def _rows(self, array: np.ndarray) -> np.ndarray:
        """Genesis takes [n, ...] in batched scenes and an unbatched [...] otherwise."""
        return array if self.batched else array[0]

    def _batch(self, tensor) -> np.ndarray:
        array = to_numpy(tensor).astype(np.float64)
        return array if self.batched else array[None]

    def _read_state(self) -> dict[str, np.ndarray]:
        hand_pos, hand_quat = self._batch(self.hand.get_pos()), self._batch(self.hand.get_quat())
        return {
            "q": self._batch(self.robot.get_dofs_position()),
            "dq": self._batch(self.robot.get_dofs_velocity()),
            "tcp": hand_pos + quat_rotate(hand_quat, np.array([0.0, 0.0, TCP_OFFSET])),
            "cube_pos": self._batch(self.cube.get_pos()),
            "cube_quat": self._batch(self.cube.get_quat()),
        }

    def _render(self) -> list[np.ndarray]:
        """[camera] -> uint8 [n, H, W, 3]."""
        frames = []
        for cam in self.cameras:
            rgb = np.asarray(cam.render(rgb=True, force_render=True)[0], dtype=np.uint8)
            frames.append(rgb if self.batched else rgb[None])
        return frames

    def _observation(self, state: dict[str, np.ndarray], images: list[np.ndarray], e: int) -> Observation:
        q, dq = state["q"][e], state["dq"][e]
        w, x, y, z = state["cube_quat"][e]
        cube = state["cube_pos"][e].copy()
        return Observation(
            images=[np.ascontiguousarray(frames[e]) for frames in images],
            joint_positions=q[:N_COMMANDS].copy(), joint_velocities=dq[:N_COMMANDS].copy(),
            ee_position=state["tcp"][e].copy(), cube_position=cube,
            cube_quaternion=np.array([x, y, z, w]), target_position=self.target_for(cube, e),
            step=int(self.steps[e]),
        )

    def _find_lights(self) -> list:
        """The renderer's directional light nodes, whose intensity and colour the lighting randomisation sets."""
        context = self.scene.visualizer.context
        return sorted(context._scene.directional_light_nodes, key=id)

    def _set_lighting(self, draw: np.ndarray) -> None:
        """Light intensity, tint and ambient level from five uniform(-1, 1) draws."""
        cfg, j = self.config, self.config.light_jitter
        intensity = cfg.light_intensity * (1.0 + j * draw[0])
        tint = 1.0 - 0.25 * j * (draw[1:4] + 1.0)  # per channel in [1 - j/2, 1]
        ambient = np.clip(cfg.ambient * (1.0 + j * draw[4]), 0.0, 1.0)
        context = self.scene.visualizer.context
        for node in self._light_nodes:
            node.light.intensity = float(intensity)
            node.light.color = tint
        context._scene.ambient_light = np.full(3, ambient)
        context.jit._lights_revision = None  # the renderer re-reads the lights on its next frame
