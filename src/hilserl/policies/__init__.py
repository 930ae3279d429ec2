"""Policies in plain torch (no ROS): DrQ-v2 and SAC agents around one `InferencePolicy`."""

from __future__ import annotations

import torch
from torch import nn

from hilserl.policies.config import PANDA_JOINTS, POLICY_TYPES, PolicyConfig
from hilserl.policies.device import resolve_device
from hilserl.policies.inference import InferencePolicy

__all__ = ["PANDA_JOINTS", "POLICY_TYPES", "PolicyConfig", "InferencePolicy", "build_agent", "resolve_device"]


def build_agent(config: PolicyConfig, device: torch.device | str = "cpu", **hyper) -> nn.Module:
    """The learner's agent for `config.policy` on `device` (see device.resolve_device); `hyper` overrides that
    algorithm's hyperparameters."""
    if config.policy == "drqv2":
        from hilserl.policies.drqv2 import DrQV2Agent, DrQV2Hyper
        return DrQV2Agent(config, DrQV2Hyper(**hyper), device=device)
    if config.policy == "sac":
        from hilserl.policies.sac import SACAgent, SACHyper
        return SACAgent(config, SACHyper(**hyper), device=device)
    raise ValueError(f"unknown policy {config.policy!r}")
