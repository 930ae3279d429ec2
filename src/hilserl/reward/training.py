"""Training and scoring a reward classifier on labelled frames (reward/frames.py), plain torch.

  * held-out split by episode, stratified: episodes that reach success and episodes that do not are held out
    in the same proportion, so neighbouring frames of one episode never sit on both sides;
  * class balancing: each batch is drawn with replacement so that success and non-success frames are equally
    likely, however rare successes are in the recording;
  * DrQ's random shift (hilserl.policies.augment.random_shift) on every training batch;
  * binary cross-entropy on the logit;
  * the operating threshold chosen on the held-out episodes: the lowest p(success) cut whose false positive
    rate there is at most `TARGET_FALSE_POSITIVE_RATE` (a false positive ends an episode early with reward 1,
    a missed frame only delays a success), stored with the classifier.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hilserl.policies.augment import random_shift
from hilserl.reward.classifier import FALLBACK_THRESHOLD, ClassifierConfig, RewardClassifier
from hilserl.reward.frames import FrameSet

# Hyperparameters
EPOCHS = 20
BATCH_SIZE = 64
LR = 3e-4
AUGMENT_PAD = 4  # pixels of random shift, as DrQ-v2 at 84 px
HELD_OUT_FRACTION = 0.2  # of the episodes, from each of the two strata
# The operating threshold: the lowest cut (at least MIN_THRESHOLD) with a false positive rate at most this on the
# held-out episodes. Half the 1% a classifier is expected to meet, so frames from other episodes have room.
TARGET_FALSE_POSITIVE_RATE = 0.005
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 0.999  # a threshold must stay below 1 (hilserl.reward.decision)
NO_HELD_OUT_THRESHOLD = FALLBACK_THRESHOLD  # stored when there are no held-out episodes to choose one on
EVAL_BATCH = 256


@dataclass
class Scores:
    accuracy: float
    false_positive_rate: float  # of the frames that are not success, the share called success
    false_negative_rate: float  # of the success frames, the share missed
    frames: int

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "false_positive_rate": self.false_positive_rate,
                "false_negative_rate": self.false_negative_rate, "frames": self.frames}


def split_by_episode(data: FrameSet, held_out_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows). At least one episode of each stratum is held out when the stratum has
    two or more, so the held-out frames contain successes whenever more than one episode does."""
    rng = np.random.default_rng(seed)
    episodes = np.unique(data.episode)
    reached = {int(e) for e in np.unique(data.episode[data.success])}
    held: list[int] = []
    for stratum in ([e for e in episodes if e in reached], [e for e in episodes if e not in reached]):
        if len(stratum) >= 2:
            count = min(len(stratum) - 1, max(1, round(held_out_fraction * len(stratum))))
            held += [int(e) for e in rng.choice(stratum, size=count, replace=False)]
    held_rows = np.isin(data.episode, held)
    return np.flatnonzero(~held_rows), np.flatnonzero(held_rows)


def balanced_batches(labels: np.ndarray, batch_size: int, batches: int, rng: np.random.Generator):
    """Row indices per batch, drawn with replacement, each class with probability 1/2 (one class: uniform)."""
    counts = np.bincount(labels.astype(np.int64), minlength=2)
    weights = np.where(labels, 0.5 / max(counts[1], 1), 0.5 / max(counts[0], 1))
    weights /= weights.sum()
    for _ in range(batches):
        yield rng.choice(len(labels), size=batch_size, p=weights)


def train_classifier(data: FrameSet, rows: np.ndarray, *, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
                     lr: float = LR, device: torch.device | str = "cpu", seed: int = 0,
                     encoder_state: dict[str, torch.Tensor] | None = None, encoder_channels: int = 32,
                     progress: bool = True, log=lambda line: print(line, file=sys.stderr, flush=True)
                     ) -> RewardClassifier:
    """A classifier trained on `data`'s `rows`; an epoch is as many frames as there are rows.
    `encoder_state`: a starting encoder (reward.classifier.fold_policy_encoder)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = ClassifierConfig(image_size=data.image_size, num_cameras=data.num_cameras,
                              encoder_channels=encoder_channels)
    model = RewardClassifier(config)
    if encoder_state is not None:
        model.encoder.load_state_dict(encoder_state, strict=True)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    frames = torch.from_numpy(data.frames[rows])  # uint8, shifted batch by batch
    labels = torch.from_numpy(data.success[rows].astype(np.float32))
    per_epoch = max(1, len(rows) // batch_size)
    bar = tqdm(total=epochs * per_epoch, desc="reward classifier", unit="batch", file=sys.stderr, disable=not progress)
    for epoch in range(epochs):
        losses = []
        for index in balanced_batches(data.success[rows], batch_size, per_epoch, rng):
            pixels = random_shift(frames[index].to(device), AUGMENT_PAD)
            loss = F.binary_cross_entropy_with_logits(model(pixels), labels[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
        log(f"reward classifier: epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
    bar.close()
    return model.eval()


def probabilities(model: RewardClassifier, frames: np.ndarray) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = np.concatenate([model.probability(frames[i:i + EVAL_BATCH]) for i in range(0, len(frames), EVAL_BATCH)]
                         ) if len(frames) else np.zeros(0, dtype=np.float32)
    model.train(was_training)
    return out


def choose_threshold(probability: np.ndarray, success: np.ndarray,
                     target_false_positive_rate: float = TARGET_FALSE_POSITIVE_RATE) -> float:
    """The lowest threshold in [MIN_THRESHOLD, MAX_THRESHOLD] at which `p > threshold` calls at most
    `target_false_positive_rate` of the frames that are not success a success (MAX_THRESHOLD when none is
    that strict). Lowest, so that as few success frames as possible are missed."""
    negatives = np.sort(probability[~success])[::-1]  # the most confident false calls first
    allowed = int(np.floor(target_false_positive_rate * len(negatives)))  # false calls that stay under the rate
    cut = float(negatives[allowed]) if allowed < len(negatives) else 0.0  # p > cut leaves out this one
    return float(min(max(cut, MIN_THRESHOLD), MAX_THRESHOLD))


def threshold_rule(target_false_positive_rate: float, where: str) -> str:
    """How choose_threshold chose, in words, for the classifier's config.json: `where` names the frames."""
    return (f"the lowest p cut in [{MIN_THRESHOLD}, {MAX_THRESHOLD}] with a false positive rate <= "
            f"{target_false_positive_rate} on {where}")


def score(model: RewardClassifier, data: FrameSet, threshold: float) -> Scores:
    """Frame-by-frame scores of p(success) > threshold against the labels."""
    return score_probabilities(probabilities(model, data.frames), data.success, threshold)


def score_probabilities(probability: np.ndarray, truth: np.ndarray, threshold: float) -> Scores:
    called = probability > threshold
    negatives, positives = int((~truth).sum()), int(truth.sum())
    return Scores(accuracy=float((called == truth).mean()) if len(truth) else 0.0,
                  false_positive_rate=float((called & ~truth).sum() / negatives) if negatives else 0.0,
                  false_negative_rate=float((~called & truth).sum() / positives) if positives else 0.0,
                  frames=len(truth))
