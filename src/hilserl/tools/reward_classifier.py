"""`python -m hilserl reward-classifier train|eval|threshold`: a success classifier on labelled camera frames.

  train --frames DIR --out DIR [--init-encoder CHECKPOINT] [--epochs N] [--device D] ...
        trains on the frames of DIR (hilserl.reward.frames) with a held-out split by episode, chooses the
        operating threshold on the held-out episodes (the lowest p(success) cut with a false positive rate at
        most --target-fpr there), then writes the classifier checkpoint (config.json + model.safetensors) with
        the threshold and the held-out scores in config.json, and prints them as one JSON line.
        --init-encoder starts from a policy checkpoint's encoder.
  eval  --checkpoint DIR --frames DIR [--threshold P]
        scores every frame of DIR at the classifier's own threshold (or P) and prints one JSON line:
        {"accuracy": ..., "false_positive_rate": ..., "false_negative_rate": ..., "frames": N}
  threshold --checkpoint DIR --frames DIR [--target-fpr F] [--episodes held-out|all]
        chooses the operating threshold again, as train does, without training again: on the episodes the
        training run held out (DIR must hold them: train records their digest), or on every episode of DIR with
        --episodes all (frames recorded apart from training, e.g. on the real arm); writes it into the
        checkpoint's config.json and prints {"threshold": ..., "scores": {...}, "episodes": N}. Never choose it on the frames you check
        the classifier with: the check would then be no check.
"""

from __future__ import annotations

import argparse
import json
import sys

from hilserl.policies.device import DEVICE_CHOICES
from hilserl.reward import training
from hilserl.reward.classifier import FALLBACK_THRESHOLD


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hilserl reward-classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train a classifier on a frames folder")
    t.add_argument("--frames", required=True, help="frames folder (record-frames, or an actor's record_frames_dir)")
    t.add_argument("--out", required=True, help="classifier checkpoint directory to write")
    t.add_argument("--init-encoder", help="a policy checkpoint whose encoder the classifier starts from")
    t.add_argument("--epochs", type=int, default=training.EPOCHS)
    t.add_argument("--batch-size", type=int, default=training.BATCH_SIZE)
    t.add_argument("--lr", type=float, default=training.LR)
    t.add_argument("--held-out", type=float, default=training.HELD_OUT_FRACTION,
                   help="share of the episodes held out for scoring (by episode, stratified by success)")
    t.add_argument("--target-fpr", type=float, default=training.TARGET_FALSE_POSITIVE_RATE,
                   help="the threshold chosen is the lowest whose false positive rate on the held-out episodes is "
                        "at most this")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch threads")
    t.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default auto: a GPU when torch sees one)")
    e = sub.add_parser("eval", help="score a classifier on a frames folder")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--frames", required=True)
    e.add_argument("--threshold", type=float, help="success when p(success) > this (default: the threshold in "
                   f"the classifier's config.json, {FALLBACK_THRESHOLD} for one without)")
    e.add_argument("--device", default="cpu")
    r = sub.add_parser("threshold", help="choose a classifier's threshold again on a frames folder")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--frames", required=True)
    r.add_argument("--target-fpr", type=float, default=training.TARGET_FALSE_POSITIVE_RATE,
                   help="the threshold chosen is the lowest whose false positive rate on those frames is at most this")
    r.add_argument("--episodes", choices=("held-out", "all"), default="held-out",
                   help="held-out: the episodes the training run held out (--frames must hold them); all: every one")
    r.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.action == "train" and (args.epochs < 1 or args.batch_size < 1 or not 0.0 <= args.held_out < 1.0
                                   or not 0.0 <= args.target_fpr < 1.0):
        p.error("--epochs and --batch-size must be >= 1, --held-out and --target-fpr in [0, 1)")
    if args.action == "eval" and args.threshold is not None and not 0.0 < args.threshold < 1.0:
        p.error("--threshold must be in (0, 1)")
    if args.action == "threshold" and not 0.0 <= args.target_fpr < 1.0:
        p.error("--target-fpr must be in [0, 1)")
    return args


def train(args: argparse.Namespace) -> dict:
    import torch

    from hilserl.policies.device import resolve_device
    from hilserl.reward.classifier import ClassifierConfig, fold_policy_encoder, save_classifier
    from hilserl.reward.frames import read_frames

    torch.set_num_threads(args.threads)
    data = read_frames(args.frames)
    if data.success.all() or not data.success.any():
        raise ValueError(f"{args.frames}: all {len(data)} frames are labelled "
                         f"{'success' if data.success.all() else 'not success'}; a classifier needs both")
    train_rows, held_rows = training.split_by_episode(data, args.held_out, args.seed)
    if not len(held_rows):
        print("reward-classifier train: no episode held out (each kind of episode needs 2 or more, and --held-out "
              "> 0); the scores printed are empty", file=sys.stderr)
    channels, encoder = ClassifierConfig.encoder_channels, None
    if args.init_encoder:
        from hilserl.weights.checkpoint import read_config_file

        channels = read_config_file(args.init_encoder)[0].encoder_channels
        encoder = fold_policy_encoder(args.init_encoder, ClassifierConfig(image_size=data.image_size,
                                                                          num_cameras=data.num_cameras,
                                                                          encoder_channels=channels))
    model = training.train_classifier(data, train_rows, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                      device=resolve_device(args.device), seed=args.seed, encoder_state=encoder,
                                      encoder_channels=channels)
    held = data.select(held_rows)
    probability = training.probabilities(model, held.frames)
    if len(held_rows):
        threshold = training.choose_threshold(probability, held.success, args.target_fpr)
        chosen = training.threshold_rule(args.target_fpr, "the held-out episodes")
    else:
        threshold, chosen = training.NO_HELD_OUT_THRESHOLD, "no held-out episodes to choose one on: the fallback"
    scores = training.score_probabilities(probability, held.success, threshold).as_dict()
    notes = {"frames": args.frames, "train_frames": len(train_rows), "train_episodes": len(set(data.episode[train_rows])),
             "held_out_episodes": sorted(int(e) for e in set(held.episode)), "held_out_digest": held.digest(),
             "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "init_encoder": args.init_encoder or "",
             "threshold_chosen": chosen, "held_out_scores": scores,
             "held_out_scores_at_0.5": training.score_probabilities(probability, held.success, 0.5).as_dict()}
    save_classifier(model.cpu(), args.out, {"threshold": threshold, "training": notes})
    return {"held_out": scores, "threshold": threshold, "digest": model.digest(), "out": str(args.out)}


def classifier_and_frames(args: argparse.Namespace):
    """(the classifier, its config.json, the frames of --frames), refused when the frames do not fit it."""
    from hilserl.policies.device import resolve_device
    from hilserl.reward.classifier import load_classifier
    from hilserl.reward.frames import read_frames

    model, doc = load_classifier(args.checkpoint, resolve_device(args.device))
    data = read_frames(args.frames)
    if (data.num_cameras, data.image_size) != (model.config.num_cameras, model.config.image_size):
        raise ValueError(f"{args.frames} holds {data.num_cameras} camera(s) at {data.image_size} px; the classifier "
                         f"takes {model.config.num_cameras} at {model.config.image_size} px")
    return model, doc, data


def evaluate(args: argparse.Namespace) -> dict:
    from hilserl.reward.classifier import stored_threshold

    model, doc, data = classifier_and_frames(args)
    threshold = args.threshold if args.threshold is not None else stored_threshold(doc)
    return training.score(model, data, threshold).as_dict()


def rethreshold(args: argparse.Namespace) -> dict:
    """Choose the threshold again on the training run's held-out episodes (or all of --frames) and store it."""
    from pathlib import Path

    import numpy as np

    from hilserl.reward.classifier import save_classifier

    model, doc, data = classifier_and_frames(args)
    notes = dict(doc.get("training") or {})
    if args.episodes == "held-out":
        recorded = notes.get("frames")
        if not notes.get("held_out_episodes") or not recorded:
            raise ValueError(f"{args.checkpoint} records no held-out episodes; choose on frames recorded apart from "
                             "training with --episodes all")
        held = data.select(np.flatnonzero(np.isin(data.episode, notes["held_out_episodes"])))
        # The held-out rows' digest says whether these are the episodes held out, from whatever path; a
        # checkpoint trained before it was recorded can only be matched by its folder's path.
        same = held.digest() == notes["held_out_digest"] if "held_out_digest" in notes \
            else Path(recorded).resolve() == Path(args.frames).resolve()
        if not same:
            raise ValueError(f"{args.checkpoint} held out episodes of {recorded}; {args.frames} does not hold them: "
                             "give that folder, or --episodes all for frames recorded apart from training")
        data = held
    if data.success.all() or not data.success.any():
        raise ValueError(f"{args.frames}: the frames to choose on need both success and non-success frames")
    probability = training.probabilities(model, data.frames)
    threshold = training.choose_threshold(probability, data.success, args.target_fpr)
    scores = training.score_probabilities(probability, data.success, threshold).as_dict()
    where = "the held-out episodes" if args.episodes == "held-out" else f"every episode of {args.frames}"
    notes["threshold_chosen"] = training.threshold_rule(args.target_fpr, where) + " (chosen again after training)"
    if args.episodes == "held-out":
        notes["held_out_scores"] = scores
    extra = {k: v for k, v in doc.items() if k not in ("format", "classifier", "digest")}
    save_classifier(model.cpu(), args.checkpoint, extra | {"threshold": threshold, "training": notes})
    return {"threshold": threshold, "scores": scores, "episodes": len(np.unique(data.episode))}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        result = {"train": train, "eval": evaluate, "threshold": rethreshold}[args.action](args)
    except ValueError as err:  # FramesError and WeightsError are ValueErrors: unusable input, said plainly
        print(f"reward-classifier {args.action}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
