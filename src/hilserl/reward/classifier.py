"""The reward classifier: p(success | camera frames), a policy-style conv encoder and a small head.

The encoder is the policy's (`hilserl.policies.inference.Encoder`) on one frame per camera (a stack of 1), so
it can start from a pretrained policy's encoder: the first conv's weights are summed over the policy's stacked
frames, which is exactly the policy's encoder looking at a stack of copies of one frame (the conv is linear in
its input). The head is Linear + LayerNorm + Tanh (the policy's trunk) and a one-hidden-layer MLP to a logit.

A classifier checkpoint is a directory like a policy checkpoint: `config.json` (format, the classifier config,
its operating `threshold`, training notes) + `model.safetensors` (`encoder.*`, `head.*`). The threshold is the
p(success) above which a frame counts as success, chosen when it was trained (hilserl.reward.training); a
checkpoint without one is used at FALLBACK_THRESHOLD. It is loaded strictly: every tensor present with
its shape and dtype, nothing extra; its digest (hilserl.weights.codec.tensor_digest) names what was loaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import Encoder, init_weights
from hilserl.weights.checkpoint import CONFIG_FILE, MODEL_FILE, load_checkpoint, write_checkpoint_dir
from hilserl.weights.codec import WeightsError, tensor_digest
from hilserl.weights.loader import check_state_matches

CLASSIFIER_FORMAT = "hilserl-reward-classifier/1"
FIRST_CONV = "convnet.0.weight"  # in the encoder's own state
FALLBACK_THRESHOLD = 0.8  # the threshold of a classifier whose config.json names none


@dataclass(frozen=True)
class ClassifierConfig:
    image_size: int = 84
    num_cameras: int = 1
    encoder_channels: int = 32
    feature_dim: int = 50
    hidden_dim: int = 256

    def __post_init__(self) -> None:
        self.encoder_config()  # the policy config's checks: sizes positive, image at least 16 px

    def encoder_config(self) -> PolicyConfig:
        """The policy config whose encoder this classifier uses: one frame per camera."""
        return PolicyConfig(image_size=self.image_size, frame_stack=1, num_cameras=self.num_cameras,
                            encoder_channels=self.encoder_channels, feature_dim=self.feature_dim,
                            hidden_dim=self.hidden_dim)

    @classmethod
    def from_dict(cls, data: Any) -> ClassifierConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ValueError(f"a classifier config is a JSON object with keys {sorted(known)}, got {data!r}")
        return cls(**data)


class RewardClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_config())
        self.head = nn.Sequential(
            nn.Linear(self.encoder.repr_dim, config.feature_dim), nn.LayerNorm(config.feature_dim), nn.Tanh(),
            nn.Linear(config.feature_dim, config.hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, 1),
        )
        self.head.apply(init_weights)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, 3*cams, S, S] -> success logits [B]."""
        return self.head(self.encoder(pixels)).squeeze(-1)

    @torch.no_grad()
    def probability(self, frames: np.ndarray) -> np.ndarray:
        """p(success) for uint8 frames [3*cams, S, S] (a float) or [B, 3*cams, S, S] (an array of B)."""
        expected = (3 * self.config.num_cameras, self.config.image_size, self.config.image_size)
        if frames.dtype != np.uint8 or tuple(frames.shape[-3:]) != expected or frames.ndim not in (3, 4):
            raise ValueError(f"the classifier takes uint8 frames {list(expected)}, got {frames.dtype} {list(frames.shape)}")
        device = next(self.parameters()).device
        batch = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        p = torch.sigmoid(self(batch[None] if frames.ndim == 3 else batch).float()).cpu().numpy()
        return p[0] if frames.ndim == 3 else p

    def digest(self) -> str:
        return tensor_digest(self.state_dict())


def fold_policy_encoder(checkpoint: str | Path, config: ClassifierConfig) -> dict[str, torch.Tensor]:
    """A policy checkpoint's encoder state as this classifier's encoder state (one frame per camera): the first
    conv summed over the stacked frames, on the classifier's cameras (the first of the policy's, as the actor
    hands them over). Raises WeightsError when the policy has fewer cameras or another encoder width."""
    policy, tensors, _ = load_checkpoint(checkpoint)
    if policy.num_cameras < config.num_cameras or policy.encoder_channels != config.encoder_channels:
        raise WeightsError(f"policy checkpoint {checkpoint} has {policy.num_cameras} camera(s) and "
                           f"{policy.encoder_channels} encoder channels; the classifier needs at least "
                           f"{config.num_cameras} and exactly {config.encoder_channels}")
    encoder = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
    first = encoder[FIRST_CONV]  # [ch, 3 * frame_stack * cams, 3, 3], oldest frame first
    per_frame = first.view(first.shape[0], policy.frame_stack, 3 * policy.num_cameras, *first.shape[2:])
    encoder[FIRST_CONV] = per_frame[:, :, :3 * config.num_cameras].sum(1).contiguous()
    return encoder


def save_classifier(model: RewardClassifier, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `config.json` + `model.safetensors` (CPU float32 copies), each file replaced atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    doc = {"format": CLASSIFIER_FORMAT, "classifier": dataclasses.asdict(model.config),
           "digest": tensor_digest(tensors)} | (extra or {})
    return write_checkpoint_dir(out, tensors, doc, CLASSIFIER_FORMAT)


def load_classifier(ckpt_dir: str | Path, device: torch.device | str = "cpu") -> tuple[RewardClassifier, dict]:
    """(the classifier in eval mode, its config.json); WeightsError when it is not exactly a classifier's state."""
    ckpt = Path(ckpt_dir)
    try:
        doc = json.loads((ckpt / CONFIG_FILE).read_text())
        if doc.get("format") != CLASSIFIER_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {CLASSIFIER_FORMAT!r}")
        config = ClassifierConfig.from_dict(doc.get("classifier"))
        stored_threshold(doc)  # refused here, with the rest of config.json, when it is not a number in (0, 1)
    except (OSError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as err:
        raise WeightsError(f"{ckpt} is not a reward classifier checkpoint: {err}") from err
    try:
        tensors = load_file(str(ckpt / MODEL_FILE))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{ckpt / MODEL_FILE} is not a readable safetensors file: {err}") from err
    model = RewardClassifier(config)
    check_state_matches(model.state_dict(), tensors, f"reward classifier {ckpt}")
    model.load_state_dict(tensors, strict=True)
    return model.to(device).requires_grad_(False).eval(), doc


def stored_threshold(doc: dict) -> float:
    """The operating threshold in a classifier's config.json (FALLBACK_THRESHOLD when it names none); ValueError
    when it is not a number in (0, 1)."""
    threshold = doc.get("threshold", FALLBACK_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold!r}, expected a number in (0, 1)")
    return float(threshold)
