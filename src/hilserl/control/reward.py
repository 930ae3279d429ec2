"""The actor's learned reward, in plain Python + torch: a success classifier watching the cameras.

Each observation of an open episode is scored; when p(success) > threshold for `confirm_steps` consecutive
steps (hilserl.reward.decision), the actor labels the episode a success with reward 1, as a person's success
button would (control/rules.py). What the classifier sees is the newest frame of each of its cameras (the first
of the actor's) at its own image size: the policy's frames when the sizes agree, the cameras' images resized
otherwise.

In the sim, whose step reports carry its own success, every scored step is also compared with it: the
agreement is the share of steps where the classifier's decision equals the sim's success.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hilserl.policies.observation import preprocess_frame
from hilserl.reward.classifier import RewardClassifier, load_classifier, stored_threshold
from hilserl.reward.decision import SuccessDecision

LABEL_SOURCE = "reward_classifier"  # the episode summary's `label_source` when the classifier ended it


class ClassifierReward:
    def __init__(self, classifier: RewardClassifier, threshold: float, confirm_steps: int, path: str = ""):
        self.classifier, self.path = classifier, path
        self.decision = SuccessDecision(threshold, confirm_steps)
        self.digest = classifier.digest()  # of the tensors loaded into the module, not of the file
        self.probability: float | None = None
        self.decided = False
        self.agreed = self.compared = 0  # steps where the sim's success was known, and those the decision matched
        self.episodes_ended = 0

    @classmethod
    def load(cls, path: str, device: torch.device, threshold: float | None, confirm_steps: int) -> ClassifierReward:
        """Strict: a checkpoint that is not exactly a classifier's state raises WeightsError. `threshold` None
        (or 0): the one stored with the classifier, chosen when it was trained."""
        classifier, doc = load_classifier(Path(path).expanduser(), device)
        return cls(classifier, threshold or stored_threshold(doc), confirm_steps, path)

    @property
    def num_cameras(self) -> int:
        return self.classifier.config.num_cameras

    def frames(self, images: list[np.ndarray], newest: np.ndarray) -> np.ndarray:
        """The classifier's input: the newest frame of each of its cameras, the first `num_cameras` of the
        actor's (a classifier may watch fewer cameras than the policy does)."""
        size, cameras = self.classifier.config.image_size, self.num_cameras
        if newest.shape[-1] == size:
            return newest[:3 * cameras]
        return np.concatenate([preprocess_frame(image, size) for image in images[:cameras]])

    def judge(self, images: list[np.ndarray], newest: np.ndarray, sim_success: bool | None) -> bool:
        """Score one observation; True when success is confirmed. `sim_success`: the sim's own, if known."""
        self.probability = float(self.classifier.probability(self.frames(images, newest)))
        self.decided = self.decision.update(self.probability)
        if sim_success is not None:
            self.compared += 1
            self.agreed += int(self.decided == bool(sim_success))
        return self.decided

    def ended_episode(self) -> None:
        self.episodes_ended += 1

    def reset(self) -> None:
        """An episode ended (by whatever): the next one starts with no steps seen."""
        self.decision.reset()
        self.decided = False

    def values(self) -> dict[str, object]:
        """What /diagnostics shows under `reward_classifier/`."""
        return {"reward_classifier/checkpoint": self.path, "reward_classifier/digest": self.digest,
                "reward_classifier/probability": "" if self.probability is None else round(self.probability, 4),
                "reward_classifier/decision": self.decided,
                "reward_classifier/threshold": self.decision.threshold,
                "reward_classifier/confirm_steps": self.decision.confirm_steps,
                "reward_classifier/streak": self.decision.streak,
                "reward_classifier/episodes_ended": self.episodes_ended,
                "reward_classifier/sim_steps_compared": self.compared,
                "reward_classifier/sim_agreement": round(self.agreed / self.compared, 4) if self.compared else ""}
