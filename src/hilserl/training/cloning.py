"""Cloning a person's first demonstrations before reinforcement learning, in plain torch.

On a cell unlike the one a policy was trained in (new camera mounting, light, paint), the pretrained encoder
sees a scene it has not learnt, and the TD loss teaches it slowly: the policy keeps failing while the critic
sorts the cell out. A person records a few whole demonstrations first, as one would on a new cell; cloning
them, every inference module trained (encoder, actor head, grasp critic) as pretraining does, moves the policy
to the new cell in a minute or two. RL then starts from there, its demonstration buffer already holding them.

With `every` > 0 the cloning comes back in rounds, as in human-gated DAgger: each time `every` more transitions
a person drove have arrived (their corrections, which start where the policy went wrong), another `updates`
steps clone the whole intervention buffer again. Round k is owed once `after + (k - 1) * every` are stored, so
the steps done are all a restart needs to know.

With `average` > 0 a round ends on the exponential moving average of its steps' weights (decay `average`)
rather than on its last step: cloning a few thousand transitions at a constant rate ends wherever the last
batches left it, and the average is the steadier policy. (A restart mid-round averages from there on.)

    clone_update()   one behaviour-cloning step of every inference module (shared with `pretrain`)
    CloningPhase     the learner's cloning: waits for `after` intervention transitions, then `updates` steps
                     (and another `updates` per `every` more)
"""

from __future__ import annotations

import contextlib

import torch

from hilserl.policies.actor_critic import cloning_loss
from hilserl.policies.augment import colour_jitter, random_shift
from hilserl.policies.batch import Batch

# Defaults; all are learner parameters (clone_*).
CLONE_UPDATES = 0  # 0 = no cloning phase
CLONE_AFTER = 300  # intervention transitions stored before the phase starts (lift: ~6 whole demonstrations)
CLONE_LR = 3e-4  # pretraining's cloning rate
CLONE_BATCH_SIZE = 64  # pretraining's cloning batch
CLONE_EVERY = 0  # intervention transitions per later round; 0 = one round only
CLONE_AVERAGE = 0.0  # decay of the weight average a round ends on; 0 = the last step's weights


def clone_update(policy, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, state: torch.Tensor | None,
                 labels: torch.Tensor, augment_pad: int, colour_strength: float = 0.0, autocast=None) -> float:
    """One step of behaviour cloning on labelled actions (`cloning_loss`, every inference module trained), the
    frames randomly shifted by up to `augment_pad` pixels (and colour-jittered with `colour_strength`). Returns
    the loss."""
    with autocast if autocast is not None else contextlib.nullcontext():
        pixels = random_shift(colour_jitter(pixels, colour_strength), augment_pad)
        loss = cloning_loss(policy, pixels, state, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


class CloningPhase:
    """`updates` cloning steps on the intervention buffer, once it holds `after` transitions a person drove, and
    `updates` more for every `every` transitions after those (0: no more)."""

    def __init__(self, agent, updates: int = CLONE_UPDATES, after: int = CLONE_AFTER, lr: float = CLONE_LR,
                 batch_size: int = CLONE_BATCH_SIZE, every: int = CLONE_EVERY, average: float = CLONE_AVERAGE):
        if updates < 0 or after < 1 or lr <= 0 or batch_size < 1 or every < 0 or not 0 <= average < 1:
            raise ValueError(f"invalid cloning phase: updates {updates}, after {after}, lr {lr}, batch {batch_size}, "
                             f"every {every}, average {average}")
        self.updates, self.after, self.lr, self.batch_size, self.every = updates, after, lr, batch_size, every
        self.average = average
        self.averaged: list[torch.Tensor] | None = None  # this round's weight average so far
        self.done = 0  # steps done, over the whole run (the learner restores it on resume: no second cloning)
        self.last_loss = float("nan")
        self.attach(agent)

    def attach(self, agent) -> None:
        """Clone into `agent` from now on (a checkpoint swapped in mid-phase), with a fresh optimiser for it."""
        self.agent = agent
        self.optimizer = agent.speed.adam(list(agent.inference.parameters()), self.lr)

    def rounds(self, interventions: int) -> int:
        """Rounds owed, given the intervention transitions stored."""
        if interventions < self.after:
            return 0
        return 1 + ((interventions - self.after) // self.every if self.every else 0)

    def due(self, interventions: int) -> int:
        """Cloning steps owed (done ones included); before the first round, that round's."""
        return self.updates * max(self.rounds(interventions), 1)

    def pending(self, interventions: int) -> bool:
        return self.done < self.due(interventions)

    def round_ends(self) -> bool:
        """The last step ended a round: its weights go out."""
        return self.done > 0 and self.done % self.updates == 0

    def waiting_for(self, interventions: int) -> str:
        """Why no cloning step can run yet ('' = one can), given the intervention transitions stored."""
        if interventions < self.after:
            return f"cloning waits for a person's demonstrations: {interventions}/{self.after} intervention " \
                   f"transitions stored"
        return ""

    def step(self, batch: Batch) -> float:
        """One cloning step on `batch`'s rows (all of them: the caller samples the intervention buffer)."""
        agent = self.agent
        batch = batch.to(agent.device)
        state = batch.state.float() if batch.state is not None else None
        self.last_loss = clone_update(agent.inference.train(), self.optimizer, batch.pixels, state, batch.action,
                                      agent.hyper.augment_pad, autocast=agent.speed.autocast(agent.device))
        self.done += 1
        if self.average:
            self.keep_average()
        return self.last_loss

    def keep_average(self) -> None:
        """Fold this step's weights into the round's average; at the round's end the average becomes the
        weights (the next round starts from it)."""
        weights = [p.detach() for p in self.agent.inference.parameters()]
        with torch.no_grad():
            if self.averaged is None:
                self.averaged = [w.clone() for w in weights]
            else:
                for mean, w in zip(self.averaged, weights):
                    mean.lerp_(w, 1.0 - self.average)
            if self.round_ends():
                for w, mean in zip(weights, self.averaged):
                    w.copy_(mean)
                self.averaged = None
