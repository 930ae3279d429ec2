"""Policies in plain torch (no ROS): DrQ-v2 and SAC agents around one `InferencePolicy`."""

from __future__ import annotations

from torch import nn

from hilserl.policies.config import PANDA_JOINTS, POLICY_TYPES, PolicyConfig
from hilserl.policies.inference import InferencePolicy

__all__ = ["PANDA_JOINTS", "POLICY_TYPES", "PolicyConfig", "InferencePolicy", "build_agent"]


def build_agent(config: PolicyConfig, **hyper) -> nn.Module:
    """The learner's agent for `config.policy`; `hyper` overrides that algorithm's hyperparameters."""
    if config.policy == "drqv2":
        from hilserl.policies.drqv2 import DrQV2Agent, DrQV2Hyper
        return DrQV2Agent(config, DrQV2Hyper(**hyper))
    if config.policy == "sac":
        from hilserl.policies.sac import SACAgent, SACHyper
        return SACAgent(config, SACHyper(**hyper))
    raise ValueError(f"unknown policy {config.policy!r}")
