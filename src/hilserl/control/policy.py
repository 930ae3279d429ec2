"""The policy the actor runs, in plain Python + torch: the weights it accepted, its frame stack, its actions.

The actor node imports this module only after its parameters are checked, so a bad value ends the node
before torch loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from hilserl.policies.config import PolicyConfig
from hilserl.policies.observation import FrameStacker, joint_state_vector
from hilserl.weights.checkpoint import read_config_file
from hilserl.weights.loader import Offer, WeightsReceiver, module_digests


def expected_config(path: str, problem_of: Callable[[PolicyConfig], str | None]
                    ) -> tuple[PolicyConfig | None, str | None]:
    """(the config `policy_config` names, why it cannot drive this arm); ('', ...) gives (None, None):
    the first weights decide."""
    if not path:
        return None, None
    config, _ = read_config_file(path)
    return config, problem_of(config)


class ActorPolicy:
    """Holds the accepted weights (weights/loader.py WeightsReceiver), stacks frames for them and samples
    actions. `on_new_config(config)` runs when the weights bring a config: the arm follows its action space."""

    def __init__(self, expected: PolicyConfig | None, compatible: Callable[[PolicyConfig], str | None],
                 device: torch.device | None, seed: int, on_new_config: Callable[[PolicyConfig], None]):
        self.receiver = WeightsReceiver(expected, compatible=compatible, device=device)
        self.generator = torch.Generator().manual_seed(seed)
        self.on_new_config = on_new_config
        self.stacker: FrameStacker | None = None

    @property
    def ready(self) -> bool:
        return self.receiver.ready

    @property
    def config_fingerprint(self) -> str:
        return self.receiver.meta.config_fingerprint

    def offer(self, payload: bytes | bytearray | memoryview) -> tuple[Offer, dict | None]:
        """Offer one weights payload; when it loads, also what `~/weights_loaded` reports about it."""
        started = time.perf_counter()
        offer = self.receiver.offer(payload)
        if offer.status != "loaded":
            return offer, None
        meta = self.receiver.meta
        if self.stacker is None or self.stacker.config != meta.config:
            self.stacker = FrameStacker(meta.config)
            self.on_new_config(meta.config)
        load_ms = round((time.perf_counter() - started) * 1e3, 2)  # until the new weights act
        self.receiver.prepare_next()
        return offer, {"weights_version": meta.weights_version, "run_id": meta.run_id,
                       "learner_step": meta.learner_step, "digest": self.receiver.loaded_digest,
                       "config_fingerprint": meta.config_fingerprint,
                       "module_digests": module_digests(self.receiver.policy), "load_ms": load_ms}

    def reset_stack(self) -> None:
        """Start a fresh frame stack (a gap in the stream, or a new episode)."""
        if self.stacker is not None:
            self.stacker.reset()

    def stack(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Push one image per camera; returns (the stacked frames the policy sees, the newest frames alone)."""
        stacked = self.stacker.push(images)
        return stacked, stacked[-3 * self.receiver.meta.config.num_cameras:]

    def act(self, stacked: np.ndarray, q: np.ndarray, deterministic: bool) -> np.ndarray:
        meta = self.receiver.meta
        return self.receiver.policy.act(stacked, joint_state_vector(meta.config, q), deterministic=deterministic,
                                        step=meta.learner_step, generator=self.generator)
