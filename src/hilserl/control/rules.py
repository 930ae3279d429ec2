"""The actor's episode rules, in plain Python: when an action's outcome is known, when an episode ends, and
how it is labelled.

With a sim (step reports on `sim/step`), the sim decides: an episode's boundaries, return, step count,
success and terminal/truncation flags are the sim's, read from its reports by (episode, step), whatever the
timing of the messages. An action taken in the observation of step k is closed with every step that
followed it up to the next observation the actor acts on (one step in lock-step; in real time possibly
several, their rewards summed), stopping at the end of its episode. Every sim episode that ends after the
actor's first action is reported, even one the actor held through.

Without reports (hardware), an episode ends by a person's label or `max_episode_steps`, reward 0.

A person's label (success/failure button) ends the episode at once; with a sim the actor then waits for
the sim's next episode (the node asks the sim to reset). A learned reward classifier ends an episode the same
way, with a label that also carries the closing transition's reward (1) and names who gave it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hilserl.control.episode import EpisodeRecorder, Transition
from hilserl.control.steps import StepLedger, StepReport


class EpisodeRules:
    def __init__(self, sink: Callable[[Transition], None], on_episode: Callable[[dict], None],
                 max_episode_steps: int = 0, warn: Callable[[str], None] | None = None):
        self.recorder = EpisodeRecorder(sink)
        self.ledger = StepLedger()
        self.on_episode, self.max_episode_steps = on_episode, max_episode_steps
        self.warn = warn or (lambda message: None)
        self.acted_in: StepReport | None = None  # the report of the observation the pending action was taken in
        self.current: StepReport | None = None  # the report of the observation being decided on
        self.recorder_episode: int | None = None  # the sim episode the recorder's open episode belongs to
        self.closed_through = -1  # sim episodes up to this one are summarised (or labelled)
        self.label: str | None = None
        self.label_reward: float | None = None  # the labelled transition's reward, when the label sets it
        self.label_source: str | None = None  # who labelled, when not a person (the summary says so)
        self.started = False  # acted at least once: from then on every sim episode end is reported

    # -- inputs ----------------------------------------------------------------------------------
    def report(self, report: StepReport) -> None:
        self.ledger.add(report)

    def press(self, label: str, reward: float | None = None, source: str | None = None) -> None:
        """A label ("success" / "failure"), applied at the next observation (a person's, or `source`'s);
        `reward`: the reward of the transition the label closes (None: the sim's, or 0 without a sim)."""
        self.label, self.label_reward, self.label_source = label, reward, source

    def episode_open(self, now: StepReport | None) -> bool:
        """Whether the observation `now` belongs to an episode not yet summarised (its last step included)."""
        return now is None or now.episode > self.closed_through

    def can_label(self, now: StepReport | None) -> bool:
        """Whether a label applied at `now` would end an episode the actor has acted in."""
        return self.started and self.recorder.stats.steps > 0 and self.episode_open(now) \
            and (now is None or not now.ended)

    def _take_label(self) -> tuple[str | None, float | None, str | None]:
        taken = self.label, self.label_reward, self.label_source
        self.label = self.label_reward = self.label_source = None
        return taken

    def drop_pending(self) -> None:
        """A gap in the observations: the action before it has no known outcome."""
        self.recorder.pending = None
        self.acted_in = None

    def acted(self, frames: np.ndarray, state: np.ndarray, action: np.ndarray, intervention: bool,
              weights_version: int = 0) -> None:
        """The action sent in the observation last passed to `observe`."""
        self.recorder.acted(frames, state, action, intervention, weights_version)
        self.acted_in, self.started = self.current, True
        if self.current is not None:
            self.recorder_episode = self.current.episode

    # -- the decision ----------------------------------------------------------------------------
    def observe(self, now: StepReport | None, frames: np.ndarray, state: np.ndarray) -> bool:
        """Settle what happened up to the observation `now` reports (None: no sim); True = act in it."""
        self.current = now
        if now is None:
            return self._observe_unreported(frames, state)
        self.ledger.add(now)  # in case it came by another road than report()
        taken = self.ledger.take_through(now.key)
        if self.recorder.pending is not None and self.acted_in is None:
            self.drop_pending()  # taken before the sim's first report arrived: its outcome cannot be told
        if self.recorder.pending is not None and self.acted_in is not None:
            after = [r for r in taken if r.episode == self.acted_in.episode]
            if after:
                self._settle(after, frames, state)
        for report in taken:
            if report.ended:
                self._episode_ended(report)
        if self.label is not None:
            self._labelled(now)
        if now.ended or now.episode <= self.closed_through:
            return False  # nothing to command: the episode has ended (the sim starts the next one)
        return self.recorder.pending is None  # else no step since the last action (real time: the sim lags)

    def _settle(self, after: list[StepReport], frames: np.ndarray, state: np.ndarray) -> None:
        last = after[-1]
        label, label_reward, source = self._take_label()  # a label ends the episode with this transition
        truncated = last.truncated or (self.max_episode_steps > 0 and self.recorder.stats.steps >= self.max_episode_steps)
        reward = label_reward if label is not None and label_reward is not None else sum(r.reward for r in after)
        # A label makes this transition terminal, so `closed` is then the episode's summary.
        closed = self.recorder.outcome(reward, last.terminated or label is not None, truncated,
                                       label == "success" if label else last.success, next_frames=frames,
                                       next_state=state)
        self.acted_in = None
        if label is not None:
            # Summarised here, with the episode the transition belongs to: the label is the episode's verdict
            # even where the sim ended that episode in the same step (its own end report is then passed over),
            # and the observation being decided on may already belong to the next episode.
            self._emit(last, label == "success", True, False, closed, label=label, source=source)

    def _episode_ended(self, report: StepReport) -> None:
        if not self.started or report.episode <= self.closed_through:
            return
        stats = {}
        if self.recorder_episode == report.episode:
            stats = self.recorder.last_closed if self.recorder.stats.steps == 0 else self.recorder.end_episode(report.success)
        self._emit(report, report.success, report.terminated, report.truncated, stats)

    def _labelled(self, now: StepReport) -> None:
        label, reward, source = self._take_label()
        if not self.started or now.episode <= self.closed_through:
            self.warn(f"{label} label ignored: the actor has not acted in this episode yet")
            return
        success = label == "success"
        if self.recorder.pending is not None:
            self.recorder.outcome(reward or 0.0, terminated=True, truncated=False, success=success)
        stats = self.recorder.last_closed if self.recorder.stats.steps == 0 else self.recorder.end_episode(success)
        self.acted_in = None
        self._emit(now, success, True, False, stats, label=label, source=source)

    def _emit(self, report: StepReport, success: bool, terminated: bool, truncated: bool, stats: dict,
              label: str | None = None, source: str | None = None) -> None:
        """`stats`: the recorder's summary of the actor's part of the episode ({} if it took no part)."""
        self.closed_through = report.episode
        actions, interventions = stats.get("steps", 0), stats.get("interventions", 0)
        summary = {"episode": report.episode, "steps": report.step, "return": report.episode_return,
                   "success": success, "terminated": terminated, "truncated": truncated, "actions": actions,
                   "intervention_rate": interventions / actions if actions else 0.0,
                   "weights_version": stats.get("weights_version")}
        self.on_episode(summary | label_fields(label, source))

    def _observe_unreported(self, frames: np.ndarray, state: np.ndarray) -> bool:
        label, reward, source = self._take_label()
        success = label == "success"
        truncated = self.max_episode_steps > 0 and self.recorder.stats.steps >= self.max_episode_steps
        if self.recorder.pending is not None:
            summary = self.recorder.outcome(reward or 0.0, label is not None, truncated, success,
                                            next_frames=frames, next_state=state)
        elif label is not None and self.recorder.stats.steps > 0:
            summary = self.recorder.end_episode(success)
        else:
            if label is not None:
                self.warn(f"{label} label ignored: the episode has no steps yet")
            return True
        if summary is None:
            return True
        ended = {"terminated": label is not None, "truncated": truncated and label is None}
        self.on_episode({k: summary[k] for k in ("episode", "steps", "return", "success", "intervention_rate",
                                                 "weights_version")}
                        | ended | {"actions": summary["steps"]} | label_fields(label, source))
        return False  # that observation ended the episode: nothing to command in it


def label_fields(label: str | None, source: str | None) -> dict:
    """What an episode summary says about its label: none, a person's, or another source's (`label_source`)."""
    return ({"label": label} if label else {}) | ({"label_source": source} if label and source else {})


def episode_metrics(summary: dict) -> dict[str, float]:
    """The scalars the metrics log keeps per finished episode."""
    return {f"episode/{k}": summary[k] for k in ("return", "success", "intervention_rate", "steps")}


def episode_line(summary: dict) -> str:
    """One log line for a finished episode's summary (as `on_episode` receives it)."""
    return (f"episode {summary['episode']} done: success={summary['success']} return={summary['return']:.2f} "
            f"steps={summary['steps']} interventions={summary['intervention_rate']:.0%}")
