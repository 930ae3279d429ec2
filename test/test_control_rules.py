"""The actor's episode rules, intervention and step ledger, without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from hilserl.control.episode import EpisodeRecorder, Intervention, TeleopReading
from hilserl.control.rules import EpisodeRules
from hilserl.control.sensors import Observations
from hilserl.control.steps import StampMatcher, StepLedger, StepReport

FRAMES, STATE, ACTION = np.zeros((3, 4, 4), np.uint8), np.zeros(8), np.zeros(8)


def report(episode, step, reward=-0.5, terminated=False, truncated=False, success=False, ret=None):
    return StepReport(episode, step, reward if step else 0.0, terminated, truncated, success,
                      ret if ret is not None else -0.5 * step, (episode * 100 + step, 0))


# -- Intervention ----------------------------------------------------------------------------------
def test_intervention_needs_a_fresh_held_deadman_and_labels_fire_on_the_press_only():
    iv = Intervention(axes=[0, 1, 5], scale=2.0, timeout=0.5)
    assert iv.human_action(0.0) is None
    assert iv.update(TeleopReading(0.0, (0.2, -0.9, 0.0), (0, 0, 0))) is None
    assert iv.human_action(0.1) is None  # dead-man released
    iv.update(TeleopReading(1.0, (0.2, -0.9, 0.0), (1, 0, 0)))
    assert iv.human_action(1.1).tolist() == [0.4, -1.0, 0.0]  # scaled, clipped, a missing axis reads 0
    assert iv.human_action(1.6) is None  # the device went silent: control goes back to the policy
    assert iv.update(TeleopReading(2.0, (), (1, 1, 0))) == "success"
    assert iv.update(TeleopReading(2.1, (), (1, 1, 0))) is None  # still held: no second label
    assert iv.update(TeleopReading(2.2, (), (1, 0, 1))) == "failure"


# -- EpisodeRecorder -------------------------------------------------------------------------------
def test_recorder_pairs_each_action_with_the_outcome_that_followed():
    sent = []
    rec = EpisodeRecorder(sent.append)
    assert rec.outcome(1.0, False, False, False) is None  # nothing acted yet: nothing recorded
    rec.acted(FRAMES, STATE, ACTION + 1, intervention=True)
    assert rec.outcome(-1.0, False, False, False) is None
    rec.acted(FRAMES, STATE, ACTION, intervention=False)
    final = np.ones((3, 4, 4), np.uint8)
    summary = rec.outcome(0.0, True, False, True, next_frames=final, next_state=STATE + 2)
    assert [(t.step, t.reward, t.terminated, t.intervention) for t in sent] == [(0, -1.0, False, True),
                                                                                (1, 0.0, True, False)]
    assert sent[1].final_frames is final and sent[0].final_frames is None and sent[1].final_state[0] == 2
    assert summary == {"episode": 0, "steps": 2, "return": -1.0, "success": True, "interventions": 1,
                       "intervention_rate": 0.5, "weights_version": 0}
    rec.acted(FRAMES, STATE, ACTION, intervention=False)
    assert sent[-1].episode == 0 and rec.stats.episode == 1  # the next episode has its own index


def test_an_episode_is_credited_to_the_weights_that_chose_most_of_its_actions():
    rec = EpisodeRecorder(lambda t: None)
    for version, intervention in [(2, False), (3, False), (3, False), (4, True), (4, True), (4, True)]:
        rec.acted(FRAMES, STATE, ACTION, intervention=intervention, weights_version=version)
        rec.outcome(-1.0, False, False, False)
    assert rec.end_episode(False)["weights_version"] == 3  # a person's steps credit no version
    for version in (5, 6):  # a tie goes to the newer version, as the learner's guard breaks it
        rec.acted(FRAMES, STATE, ACTION, intervention=False, weights_version=version)
    assert rec.end_episode(True)["weights_version"] == 6
    rec.acted(FRAMES, STATE, ACTION, intervention=True, weights_version=7)
    assert rec.end_episode(True)["weights_version"] is None


# -- StepLedger and StampMatcher -------------------------------------------------------------------
def test_ledger_keeps_reports_by_key_ignores_resends_and_never_drops_a_terminal():
    ledger = StepLedger(keep=3)
    for r in [report(0, 1), report(0, 2, terminated=True), report(1, 0), report(1, 1), report(1, 2)]:
        ledger.add(r)
    assert sorted(ledger.reports) == [(0, 2), (1, 1), (1, 2)]  # the oldest non-terminals went first
    assert ledger.at_stamp((101, 0)).key == (1, 1)
    assert [r.key for r in ledger.take_through((1, 0))] == [(0, 2)]  # (1, 0) went over the bound
    ledger.add(report(1, 0))  # a lock-step re-send of a taken step
    assert [r.key for r in ledger.take_through((1, 2))] == [(1, 1), (1, 2)]
    matcher = StampMatcher()
    assert matcher.common([(1, 0), (2, 0)]) is None and matcher.common([(1, 0), (1, 0)]) == (1, 0)
    matcher.last = (1, 0)
    assert matcher.common([(1, 0)]) is None



def test_observations_act_once_per_step_every_sensor_shows_and_only_with_its_report():
    sensors, ledger = Observations(["a", "b"], ["cam"], lockstep=True), StepLedger()
    assert sensors.add_joint_state(0.0, (1, 0), ["b"], [0.2]) == "joint_states lacks positions for ['a']"
    assert sensors.problem(0.0, stale_after=0.5) == "no image received yet on cam"
    assert sensors.add_joint_state(0.0, (1, 0), ["b", "a", "c"], [0.2, 0.1, 9.0]) is None
    assert sensors.q.tolist() == [0.1, 0.2]  # in `joints` order, extra joints dropped
    sensors.add_image("cam", 0.0, (2, 0), FRAMES)
    assert sensors.current_report(ledger, uses_reports=False) == (False, None)  # the sensors show two steps
    sensors.add_image("cam", 9.0, (1, 0), FRAMES)
    assert sensors.problem(9.0, stale_after=0.5) is None  # lock-step: the sim waits, nothing goes stale
    assert sensors.current_report(ledger, uses_reports=True) == (False, None)  # the sim's report is not in
    ledger.add(report(0, 1))  # stamp (1, 0)
    assert sensors.current_report(ledger, uses_reports=True) == (True, report(0, 1))
    assert sensors.current_report(ledger, uses_reports=True) == (True, report(0, 1))  # not acted on yet: it waits
    assert sensors.shown_at == 0.0  # the step's first sensor message (the joint state) came at 0.0
    sensors.take()
    assert sensors.current_report(ledger, uses_reports=True) == (False, None)  # that step was acted on

def test_step_report_json_round_trip_and_malformed_input():
    r = report(3, 4, terminated=True, success=True)
    assert StepReport.from_json(r.to_json()) == r
    with pytest.raises(ValueError):
        StepReport.from_json('{"episode": 1}')


# -- EpisodeRules ----------------------------------------------------------------------------------
def rules():
    transitions, episodes = [], []
    return EpisodeRules(transitions.append, episodes.append), transitions, episodes


def test_lockstep_episode_takes_the_sims_flags_and_return():
    r, transitions, episodes = rules()
    assert r.observe(report(0, 0), FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, False)
    assert r.observe(report(0, 1), FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, True)
    assert not r.observe(report(0, 2, reward=0.0, terminated=True, success=True, ret=-0.5), FRAMES, STATE)
    assert [(t.reward, t.terminated, t.success) for t in transitions] == [(-0.5, False, False), (0.0, True, True)]
    assert episodes == [{"episode": 0, "steps": 2, "return": -0.5, "success": True, "terminated": True,
                         "truncated": False, "actions": 2, "intervention_rate": 0.5, "weights_version": 0}]
    assert r.observe(report(1, 0), FRAMES, STATE)  # the next episode


def test_real_time_sums_skipped_steps_and_reports_an_episode_end_it_never_saw():
    r, transitions, episodes = rules()
    assert r.observe(report(4, 3), FRAMES, STATE)  # joined mid-episode
    r.acted(FRAMES, STATE, ACTION, False)
    assert not r.observe(report(4, 3), FRAMES, STATE)  # the sim has not stepped: no second action in step 3
    for step in (4, 5):
        r.report(report(4, step))
    r.report(report(4, 6, truncated=True, ret=-9.0))
    r.report(report(5, 0))
    r.report(report(5, 1))
    assert r.observe(report(5, 1), FRAMES, STATE)  # the terminal observation was never acted on
    assert [(t.reward, t.truncated) for t in transitions] == [(-1.5, True)]
    assert episodes[0] | {} == {"episode": 4, "steps": 6, "return": -9.0, "success": False, "terminated": False,
                                "truncated": True, "actions": 1, "intervention_rate": 0.0, "weights_version": 0}
    r.acted(FRAMES, STATE, ACTION, False)
    # the actor holds through a whole episode: it is still reported, with no actions of its own
    r.drop_pending()
    for rep in (report(5, 2, truncated=True, ret=-1.0), report(6, 0), report(6, 1, terminated=True, success=True,
                                                                               ret=0.0), report(7, 0)):
        r.report(rep)
    assert r.observe(report(7, 0), FRAMES, STATE)
    assert [(e["episode"], e["actions"], e["success"]) for e in episodes] == [(4, 1, False), (5, 1, False),
                                                                              (6, 0, True)]


def test_a_label_ends_the_episode_and_the_actor_waits_for_the_next_sim_episode():
    r, transitions, episodes = rules()
    r.observe(report(0, 0), FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, True)
    r.press("success")
    assert not r.observe(report(0, 1), FRAMES, STATE)
    assert episodes[-1]["label"] == "success" and episodes[-1]["success"] and transitions[-1].terminated
    assert not r.observe(report(0, 2), FRAMES, STATE)  # the rest of the labelled episode is not acted in
    assert r.observe(report(1, 0), FRAMES, STATE) and len(episodes) == 1


def test_a_label_given_as_the_sim_ends_the_episode_is_the_episodes_verdict_everywhere():
    # The person's success label and the sim's step limit close the same step: the transition and the summary
    # both say success, and the episode is summarised once.
    r, transitions, episodes = rules()
    r.observe(report(0, 0), FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, True)
    r.press("success")
    assert not r.observe(report(0, 1, truncated=True), FRAMES, STATE)
    assert transitions[-1].success and transitions[-1].terminated
    assert [(e["episode"], e["success"], e.get("label")) for e in episodes] == [(0, True, "success")]
    # In real time the next episode's first observation can arrive with the end: the label still belongs to the
    # episode acted in, and the actor acts in the new one.
    assert r.observe(report(1, 0), FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, True)
    r.press("failure")
    r.report(report(1, 1, truncated=True))
    assert r.observe(report(2, 0), FRAMES, STATE)
    assert [(e["episode"], e["success"], e.get("label")) for e in episodes][1:] == [(1, False, "failure")]
    assert transitions[-1].episode == 1 and transitions[-1].terminated and not transitions[-1].success


def test_without_a_sim_labels_and_the_step_limit_end_episodes():
    transitions, episodes = [], []
    r = EpisodeRules(transitions.append, episodes.append, max_episode_steps=2)
    for _ in range(2):
        assert r.observe(None, FRAMES, STATE)
        r.acted(FRAMES, STATE, ACTION, False)
    assert not r.observe(None, FRAMES, STATE)  # the second action's outcome hits the limit
    assert episodes[-1]["truncated"] and episodes[-1]["steps"] == 2 and transitions[-1].truncated
    assert r.observe(None, FRAMES, STATE)
    r.acted(FRAMES, STATE, ACTION, False)
    r.press("failure")
    assert not r.observe(None, FRAMES, STATE)
    assert episodes[-1]["terminated"] and not episodes[-1]["success"] and episodes[-1]["label"] == "failure"
