"""One step of the actor's control loop, in plain Python: may it act on the newest observation, and with what.

`ActorCore.step(now)` runs the checks in order: weights loaded (else WAITING, nothing commanded), an ee_delta
arm's URDF known (else WAITING), fresh sensors (else HOLDING: the frame stack and the pending action are
dropped), in lock-step every sensor showing the same new simulation step, and the episode rules
(control/rules.py) allowing an action in it. Then a person's action (while they intervene) or the policy's
becomes an ArmCommand, and the action is recorded for its transition. The node publishes the command.

Before the rules see an observation of an open episode, its frames may be recorded with the success button's
state as their label (`frame_writer`, hilserl.reward.frames), and a reward classifier (`reward`,
control/reward.py) may end the episode as a success. While frames are recorded the success button labels
frames and does not end the episode.
"""

from __future__ import annotations

from collections.abc import Callable

from hilserl.control.arm_command import ArmCommand, ArmCommander
from hilserl.control.health import HOLDING, RUNNING, WAITING, ActorHealth
from hilserl.control.rules import EpisodeRules
from hilserl.control.sensors import Observations
from hilserl.health import Report


class ActorCore:
    def __init__(self, policy, sensors: Observations, rules: EpisodeRules, commander: ArmCommander,
                 health: ActorHealth, set_state: Callable[[str, str], None], stale_after: float,
                 deterministic: bool, uses_reports: bool, reward=None, frame_writer=None, teleop_wait: float = 0.0):
        """`policy`: control/policy.py ActorPolicy (torch; not imported here); `set_state(state, reason)`: the
        node's, which logs and publishes a change; `uses_reports`: a sim sends step reports on `episode_topic`;
        `reward`: a control/reward.py ClassifierReward or None; `frame_writer`: a reward/frames.py FrameWriter
        or None."""
        self.policy, self.sensors, self.rules, self.commander, self.health = policy, sensors, rules, commander, health
        self.set_state = set_state
        self.stale_after, self.deterministic, self.uses_reports = stale_after, deterministic, uses_reports
        self.reward, self.frame_writer = reward, frame_writer
        self.teleop_wait = teleop_wait  # lock-step: s to wait for the reading of a person in control
        self.awaiting_person = False  # a step waits for it: the node calls step() again when the time is up
        self.frames_problem = ""  # why recording frames stopped

    def press(self, label: str) -> None:
        """A person's label button; while frames are recorded, success labels frames instead of ending."""
        if label == "success" and self.frame_writer is not None:
            return
        self.rules.press(label)

    def step(self, now: float) -> tuple[ArmCommand, bool] | None:
        """The command for the newest observation and whether a person gave it; None: nothing to command now."""
        if not self.policy.ready:
            return None  # WAITING: nothing is commanded before weights arrive
        waiting = self.commander.waiting_reason()
        if waiting:  # an ee_delta arm without its URDF: nothing is commanded either
            self.set_state(WAITING, waiting)
            return None
        problem = self.sensors.problem(now, self.stale_after)
        if problem:
            self.set_state(HOLDING, problem)
            self.policy.reset_stack()  # a gap in the stream starts a fresh frame stack
            self.rules.drop_pending()
            return None
        ready, report = self.sensors.current_report(self.rules.ledger, self.uses_reports)
        if not ready:
            return None  # wait until every sensor (and the sim's report) shows the same, new simulation step
        self.awaiting_person = self.awaits_person(now)
        if self.awaiting_person:
            return None
        self.sensors.take()
        if self.health.state != RUNNING:
            self.set_state(RUNNING, "sensors fresh, commanding")
        q = self.sensors.q
        stacked, newest = self.policy.stack(self.sensors.images)
        self.learned_reward(now, report, newest)
        if not self.rules.observe(report, newest, q):
            return None
        human = self.commander.human_action(now)
        action = human if human is not None else self.policy.act(stacked, q, self.deterministic)
        command = self.commander.command(q, action)
        self.health.commands_sent += 1
        self.health.control_rate.tick(now)
        self.rules.acted(newest, q, command.executed, intervention=human is not None,
                         weights_version=self.policy.receiver.meta.weights_version)
        return command, human is not None

    def awaits_person(self, now: float) -> bool:
        """Lock-step, a person in control: their reading for this step (made after they saw it) is not in yet,
        and `teleop_wait` has not passed since the step's first sensor message. Acting at once would execute the
        reading they gave for the step before, one step late, and record it as their answer to this one."""
        if not self.sensors.lockstep or self.teleop_wait <= 0:
            return False
        read_at = self.commander.person_read_at(now)
        shown_at = self.sensors.shown_at
        return read_at is not None and read_at < shown_at and now - shown_at < self.teleop_wait

    def learned_reward(self, now: float, report, newest) -> None:
        """Before the rules see this observation: record its frames, and let the classifier end the episode."""
        if not self.rules.episode_open(report):
            return  # an episode already summarised (labelled), waiting for the sim's next one
        if self.frame_writer is not None:
            try:
                self.frame_writer.add(newest, self.commander.success_held(now))
            except ValueError as err:  # frames that do not fit the folder's: stop recording, keep what is there
                self.frame_writer.close()
                self.frame_writer, self.frames_problem = None, str(err)
        if self.reward is None:
            return
        confirmed = self.reward.judge(self.sensors.images, newest, None if report is None else report.success)
        if confirmed and self.rules.can_label(report):
            from hilserl.control.reward import LABEL_SOURCE

            self.rules.press("success", reward=1.0, source=LABEL_SOURCE)
            self.reward.ended_episode()

    def episode_finished(self) -> None:
        """An episode ended: the classifier starts counting afresh, recorded frames start a new episode, and the
        next episode starts with the policy in control."""
        self.commander.release_teleop()
        if self.reward is not None:
            self.reward.reset()
        if self.frame_writer is not None:
            self.frame_writer.end_episode()

    def close(self) -> None:
        if self.frame_writer is not None:
            self.frame_writer.close()

    def report(self, now: float, outbox) -> Report:
        """The actor's /diagnostics report; `outbox`: the link to the learner (nodes/transitions.py) or None."""
        receiver = self.policy.receiver
        report = self.health.report(now, receiver.meta, receiver.loaded_digest,
                                    self.commander.human_action(now) is not None, self.rules.recorder.stats, outbox)
        if self.reward is not None:
            report.values.update(self.reward.values())
        if self.frame_writer is not None:
            report.values.update({"record_frames/dir": str(self.frame_writer.folder),
                                  "record_frames/frames": self.frame_writer.frames_added,
                                  "record_frames/episode": self.frame_writer.episode})
        if self.frames_problem:
            report.values["record_frames/stopped"] = self.frames_problem
        return report

    def status(self, node: str, outbox) -> dict:
        """What `~/status` shows."""
        receiver = self.policy.receiver
        return self.health.status(node, receiver.meta, receiver.loaded_digest, outbox)
