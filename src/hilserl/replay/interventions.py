"""The intervention buffer: the transitions a person drove, each with the policy's steps it reads kept beside it.

A correction starts in the middle of an episode the policy drove. Its first observation, as the actor saw it,
stacks the `frame_stack - 1` frames before it, which the policy's steps recorded; its last transitions' n-step
targets reach `n_step` steps past the hand-back, into the policy's steps again. A buffer that kept only the
person's transitions would stack the first frame repeated (a still arm, not what the actor saw) and could
sample none of the last `n_step` transitions of a correction that hands back before the episode ends: of a
five-step correction with `n_step` 3, two transitions, both with the wrong history. So the buffer is offered
every transition of the stream, keeps the person's, and keeps as context (read, never sampled) the policy's
steps just before a correction and just after it.

    InterventionBuffer.offer(t, key)   every transition, in stream order; the person's are stored
    InterventionBuffer.corrections()   the person's transitions it holds (context rows not counted)
"""

from __future__ import annotations

from collections import deque

from hilserl.control.episode import Transition
from hilserl.replay.episode_buffer import ReplayBuffer


class InterventionBuffer(ReplayBuffer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recent: dict[int, deque[Transition]] = {}  # episode key -> its last steps, for a correction's stack
        self.stored_through: dict[int, int] = {}  # episode key -> the last step stored (rows go in step order)
        self.context_owed: dict[int, int] = {}  # episode key -> steps after a hand-back still to keep as context

    def add(self, t: Transition, episode_key: int, context: bool = False) -> None:
        super().add(t, episode_key, context)
        if t.terminated or t.truncated:  # whole episodes added directly (demonstrations) leave nothing behind
            self.stored_through.pop(episode_key, None)
        else:
            self.stored_through[episode_key] = t.step

    def offer(self, t: Transition, episode_key: int) -> bool:
        """One transition of a stream, in order: stored if a person drove it, kept as context if a correction
        reads it; returns whether a person drove it."""
        key = episode_key
        before = self.recent.setdefault(key, deque(maxlen=self.config.frame_stack - 1))
        if t.intervention:
            for earlier in before:  # the policy's steps this observation's frame stack reads, unless stored
                if earlier.step > self.stored_through.get(key, -1):
                    self.add(earlier, key, context=True)
            self.add(t, key)
            self.context_owed[key] = self.n_step
        elif self.context_owed.get(key, 0) > 0:  # the steps the correction's n-step targets reach
            self.add(t, key, context=True)
            self.context_owed[key] -= 1
        before.append(t)
        if t.terminated or t.truncated:  # the episode is over: nothing of it is read again
            for kept in (self.recent, self.stored_through, self.context_owed):
                kept.pop(key, None)
        return t.intervention

    def corrections(self) -> int:
        """The person's transitions held (the context rows beside them, the policy's, not counted)."""
        return int(self.intervention[:len(self)].sum())
