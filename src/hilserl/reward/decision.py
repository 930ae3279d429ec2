"""When a reward classifier's probabilities count as success: above a threshold for several steps in a row.

One frame above the threshold can be a glimpse (the cube passing the height it must reach, a reflection); a
success held for `confirm_steps` consecutive steps is what ends an episode. Any step at or below the threshold
starts the count again.

    decision = SuccessDecision(threshold=0.8, confirm_steps=2)
    decision.update(0.9)   # False: one step
    decision.update(0.95)  # True: two in a row
    decision.update(0.3)   # False: the count starts again
"""

from __future__ import annotations

import math


class SuccessDecision:
    def __init__(self, threshold: float, confirm_steps: int):
        if not 0.0 < threshold < 1.0 or not isinstance(confirm_steps, int) or confirm_steps < 1:
            raise ValueError(f"threshold must be in (0, 1) and confirm_steps an integer >= 1, got {threshold} "
                             f"and {confirm_steps}")
        self.threshold, self.confirm_steps = threshold, confirm_steps
        self.streak = 0  # consecutive steps above the threshold

    def update(self, probability: float) -> bool:
        """Take one step's p(success); True while the last `confirm_steps` were all above the threshold."""
        if not math.isfinite(probability):
            raise ValueError(f"a probability must be finite, got {probability}")
        self.streak = self.streak + 1 if probability > self.threshold else 0
        return self.confirmed

    @property
    def confirmed(self) -> bool:
        return self.streak >= self.confirm_steps

    def reset(self) -> None:
        """A new episode: nothing seen yet."""
        self.streak = 0
