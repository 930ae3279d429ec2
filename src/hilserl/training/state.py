"""The learner's training state on disk, so a crash does not cost the run.

    STATE_DIR/agent.safetensors   every agent tensor (networks, target critic, temperature)
    STATE_DIR/optim.safetensors   optimiser tensors;  optim.json: their structure and hyperparameters
    STATE_DIR/learner.json        counters: run id, weights version, learner step, config fingerprint
    STATE_DIR/replay/             the replay buffers (written by their own save())

A new state is written beside the old one and swapped in by renames, so a kill at any moment leaves
either the previous or the new state whole. No pickle anywhere.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hilserl.weights.checkpoint import INFERENCE_PREFIX, agent_tensors


def flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state as (tensors, JSON structure); scalars that are not tensors stay in the JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param_id, entries in state["state"].items():
        kept = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{param_id}.{key}"] = value.detach().cpu().contiguous()
                kept[key] = {"tensor": f"{name}.{param_id}.{key}"}
            else:
                kept[key] = {"value": value}
        structure["state"][str(param_id)] = kept
    return tensors, structure


def unflatten_optimizer(structure: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {int(pid): {key: tensors[v["tensor"]] if "tensor" in v else v["value"] for key, v in entries.items()}
             for pid, entries in structure["state"].items()}
    return {"state": state, "param_groups": structure["param_groups"]}


def save_training_state(state_dir: Path, agent: nn.Module, counters: dict[str, Any],
                        save_extra: Callable[[Path], None] | None = None) -> Path:
    """Write the whole training state; `save_extra(dir)` adds e.g. the replay buffers."""
    state_dir = Path(state_dir)
    new, old = state_dir.with_name(state_dir.name + ".new"), state_dir.with_name(state_dir.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in agent_tensors(agent).items()}, str(new / "agent.safetensors"))
    optim_tensors, structures = {}, {}
    for name, optimizer in agent.optimizers().items():
        tensors, structures[name] = flatten_optimizer(name, optimizer)
        optim_tensors.update(tensors)
    save_file(optim_tensors, str(new / "optim.safetensors"))
    (new / "optim.json").write_text(json.dumps(structures))
    if save_extra is not None:
        save_extra(new)
    (new / "learner.json").write_text(json.dumps(counters | {"config_fingerprint": agent.config.fingerprint()}, indent=2))
    # learner.json is written last: its presence marks a complete state.
    shutil.rmtree(old, ignore_errors=True)
    if state_dir.exists():
        state_dir.rename(old)
    new.rename(state_dir)
    shutil.rmtree(old, ignore_errors=True)
    return state_dir


def find_training_state(state_dir: Path) -> Path | None:
    """The newest complete state: the current one, or the previous one if a swap was cut short."""
    state_dir = Path(state_dir)
    for candidate in (state_dir, state_dir.with_name(state_dir.name + ".old")):
        if (candidate / "learner.json").is_file():
            return candidate
    return None


def load_training_state(state_dir: Path, agent: nn.Module) -> dict[str, Any]:
    """Restore networks and optimisers into `agent`; returns the counters."""
    found = find_training_state(state_dir)
    if found is None:
        raise FileNotFoundError(f"no complete training state under {state_dir}")
    counters = json.loads((found / "learner.json").read_text())
    if counters.get("config_fingerprint") != agent.config.fingerprint():
        raise ValueError(f"training state in {found} is for config {counters.get('config_fingerprint')}, the learner "
                         f"runs {agent.config.fingerprint()}; point run_dir elsewhere to start a new run")
    tensors = load_file(str(found / "agent.safetensors"))
    inference_names = set(agent.inference.state_dict())
    agent.load_state_dict({(INFERENCE_PREFIX + k if k in inference_names else k): v for k, v in tensors.items()},
                          strict=True)
    optim_tensors = load_file(str(found / "optim.safetensors"))
    structures = json.loads((found / "optim.json").read_text())
    for name, optimizer in agent.optimizers().items():
        optimizer.load_state_dict(unflatten_optimizer(structures[name], optim_tensors))
    counters["state_dir"] = str(found)
    return counters



def snapshot_agent(agent: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every agent tensor (networks, targets, temperature), for a later `restore_agent`."""
    return {k: v.detach().to("cpu", copy=True) for k, v in agent.state_dict().items()}


def restore_agent(agent: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Put a snapshot back and forget the optimisers' moments: they were accumulated on the way to the state
    being abandoned and would push the networks the same way again."""
    agent.load_state_dict(snapshot, strict=True)
    for optimizer in agent.optimizers().values():
        optimizer.state.clear()
