"""Strict, atomic loading of a whole inference state; the actor's only way to get weights.

A new `InferencePolicy` is built on the meta device (no memory), the decoded tensors are assigned to it
(they view the message buffer: no copy; on a GPU actor, one copy to the device), the digest is recomputed
from the *module's* tensors, and only then does it replace the policy in use. A payload that fails any
check leaves the policy in use untouched. Building the empty policy costs a few milliseconds of Python, so
the receiver builds the next one after a load (`prepare_next`), off the path from publish to acting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy
from hilserl.weights.codec import WeightsError, WeightsMeta, decode_weights, tensor_digest


def check_state_matches(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise WeightsError unless `given` has exactly the names, shapes and dtypes of `expected`."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    problems = []
    absent_modules = sorted({name.split(".", 1)[0] for name in expected} - {name.split(".", 1)[0] for name in given})
    if absent_modules:  # e.g. a head without its encoder, or a discrete gripper's policy without its grasp critic
        problems.append(f"missing whole module(s) {absent_modules}")
    if missing:
        problems.append(f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    for name in sorted(set(expected) & set(given)):
        e, g = expected[name], given[name]
        if tuple(e.shape) != tuple(g.shape):
            problems.append(f"{name}: shape {tuple(g.shape)}, expected {tuple(e.shape)}")
        elif e.dtype != g.dtype:
            problems.append(f"{name}: dtype {g.dtype}, expected {e.dtype}")
    if problems:
        raise WeightsError(f"{what} does not match the policy's inference state: " + "; ".join(problems[:8]))


def empty_policy(config: PolicyConfig) -> InferencePolicy:
    """An InferencePolicy on the meta device: its structure without memory, for `build_strict` to fill."""
    with torch.device("meta"):
        return InferencePolicy(config)


def build_strict(config: PolicyConfig, tensors: Mapping[str, torch.Tensor], what: str,
                 device: torch.device | None = None, empty: InferencePolicy | None = None) -> InferencePolicy:
    """An InferencePolicy whose every tensor is taken from `tensors` (no random init survives), on `device`
    (default: where the tensors are). `empty`: an unused `empty_policy(config)` to fill instead of a new one."""
    policy = empty if empty is not None else empty_policy(config)
    check_state_matches(policy.state_dict(), tensors, what)
    policy.load_state_dict(dict(tensors), strict=True, assign=True)
    if device is not None:
        policy.to(device)
    policy.requires_grad_(False).eval()
    return policy


def inference_digest(policy: InferencePolicy) -> str:
    return tensor_digest(policy.state_dict())


def module_digests(policy: InferencePolicy) -> dict[str, str]:
    """Digest per top-level module (encoder, actor, state_norm): shows which part differs, if any."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in policy.state_dict().items():
        groups.setdefault(name.split(".", 1)[0], {})[name] = tensor
    return {module: tensor_digest(tensors) for module, tensors in sorted(groups.items())}


@dataclass(frozen=True)
class Offer:
    status: str  # "loaded" | "ignored" | "rejected"
    reason: str
    meta: WeightsMeta | None = None


class WeightsReceiver:
    """Holds the actor's policy. `offer()` each payload; the policy changes only on "loaded"."""

    def __init__(self, expected_config: PolicyConfig | None = None,
                 compatible: Callable[[PolicyConfig], str | None] | None = None, device: torch.device | None = None):
        """`compatible(config)` returns why this consumer cannot use a config (e.g. action count != joints);
        `device`: where the loaded policy runs (default the CPU)."""
        self.device = device
        self.expected_config = expected_config
        self.compatible = compatible
        self.policy: InferencePolicy | None = None
        self.meta: WeightsMeta | None = None
        self.loaded_digest: str | None = None
        self._empty: tuple[str, InferencePolicy] | None = None  # (config fingerprint, an unused empty_policy)

    def prepare_next(self) -> None:
        """Build the empty policy the next version will be loaded into. Call it when idle, after a load."""
        config = self.meta.config if self.meta else self.expected_config
        if config is not None and (self._empty is None or self._empty[0] != config.fingerprint()):
            self._empty = (config.fingerprint(), empty_policy(config))

    def _take_empty(self, config: PolicyConfig) -> InferencePolicy | None:
        empty, self._empty = self._empty, None  # used once: a filled policy is never refilled
        return empty[1] if empty is not None and empty[0] == config.fingerprint() else None

    @property
    def ready(self) -> bool:
        return self.policy is not None

    def offer(self, payload: bytes | bytearray | memoryview) -> Offer:
        try:
            meta, tensors = decode_weights(payload, verify_digest=False)  # verified once, on the module below
        except WeightsError as err:
            return Offer("rejected", str(err))
        expected = self.expected_config or (self.meta.config if self.meta else None)
        if expected is not None:
            if meta.policy != expected.policy:
                return Offer("rejected", f"weights are for policy {meta.policy!r}, this actor runs {expected.policy!r}; "
                                         "start the actor with the learner's policy config", meta)
            if meta.config_fingerprint != expected.fingerprint():
                return Offer("rejected", f"weights config fingerprint {meta.config_fingerprint} differs from this "
                                         f"actor's {expected.fingerprint()}; restart the actor with the learner's "
                                         "config (or without policy_config to take it from the learner)", meta)
        problem = self.compatible(meta.config) if self.compatible else None
        if problem:
            return Offer("rejected", f"weights v{meta.weights_version} cannot drive this actor: {problem}", meta)
        if self.meta is not None and meta.run_id == self.meta.run_id and meta.weights_version <= self.meta.weights_version:
            return Offer("ignored", f"version {meta.weights_version} is not newer than loaded "
                                    f"{self.meta.weights_version} of run {meta.run_id}", meta)
        try:
            candidate = build_strict(meta.config, tensors, f"weights v{meta.weights_version}", self.device,
                                     empty=self._take_empty(meta.config))
        except WeightsError as err:
            return Offer("rejected", str(err), meta)
        digest = inference_digest(candidate)
        if digest != meta.digest:
            return Offer("rejected", f"digest of loaded tensors {digest[:16]} != digest sent {meta.digest[:16]}: "
                                     "payload corrupted; keeping the previous weights", meta)
        candidate.uniform_exploration_steps = meta.uniform_exploration_steps
        self.policy, self.meta, self.loaded_digest = candidate, meta, digest
        return Offer("loaded", f"loaded weights v{meta.weights_version} (run {meta.run_id}, step "
                               f"{meta.learner_step}, digest {digest[:16]})", meta)
