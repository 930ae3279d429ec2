"""One step of the actor's control loop, in plain Python: may it act on the newest observation, and with what.

`ActorCore.step(now)` runs the checks in order: weights loaded (else WAITING, nothing commanded), an ee_delta
arm's URDF known (else WAITING), fresh sensors (else HOLDING: the frame stack and the pending action are
dropped), in lock-step every sensor showing the same new simulation step, and the episode rules
(control/rules.py) allowing an action in it. Then a person's action (while they intervene) or the policy's
becomes an ArmCommand, and the action is recorded for its transition. The node publishes the command.
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
                 deterministic: bool, uses_reports: bool):
        """`policy`: control/policy.py ActorPolicy (torch; not imported here); `set_state(state, reason)`: the
        node's, which logs and publishes a change; `uses_reports`: a sim sends step reports on `episode_topic`."""
        self.policy, self.sensors, self.rules, self.commander, self.health = policy, sensors, rules, commander, health
        self.set_state = set_state
        self.stale_after, self.deterministic, self.uses_reports = stale_after, deterministic, uses_reports

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
        if self.health.state != RUNNING:
            self.set_state(RUNNING, "sensors fresh, commanding")
        q = self.sensors.q
        stacked, newest = self.policy.stack(self.sensors.images)
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

    def report(self, now: float, outbox) -> Report:
        """The actor's /diagnostics report; `outbox`: the link to the learner (nodes/transitions.py) or None."""
        receiver = self.policy.receiver
        return self.health.report(now, receiver.meta, receiver.loaded_digest,
                                  self.commander.human_action(now) is not None, self.rules.recorder.stats, outbox)

    def status(self, node: str, outbox) -> dict:
        """What `~/status` shows."""
        receiver = self.policy.receiver
        return self.health.status(node, receiver.meta, receiver.loaded_digest, outbox)
