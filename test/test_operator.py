"""The simulated operator's decisions (plain Python, no ROS, no Genesis): stall -> take over -> let go after
takeover_steps; leaving the safe box -> take over; the per-episode cap; demonstration episodes driven whole; the
expert's command as a twist."""

from __future__ import annotations

import numpy as np
import pytest

from hilserl.kinematics.action_space import EeActionSpace
from hilserl.robot import HOME
from hilserl.sim.expert import ScriptedExpert
from hilserl.sim.operator import (DRIVE, LET_GO, TAKE_OVER, WATCH, OperatorSettings, SceneView, SimulatedOperator,
                                  distance_to_go)
from hilserl.sim.task import variant_config

TARGET = np.array([0.55, 0.05, 0.125])
CUBE = np.array([0.55, 0.05, 0.025])
UPRIGHT = np.array([0.0, 0.0, 0.0, 1.0])


def operator(task: str = "reach", **settings) -> SimulatedOperator:
    expert = ScriptedExpert(None, space=EeActionSpace("xyz"), config=variant_config("standard", task=task))
    return SimulatedOperator(OperatorSettings(**settings), expert)


def view(step: int, tcp, episode: int = 0, cube=CUBE, target=TARGET) -> SceneView:
    return SceneView(episode=episode, step=step, tcp=np.asarray(tcp, dtype=float), cube_position=np.asarray(cube),
                     cube_quaternion=UPRIGHT, target_position=np.asarray(target), joint_positions=np.asarray(HOME))


def test_a_stall_takes_over_then_lets_go_after_takeover_steps():
    op = operator(stall_steps=3, takeover_steps=4, progress_epsilon=0.005)
    tcp = np.array([0.45, -0.10, 0.35])
    kinds = []
    for step in range(3):  # progress: 2 cm closer each step
        tcp = tcp + (TARGET - tcp) / np.linalg.norm(TARGET - tcp) * 0.02
        kinds.append(op.step(view(step, tcp)).kind)
    assert kinds == [WATCH] * 3
    stuck = [op.step(view(3 + k, tcp + 0.001 * (k % 2))) for k in range(3)]  # jitters in place: no progress
    assert [d.kind for d in stuck] == [WATCH, WATCH, TAKE_OVER]
    assert "stalled" in stuck[-1].reason and op.interventions == 1
    # The twist points at the target at full speed (the expert's straight-line step), the open button held.
    direction = (TARGET - tcp) / np.linalg.norm(TARGET - tcp)
    twist = stuck[-1].twist
    assert np.abs(twist[:3]).max() == pytest.approx(1.0) and np.allclose(twist[3:], 0.0)
    assert np.dot(twist[:3] / np.linalg.norm(twist[:3]), direction) > 0.99
    assert stuck[-1].buttons == (0, 1)
    driven = [op.step(view(6 + k, tcp)).kind for k in range(4)]
    assert driven == [DRIVE, DRIVE, DRIVE, LET_GO]  # 4 steps driven (take_over + 3), then let go
    after = op.step(view(10, tcp))
    assert after.kind == WATCH and not after.publishes  # progress is judged afresh after letting go


def test_leaving_the_safe_box_takes_over_at_once_and_the_cap_holds():
    op = operator(stall_steps=50, takeover_steps=2, max_interventions_per_episode=1,
                  safe_lower=(0.3, -0.3, 0.05), safe_upper=(0.75, 0.3, 0.5))
    assert op.step(view(0, [0.5, 0.0, 0.3])).kind == WATCH
    strayed = op.step(view(1, [0.5, 0.35, 0.3]))
    assert strayed.kind == TAKE_OVER and "safe box" in strayed.reason
    assert strayed.twist[1] < -0.5  # heads back toward the target, inside the box
    assert [op.step(view(s, [0.5, 0.35, 0.3])).kind for s in (2, 3)] == [DRIVE, LET_GO]
    assert op.step(view(4, [0.5, 0.4, 0.3])).kind == WATCH  # the cap: one intervention this episode
    # A new episode resets the cap.
    assert op.step(view(0, [0.5, 0.4, 0.3], episode=1)).kind == TAKE_OVER
    assert op.interventions_total == 2


def test_a_new_episode_mid_intervention_lets_go():
    op = operator(takeover_steps=10, safe_upper=(0.75, 0.3, 0.5))
    assert op.step(view(0, [0.5, 0.0, 0.6])).kind == TAKE_OVER
    assert op.step(view(0, [0.48, 0.0, 0.41], episode=1)).kind == LET_GO


def test_on_lift_fingers_closing_on_the_cube_are_progress():
    op = operator("lift", stall_steps=3, progress_epsilon=0.005)
    cube = np.array([0.55, 0.0, 0.0275])
    target = cube + [0, 0, 0.08]

    def at_cube(step, finger):
        return SceneView(episode=0, step=step, tcp=cube, cube_position=cube, cube_quaternion=UPRIGHT,
                         target_position=target, joint_positions=np.asarray([*HOME[:7], finger]))
    closing = [op.step(at_cube(s, 0.04 - 0.006 * s)).kind for s in range(3)]  # 6 mm a step: a grasp under way
    assert closing == [WATCH] * 3
    stuck = [op.step(at_cube(3 + s, 0.028)) for s in range(3)]  # closed, but the cube does not rise
    assert [d.kind for d in stuck] == [WATCH, WATCH, TAKE_OVER] and "stalled" in stuck[-1].reason


def test_demo_episodes_are_driven_whole_then_it_only_corrects():
    op = operator(demo_episodes=2, stall_steps=50, takeover_steps=3)
    tcp = [0.5, 0.0, 0.3]  # no progress at all: a watching operator would wait out stall_steps
    first = [op.step(view(s, tcp, episode=4)) for s in range(30)]
    assert first[0].kind == TAKE_OVER and first[0].reason == "demonstration 1 of 2"
    assert [d.kind for d in first[1:]] == [DRIVE] * 29 and np.abs(first[5].twist).max() > 0.5
    second = [op.step(view(s, tcp, episode=5)).kind for s in range(30)]
    assert second == [TAKE_OVER] + [DRIVE] * 29
    assert op.interventions == 0  # demonstrations leave the per-episode cap of corrections alone
    # The third episode: the policy acts; the demonstration is let go of, then it only watches.
    assert [op.step(view(s, tcp, episode=6)).kind for s in range(3)] == [LET_GO, WATCH, WATCH]
    assert op.interventions_total == 2
    with pytest.raises(ValueError, match="demo_episodes"):
        OperatorSettings(demo_episodes=-1)


def test_twist_scale_and_the_gripper_button_of_a_grasp():
    op = operator("lift", stall_steps=1, progress_epsilon=0.01, twist_scale=0.5)
    cube = np.array([0.55, 0.0, 0.025])
    at_cube = view(0, cube, cube=cube, target=cube + [0, 0, 0.08])
    assert op.step(at_cube).kind == WATCH
    decision = op.step(view(1, cube, cube=cube, target=cube + [0, 0, 0.08]))
    assert decision.kind == TAKE_OVER and decision.buttons == (1, 0)  # around the cube: close the fingers
    assert np.abs(decision.twist).max() <= 0.5


def test_distance_to_go_and_bad_settings():
    v = view(0, [0.55, 0.05, 0.325])
    assert distance_to_go("reach", v) == pytest.approx(0.2)
    assert distance_to_go("push", v) == pytest.approx(0.3 + 0.1)
    assert distance_to_go("lift", v) == pytest.approx(0.3 + 0.1 + HOME[-1])  # + the finger opening
    with pytest.raises(ValueError, match="safe box"):
        OperatorSettings(safe_lower=(0.8, 0.0, 0.0), safe_upper=(0.7, 1.0, 1.0))
    with pytest.raises(ValueError, match="stall_steps"):
        OperatorSettings(stall_steps=0)
    with pytest.raises(ValueError, match="ee action space"):
        SimulatedOperator(OperatorSettings(), ScriptedExpert(None, space=None, config=variant_config()))


def test_demo_noise_wanders_in_demonstrations_only():
    tcp = [0.5, 0.0, 0.3]
    clean, noisy = operator(demo_episodes=1, stall_steps=1, takeover_steps=3), \
        operator(demo_episodes=1, stall_steps=1, takeover_steps=3, demo_noise=0.2)
    steps = [(clean.step(view(s, tcp, episode=1)), noisy.step(view(s, tcp, episode=1))) for s in range(10)]
    differences = [np.abs(a.twist - b.twist).max() for a, b in steps]
    assert min(differences) > 0 and all(b.buttons == a.buttons for a, b in steps)
    assert all(np.abs(b.twist).max() <= 1.0 for _, b in steps)  # still a SpaceMouse's range
    # A correction after the demonstrations is the expert's own motion, noise or not.
    for op in (clean, noisy):
        op.step(view(0, tcp, episode=2))
    corrections = [(clean.step(view(s, tcp, episode=2)), noisy.step(view(s, tcp, episode=2))) for s in range(1, 4)]
    assert any(a.kind == TAKE_OVER for a, _ in corrections)
    assert all(a.kind == b.kind and np.array_equal(a.twist, b.twist) for a, b in corrections)
    with pytest.raises(ValueError, match="demo_noise"):
        OperatorSettings(demo_noise=-0.1)


def lift_view(step: int, tcp, finger: float, cube=CUBE) -> SceneView:
    return SceneView(episode=0, step=step, tcp=np.asarray(tcp, dtype=float), cube_position=np.asarray(cube),
                     cube_quaternion=UPRIGHT, target_position=np.asarray(cube) + [0, 0, 0.08],
                     joint_positions=np.asarray([*HOME[:7], finger]))


def test_an_arm_off_the_experts_course_is_taken_over_after_stray_steps_and_one_on_it_never():
    space = EeActionSpace("xyz")
    follows = operator("lift", stray_steps=2, stall_steps=50, takeover_steps=3)
    tcp = np.array([0.45, -0.10, 0.30])
    for step in range(12):  # the arm makes 70% of each of the expert's steps: on course all the way down
        assert follows.step(lift_view(step, tcp, 0.04)).kind == WATCH
        obs = follows.observation(lift_view(step, tcp, 0.04))
        waypoint, yaw, _ = follows.expert.plan(obs)
        tcp = tcp + 0.7 * follows.expert.ee_motion(obs, waypoint, yaw) * space.step
    assert follows.strays == 0

    hovers = operator("lift", stray_steps=2, stall_steps=50, takeover_steps=2)
    above = np.array([0.45, -0.10, 0.30])
    kinds = [hovers.step(lift_view(s, above, 0.04)) for s in range(3)]  # still, where the expert heads down
    assert [d.kind for d in kinds] == [WATCH, WATCH, TAKE_OVER]
    assert "strayed for 2 steps" in kinds[-1].reason and "toward its waypoint" in kinds[-1].reason
    assert [hovers.step(lift_view(s, above, 0.04)).kind for s in (3, 4)] == [DRIVE, LET_GO]
    # The let-go step executes the resting reading: judged afresh from the next view, so the arm gets
    # stray_steps steps of its own before it is taken over again.
    assert [hovers.step(lift_view(s, above, 0.04)).kind for s in (5, 6, 7)] == [WATCH, WATCH, TAKE_OVER]
    with pytest.raises(ValueError, match="stray_steps"):
        OperatorSettings(stray_steps=-1)
    with pytest.raises(ValueError, match="stray_fraction"):
        OperatorSettings(stray_fraction=1.5)


def test_at_the_cube_fingers_that_stay_open_stray_and_fingers_closed_on_it_do_not():
    at_cube = CUBE.copy()  # the gripper centre on the cube's: the expert closes
    open_hand = operator("lift", stray_steps=2, stall_steps=50)
    kinds = [open_hand.step(lift_view(s, at_cube, 0.04)) for s in range(3)]
    assert [d.kind for d in kinds] == [WATCH, WATCH, TAKE_OVER] and "not closing" in kinds[-1].reason
    assert kinds[-1].buttons == (1, 0)

    holding = operator("lift", stray_steps=2, stall_steps=50)
    half = holding.expert.config.cube_size / 2
    # closing 5 mm a step (the expert's step there is short), then stopped on the cube's sides and rising with it
    closing = [holding.step(lift_view(s, at_cube, f)).kind for s, f in enumerate((0.04, 0.035, 0.030))]
    rising = [holding.step(lift_view(3 + s, at_cube + [0, 0, 0.015 * s], half, cube=at_cube + [0, 0, 0.015 * s]))
              for s in range(4)]
    assert closing + [d.kind for d in rising] == [WATCH] * 7
    # held but not rising (the expert lifts at full speed): off course
    assert holding.step(lift_view(7, at_cube + [0, 0, 0.045], half, cube=at_cube + [0, 0, 0.045])).kind == WATCH
    assert holding.step(lift_view(8, at_cube + [0, 0, 0.045], half, cube=at_cube + [0, 0, 0.045])).kind == TAKE_OVER
    opening = operator("lift", stray_steps=1, stall_steps=50)
    opening.step(lift_view(0, at_cube, half))
    risen = at_cube + [0, 0, 0.02]  # rises as the expert does, but the fingers let go of the cube
    assert "not closing" in opening.step(lift_view(1, risen, half + 0.004, cube=risen)).reason


def test_off_is_off_and_an_open_hand_away_from_the_cube_closing_strays():
    never = operator("lift", stall_steps=50)  # stray_steps 0: only stalls and the safe box
    assert all(never.step(lift_view(s, [0.45, -0.1, 0.3], 0.04)).kind == WATCH for s in range(20))
    closing = operator("lift", stray_steps=1, stall_steps=50)
    far = np.array([0.45, -0.10, 0.30])
    closing.step(lift_view(0, far, 0.04))
    obs = closing.observation(lift_view(0, far, 0.04))
    waypoint, yaw, _ = closing.expert.plan(obs)
    on_course = far + closing.expert.ee_motion(obs, waypoint, yaw) * 0.02
    decision = closing.step(lift_view(1, on_course, 0.034))  # on course, but closing the fingers far from the cube
    assert decision.kind == TAKE_OVER and "where the expert opens" in decision.reason


def test_exams_earn_the_policy_trust_and_a_failure_while_trusted_loses_it():
    op = operator("lift", stray_steps=1, stall_steps=5, takeover_steps=2, demo_episodes=1, exam_every=2,
                  trust_window=2, trust_level=1.0)
    above = np.array([0.45, -0.10, 0.30])  # still above the cube, where the expert heads down: a stray

    def episode(number: int, steps: int = 8, tcp=above, of=op) -> list[str]:
        return [of.step(SceneView(episode=number, step=s, tcp=np.asarray(tcp, dtype=float), cube_position=CUBE,
                                  cube_quaternion=UPRIGHT, target_position=CUBE + [0, 0, 0.08],
                                  joint_positions=np.asarray([*HOME[:7], 0.04]))).kind for s in range(steps)]

    assert episode(0)[0] == TAKE_OVER and op.episode_ended(0, True) is None  # a demonstration: not judged
    # the demonstration's hand let go, then strays corrected (twice, the cap): not judged
    assert episode(1)[:2] == [LET_GO, TAKE_OVER] and op.episode_ended(1, True) is None
    assert episode(2, steps=12) == [WATCH] * 12 and op.examining  # an exam: no stray or stall takeover
    assert op.episode_ended(2, True) == "" and not op.trusting  # 1 judged episode of the 2 trust rests on
    assert op.episode_ended(2, True) is None  # an episode's end counts once
    assert episode(3)[:2] == [WATCH, TAKE_OVER] and op.episode_ended(3, False) is None
    assert episode(4) == [WATCH] * 8
    assert "trusts the policy" in op.episode_ended(4, True) and op.trusting
    # Trusted: every episode runs as an exam would, the stall the exams let the policy work through included;
    # a failure ends trust (trust_level 1.0).
    assert episode(5, steps=12) == [WATCH] * 12 and not op.examining
    assert "no longer trusts" in op.episode_ended(5, False) and not op.trusting
    assert episode(6, steps=3) == [WATCH] * 3 and op.examining  # exams again
    assert episode(7)[:2] == [WATCH, TAKE_OVER] and not op.examining
    assert episode(8, steps=1, tcp=[0.45, -0.10, 0.70]) == [TAKE_OVER] and op.examining  # exams keep the safe box
    # Forgiving one failure: trust earned at 2 of 2 survives 1 of 2, and goes at 0 of 2.
    lenient = operator("lift", stray_steps=1, demo_episodes=0, exam_every=1, trust_window=2, trust_level=1.0,
                       trust_forgives=1)
    judged = []
    for number, done in enumerate([True, False, True, True, False, True, False, False]):
        episode(number, steps=1, of=lenient)
        lenient.episode_ended(number, done)
        judged.append(lenient.trusting)
    # exam 0 (1 of 1 judged) cannot earn it; 1 fails; 2, 3 earn it; 4 fails (1 of 2: forgiven); 5; 6 forgiven; 7 not
    assert judged == [False, False, False, True, True, True, True, False]
    never = operator("lift", stray_steps=1, exam_every=0)
    assert never.episode_ended(0, True) is None and not never.trusting
    with pytest.raises(ValueError, match="trust_level"):
        OperatorSettings(trust_level=0.0)
    with pytest.raises(ValueError, match="trust_window"):
        OperatorSettings(trust_window=0)
    with pytest.raises(ValueError, match="trust_forgives"):
        OperatorSettings(trust_forgives=-1)
