"""A simulated operator, in plain Python: it watches the arm as a person at the cell would, takes over with a
SpaceMouse when the policy stalls or strays, drives with the scripted expert for a while, then lets go.

Once per sim step it is shown a `SceneView` (the gripper centre, the cube, the task's target, the joint
positions, from the sim's ground truth) and answers a `Decision`:

  watch      hands off: nothing is published, the policy acts
  take_over  (first step of an intervention) and
  drive      the expert's end-effector motion as a SpaceMouse twist, plus a held gripper button
  let_go     the intervention's end: a resting twist and released buttons, then silence (the actor's
             teleop_timeout hands control back to the policy)

When it takes over (at most `max_interventions_per_episode` times an episode):
  stalled   the task's distance to go has not come below its best of the episode by more than
            `progress_epsilon` for `stall_steps` steps;
  unsafe    the gripper centre is outside the safe box [safe_lower, safe_upper] (base frame, m);
  strayed   (with `stray_steps` > 0) for that many steps in a row the arm did not do roughly what the expert
            would have done from where it was: it made less than `stray_fraction` of the expert's step toward
            the expert's waypoint, or its fingers went the other way (closed when the expert opens, opened or
            stayed wide open when the expert closes). A person watching sees the arm head the wrong way or
            hover over the cube without grasping it, and corrects it there, where the policy goes wrong
            (human-gated DAgger), rather than after a long stall.
It drives for `takeover_steps` steps, then lets go and starts judging progress and course afresh.

With `exam_every` > 0 it also learns to trust the policy, as a person does who watches it get better. While it
does not trust it, every `exam_every`-th episode after the demonstrations is an exam: it lets the policy work
alone (stepping in only outside the safe box) and notes whether the task got done. Once `trust_level` of the
last `trust_window` episodes it judged succeeded with nobody stepping in, it trusts the policy: every episode
is then run and judged as an exam, so a trusted policy is held to the rule that earned it the trust (a pause
at the grasp that an exam lets the policy work through is not taken over as a stall either). When the last
`trust_window` fall below `trust_level` again, by more than the `trust_forgives` failures it forgives a policy
it trusts, it goes back to correcting stalls and strays, with exams.

Before any of that, the first `demo_episodes` episodes it sees it drives from their first step to their end:
a person's demonstrations on the cell, as HIL-SERL starts a run on a real robot (the actor records them as
interventions, so they fill the learner's demonstration buffer).

Distance to go (m): reach |tcp - target|; push |tcp - cube| + |cube - target| (the gripper has to get to the
cube, and the cube to its goal); lift adds the finger opening, so that fingers closing on the cube count as
progress: a person watching a grasp waits while the gripper closes (measured on the shifted cell: with the
opening left out, nearly every takeover came 0-1 cm from the cube's centre, in the middle of the grasp).
The twist is the action a SpaceMouse would have to produce:
the actor turns a twist into an action as twist x teleop_scale, so twist = action x `twist_scale`, where
twist_scale is 1 / the actor's teleop_scale.

    operator = SimulatedOperator(OperatorSettings(stall_steps=8), ScriptedExpert(None, space=space, config=config))
    decision = operator.step(SceneView(episode, step, tcp, cube, cube_quat, target, joints))
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hilserl.robot import FINGER_CLOSED, FINGER_INDEX, JOINTS
from hilserl.sim.task import Observation

if TYPE_CHECKING:  # the expert brings pinocchio, which the node parameter tables need not load
    from hilserl.sim.expert import ScriptedExpert

WATCH, TAKE_OVER, DRIVE, LET_GO = "watch", "take_over", "drive", "let_go"
CLOSE_BUTTON, OPEN_BUTTON = 0, 1  # the SpaceMouse's left and right buttons, as the actor reads them
SAFE_LOWER = (0.30, -0.30, 0.02)  # m, base frame: well inside the actor's workspace box
SAFE_UPPER = (0.75, 0.30, 0.55)
MIN_MOTION = 0.2  # action units: an expert step shorter than this (4 mm) asks the arm to hold, not to head somewhere
FINGER_SLACK = 0.001  # m of finger motion that counts as the fingers moving
OPEN_BEYOND_CUBE = 0.004  # m: fingers this much wider than the cube's half-width are not closed on it


@dataclass(frozen=True)
class OperatorSettings:
    """How eager the operator is (the operator node's parameters)."""

    stall_steps: int = 10  # steps without progress that count as a stall
    progress_epsilon: float = 0.005  # m the distance to go must fall below its best to count as progress
    takeover_steps: int = 15  # steps driven per intervention
    max_interventions_per_episode: int = 2
    demo_episodes: int = 0  # whole episodes driven first (demonstrations on this cell)
    # A person's hand is not a script: std of the Gaussian noise on the demonstrations' motion (action units).
    # It also makes them show how to come back from a little off the path, which cloning needs.
    demo_noise: float = 0.0
    stray_steps: int = 0  # steps in a row off the expert's course that make it take over (0: never)
    stray_fraction: float = 0.25  # of the expert's step the arm must make toward the expert's waypoint
    exam_every: int = 0  # while it does not trust the policy, every n-th episode the policy works alone (0: never)
    trust_window: int = 10  # judged episodes (exams, or every episode while trusting) that trust rests on
    trust_level: float = 0.9  # share of those the policy must get done alone to be trusted
    # Failures beyond trust_level that a trusted policy is forgiven before trust goes: a person who has watched
    # a policy earn trust does not take it back at its first miss (0: lost at once, below trust_level).
    trust_forgives: int = 0
    twist_scale: float = 1.0  # twist per unit of action: 1 / the actor's teleop_scale
    safe_lower: tuple[float, float, float] = SAFE_LOWER
    safe_upper: tuple[float, float, float] = SAFE_UPPER

    def __post_init__(self) -> None:
        lower, upper = np.asarray(self.safe_lower, dtype=float), np.asarray(self.safe_upper, dtype=float)
        if lower.shape != (3,) or upper.shape != (3,) or not (lower < upper).all():
            raise ValueError(f"the safe box needs 3 lower and 3 upper bounds with lower < upper, got "
                             f"{list(self.safe_lower)} and {list(self.safe_upper)}")
        if self.stall_steps < 1 or self.takeover_steps < 1 or self.max_interventions_per_episode < 0 \
                or self.demo_episodes < 0 or self.stray_steps < 0 or self.exam_every < 0 or self.trust_window < 1 \
                or self.trust_forgives < 0:
            raise ValueError(f"stall_steps, takeover_steps and trust_window must be >= 1, "
                             f"max_interventions_per_episode, demo_episodes, stray_steps, exam_every and "
                             f"trust_forgives >= 0, got {self.stall_steps}, {self.takeover_steps}, "
                             f"{self.trust_window}, {self.max_interventions_per_episode}, {self.demo_episodes}, "
                             f"{self.stray_steps}, {self.exam_every} and {self.trust_forgives}")
        if self.progress_epsilon < 0 or self.twist_scale <= 0 or self.demo_noise < 0 \
                or not 0.0 <= self.stray_fraction <= 1.0 or not 0.0 < self.trust_level <= 1.0:
            raise ValueError(f"progress_epsilon and demo_noise must be >= 0, twist_scale > 0, stray_fraction "
                             f"in [0, 1] and trust_level in (0, 1], got {self.progress_epsilon}, {self.demo_noise}, "
                             f"{self.twist_scale}, {self.stray_fraction} and {self.trust_level}")


@dataclass(frozen=True)
class SceneView:
    """What the operator sees of one sim step (base frame, m; the cube's quaternion as x, y, z, w)."""

    episode: int
    step: int
    tcp: np.ndarray
    cube_position: np.ndarray
    cube_quaternion: np.ndarray
    target_position: np.ndarray
    joint_positions: np.ndarray  # JOINTS order: 7 arm joints + the finger


@dataclass(frozen=True)
class Decision:
    kind: str  # WATCH, TAKE_OVER, DRIVE or LET_GO
    reason: str = ""
    twist: np.ndarray = field(default_factory=lambda: np.zeros(6))  # linear x, y, z, angular x, y, z
    buttons: tuple[int, int] = (0, 0)  # (close, open) as the SpaceMouse's Joy buttons

    @property
    def publishes(self) -> bool:
        return self.kind != WATCH


def distance_to_go(task: str, view: SceneView) -> float:
    """How far the task is from done, in metres, from the ground truth."""
    if task == "reach":
        return float(np.linalg.norm(view.tcp - view.target_position))
    distance = float(np.linalg.norm(view.tcp - view.cube_position) +
                     np.linalg.norm(view.cube_position - view.target_position))
    return distance + float(view.joint_positions[FINGER_INDEX]) if task == "lift" else distance


@dataclass(frozen=True)
class Course:
    """What the expert would have done from one step's view: where the gripper was and how it should move."""

    tcp: np.ndarray
    motion: np.ndarray  # the expert's translation, action units (1 = one ee_step)
    finger: float  # the finger opening then
    finger_goal: float  # FINGER_OPEN or FINGER_CLOSED


def outside(position: np.ndarray, lower, upper) -> bool:
    return bool((position < np.asarray(lower)).any() or (position > np.asarray(upper)).any())


class SimulatedOperator:
    def __init__(self, settings: OperatorSettings, expert: ScriptedExpert):
        if expert.space is None:
            raise ValueError("the operator drives a SpaceMouse: its expert needs an end-effector action space")
        self.settings, self.expert = settings, expert
        self.rng = np.random.default_rng(0)  # the demonstrations' noise: the same in every run
        self.episode: int | None = None
        self.interventions_total = 0
        self.episodes_seen = 0
        self.trusting = False  # trusts the policy: every episode an exam
        self.judged: deque[bool] = deque(maxlen=settings.trust_window)  # done alone, per judged episode
        self.start_episode(None)

    def start_episode(self, episode: int | None) -> None:
        self.episode = episode
        self.interventions = 0  # this episode's
        self.drive_left = 0  # drive steps still to send in the current intervention
        self.driving = False
        self.best: float | None = None  # the smallest distance to go since progress was last judged afresh
        self.no_progress = 0  # steps since the distance to go last fell below best - progress_epsilon
        self.demonstrating = False  # driving this whole episode
        self.course: Course | None = None  # the expert's course from the last step watched
        self.strays = 0  # steps in a row the arm went off that course
        self.examining = False  # this episode the policy works alone, bar the safe box
        self.ended = False  # its end was seen (and judged)

    def exam_due(self) -> bool:
        """Whether the episode just started is an exam: every exam_every-th after the demonstrations, while the
        operator does not trust the policy."""
        after_demos = self.episodes_seen - self.settings.demo_episodes
        return bool(self.settings.exam_every) and not self.trusting and after_demos > 0 \
            and after_demos % self.settings.exam_every == 0

    def runs_alone(self) -> bool:
        """Whether this episode runs as an exam (an exam, or any episode while it trusts the policy): no stall
        or stray takeovers, only the safe box."""
        return self.examining or self.trusting

    def step(self, view: SceneView) -> Decision:
        """The operator's decision on this step (call once per sim step, in order)."""
        released = None
        if view.episode != self.episode:
            if self.driving:  # a new episode in the middle of an intervention: let go of the old one
                released = Decision(LET_GO, "episode ended")
            self.start_episode(view.episode)
            self.episodes_seen += 1
            if self.episodes_seen <= self.settings.demo_episodes:
                self.demonstrating = self.driving = True
                self.interventions_total += 1
                return self.drive(TAKE_OVER, f"demonstration {self.episodes_seen} of {self.settings.demo_episodes}",
                                  view)
            self.examining = self.exam_due()
        if self.demonstrating:
            return self.drive(DRIVE, "demonstrating", view)
        distance = distance_to_go(self.expert.config.task, view)
        if self.driving:
            if self.drive_left > 0:
                self.drive_left -= 1
                return self.drive(DRIVE, "driving", view)
            # this step executes the resting reading: the course is judged from the next view on
            self.driving, self.best, self.no_progress, self.course, self.strays = False, distance, 0, None, 0
            return Decision(LET_GO, f"{self.settings.takeover_steps} steps driven")
        self.track_progress(distance)
        strayed = self.track_course(view) if not self.runs_alone() else None
        reason = self.takeover_reason(view) or strayed
        if reason and self.interventions < self.settings.max_interventions_per_episode:
            self.interventions += 1
            self.interventions_total += 1
            self.driving, self.drive_left = True, self.settings.takeover_steps - 1
            return self.drive(TAKE_OVER, reason, view)
        return released or Decision(WATCH)

    def episode_ended(self, episode: int, success: bool) -> str | None:
        """The last step of `episode` was seen, with the task done or not. Judges it when it was an exam or the
        operator trusts the policy: done alone = done with nobody stepping in. Returns what changed in its trust
        ('' when nothing did; None when the episode was not judged)."""
        if episode != self.episode or self.ended or self.demonstrating or not self.settings.exam_every:
            return None
        self.ended = True
        if not self.runs_alone():
            return None
        self.judged.append(success and self.interventions == 0)
        s, alone = self.settings, sum(self.judged)
        if len(self.judged) < s.trust_window:
            return ""
        trusted = alone >= s.trust_level * s.trust_window - (s.trust_forgives if self.trusting else 0)
        if trusted == self.trusting:
            return ""
        self.trusting = trusted
        what = "trusts the policy: every episode runs alone, bar the safe box" if trusted else \
            "no longer trusts the policy: corrects stalls and strays again, with exams"
        return f"{what} ({alone} of the last {s.trust_window} episodes it judged done alone)"

    def track_progress(self, distance: float) -> None:
        if self.best is None or distance < self.best - self.settings.progress_epsilon:
            self.best, self.no_progress = distance, 0
        else:
            self.no_progress += 1

    def track_course(self, view: SceneView) -> str | None:
        """Judges the step that led to `view` against the expert's course from the step before; the reason to
        take over once `stray_steps` steps in a row went off it, else None."""
        if not self.settings.stray_steps:
            return None
        off = self.off_course(view, self.course) if self.course is not None else None
        self.strays = self.strays + 1 if off else 0
        obs = self.observation(view)
        waypoint, yaw, finger_goal = self.expert.plan(obs)
        motion = np.clip(self.expert.ee_motion(obs, waypoint, yaw)[:3], -1.0, 1.0)
        self.course = Course(np.asarray(view.tcp, dtype=float), motion,
                             float(view.joint_positions[FINGER_INDEX]), finger_goal)
        if off and self.strays >= self.settings.stray_steps:
            return f"strayed for {self.strays} steps: {off}"
        return None

    def off_course(self, view: SceneView, course: Course) -> str | None:
        """How the arm's last step went against the expert's course, or None when it roughly followed it."""
        moved = (np.asarray(view.tcp, dtype=float) - course.tcp) / self.expert.space.step  # action units
        wanted = float(np.linalg.norm(course.motion))
        toward = float(moved @ course.motion) / wanted if wanted else 0.0
        if wanted >= MIN_MOTION and toward < self.settings.stray_fraction * wanted:
            return f"moved {toward:.2f} of the expert's {wanted:.2f} toward its waypoint"
        finger = float(view.joint_positions[FINGER_INDEX])
        if course.finger_goal == FINGER_CLOSED:
            wide_open = course.finger > self.expert.config.cube_size / 2 + OPEN_BEYOND_CUBE
            if finger > course.finger + FINGER_SLACK or (wide_open and finger > course.finger - FINGER_SLACK):
                return f"fingers at {finger * 1000:.0f} mm, not closing where the expert closes"
        elif finger < course.finger - FINGER_SLACK:
            return f"fingers closing to {finger * 1000:.0f} mm where the expert opens"
        return None

    def takeover_reason(self, view: SceneView) -> str | None:
        s = self.settings
        if outside(view.tcp, s.safe_lower, s.safe_upper):
            return f"gripper outside the safe box at {np.round(view.tcp, 3).tolist()}"
        if self.no_progress >= s.stall_steps and not self.runs_alone():
            return f"stalled: no progress for {self.no_progress} steps (best {self.best:.3f} m to go)"
        return None

    def drive(self, kind: str, reason: str, view: SceneView) -> Decision:
        """The expert's end-effector motion toward its waypoint, as a twist, and its gripper as a held button."""
        obs = self.observation(view)
        waypoint, yaw, finger = self.expert.plan(obs)
        motion = self.expert.ee_motion(obs, waypoint, yaw)
        if self.demonstrating and self.settings.demo_noise:
            motion = motion + self.rng.normal(0.0, self.settings.demo_noise, motion.shape)
        motion = np.clip(motion, -1.0, 1.0)
        twist = np.zeros(6)
        twist[:len(motion)] = motion * self.settings.twist_scale
        buttons = (1, 0) if finger == FINGER_CLOSED else (0, 1)
        return Decision(kind, reason, twist, buttons)

    @staticmethod
    def observation(view: SceneView) -> Observation:
        """The view as the expert reads a sim observation (no images: the expert plans from the ground truth)."""
        return Observation(images=[], joint_positions=np.asarray(view.joint_positions, dtype=np.float64),
                           joint_velocities=np.zeros(len(JOINTS)), ee_position=np.asarray(view.tcp, dtype=np.float64),
                           cube_position=np.asarray(view.cube_position, dtype=np.float64),
                           cube_quaternion=np.asarray(view.cube_quaternion, dtype=np.float64),
                           target_position=np.asarray(view.target_position, dtype=np.float64), step=view.step)
