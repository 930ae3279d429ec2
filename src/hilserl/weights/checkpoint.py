"""Checkpoints as a directory: `config.json` + `model.safetensors`. No pickle.

`model.safetensors` holds the inference state under its wire names (`encoder.*`, `actor.*`,
`state_norm.*`, `grasp_critic.*`) and, for a learner checkpoint, the training-only tensors (`critic.*`,
`critic_target.*`, `grasp_critic_target.*`, `log_alpha`). An actor or `infer` reads only the inference part.

Tensors are written from CPU copies and always read onto the CPU first, then moved to the device asked
for: a checkpoint written on a GPU loads on a CPU-only machine and back. `config.json` of a fresh
checkpoint (`init-checkpoint`) carries `uniform_exploration_steps`; a trained one (pretrain, the learner)
does not, so only a fresh policy ever acts uniformly at random.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy
from hilserl.weights.codec import EXPLORATION_KEY, WeightsError
from hilserl.weights.loader import build_strict, check_state_matches

CHECKPOINT_FORMAT = "hilserl-checkpoint/1"
CONFIG_FILE, MODEL_FILE = "config.json", "model.safetensors"
INFERENCE_PREFIX = "inference."


def agent_tensors(agent: nn.Module) -> dict[str, torch.Tensor]:
    """An agent's state under checkpoint names: the inference part loses its `inference.` prefix."""
    return {(k[len(INFERENCE_PREFIX):] if k.startswith(INFERENCE_PREFIX) else k): v
            for k, v in agent.state_dict().items()}


def save_checkpoint(module: nn.Module, config: PolicyConfig, out_dir: str | Path, *, step: int = 0,
                    storage_dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write an agent (or a bare InferencePolicy) as a checkpoint directory, atomically per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = module.state_dict() if isinstance(module, InferencePolicy) else agent_tensors(module)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if storage_dtype is not None:
        tensors = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    doc = {"format": CHECKPOINT_FORMAT, "policy": config.to_dict(), "config_fingerprint": config.fingerprint(),
           "step": step, "storage_dtype": str(storage_dtype or torch.float32).removeprefix("torch.")}
    doc.update(extra or {})
    return write_checkpoint_dir(out, tensors, doc, CHECKPOINT_FORMAT)


def write_checkpoint_dir(out: Path, tensors: dict[str, torch.Tensor], doc: dict[str, Any], file_format: str) -> Path:
    """`out/model.safetensors` then `out/config.json`, each written beside and renamed over its target, so a
    reader sees either the old file or the whole new one."""
    tmp = out / (MODEL_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": file_format})
    tmp.replace(out / MODEL_FILE)
    (out / (CONFIG_FILE + ".tmp")).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (out / (CONFIG_FILE + ".tmp")).replace(out / CONFIG_FILE)
    return out


def read_config_file(path: str | Path) -> tuple[PolicyConfig, dict[str, Any]]:
    """A checkpoint's config.json (or a bare PolicyConfig JSON); returns (config, whole document)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"no policy config at {path}: expected a checkpoint directory with {CONFIG_FILE}")
    try:
        doc = json.loads(path.read_text())
        config = PolicyConfig.from_dict(doc["policy"] if "policy" in doc and isinstance(doc["policy"], dict) else doc)
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise WeightsError(f"{path} is not a valid hilserl policy config: {err}") from err
    return config, doc


def uniform_exploration_steps(doc: dict[str, Any]) -> int:
    """How many learner steps a checkpoint's policy explores uniformly: > 0 only for a fresh one."""
    steps = doc.get(EXPLORATION_KEY, 0)
    if type(steps) is not int or steps < 0:
        raise WeightsError(f"checkpoint config {EXPLORATION_KEY} must be a non-negative integer, got {steps!r}")
    return steps


def load_checkpoint(ckpt_dir: str | Path) -> tuple[PolicyConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, all tensors as float32 where floating, config document)."""
    ckpt = Path(ckpt_dir)
    config, doc = read_config_file(ckpt)
    model = ckpt / MODEL_FILE
    if not model.is_file():
        raise WeightsError(f"checkpoint {ckpt} has no {MODEL_FILE}; write one with `python -m hilserl init-checkpoint` "
                           "or `python -m hilserl pretrain`")
    try:
        tensors = load_file(str(model))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{model} is not a readable safetensors file ({err}); checkpoints must be safetensors, "
                           "never pickle") from err
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return config, tensors, doc


def split_inference(tensors: dict[str, torch.Tensor], config: PolicyConfig) -> tuple[dict, dict]:
    with torch.device("meta"):
        names = set(InferencePolicy(config).state_dict())
    return ({k: v for k, v in tensors.items() if k in names}, {k: v for k, v in tensors.items() if k not in names})


def load_inference_policy(ckpt_dir: str | Path, device: torch.device | str = "cpu") -> InferencePolicy:
    config, tensors, doc = load_checkpoint(ckpt_dir)
    inference, _ = split_inference(tensors, config)
    policy = build_strict(config, inference, f"checkpoint {ckpt_dir}", torch.device(device))
    policy.uniform_exploration_steps = uniform_exploration_steps(doc)
    return policy


def load_agent_weights(agent: nn.Module, ckpt_dir: str | Path) -> list[str]:
    """Load a checkpoint into a learner agent: the inference state strictly, training-only tensors strictly
    when the checkpoint has them. Returns notes on what was freshly initialised."""
    config, tensors, doc = load_checkpoint(ckpt_dir)
    if config.fingerprint() != agent.config.fingerprint():
        raise WeightsError(f"checkpoint {ckpt_dir} has config {config.fingerprint()}, the agent {agent.config.fingerprint()}")
    inference, training = split_inference(tensors, config)
    check_state_matches(agent.inference.state_dict(), inference, f"checkpoint {ckpt_dir}")
    own_training = {k: v for k, v in agent_tensors(agent).items() if k not in inference}
    notes = []
    if training:
        check_state_matches(own_training, training, f"checkpoint {ckpt_dir} (training tensors)")
    else:
        notes.append("checkpoint holds the inference state only: critic initialised fresh")
        training = own_training
    full = {INFERENCE_PREFIX + k: v for k, v in inference.items()} | training
    agent.load_state_dict(full, strict=True)  # copies onto the agent's device
    agent.inference.uniform_exploration_steps = uniform_exploration_steps(doc)
    if notes:  # fresh targets start equal to their networks
        agent.critic_target.load_state_dict(agent.critic.state_dict())
        if agent.grasp_critic_target is not None:
            agent.grasp_critic_target.load_state_dict(agent.inference.grasp_critic.state_dict())
    return notes
