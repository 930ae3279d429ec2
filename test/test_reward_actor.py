"""An actor process with `reward_classifier` set ends sim episodes through the classifier, lock-step.

The classifier here says success for every frame (its output bias is large), so the episode must end exactly
when the confirm rule allows: the actor acts in the first observation, and `reward_confirm_steps` observations
in a row above the threshold label the episode a success, `label_source` reward_classifier, after
`reward_confirm_steps - 1` actions. /diagnostics carries the classifier's digest, probability, decision and its
agreement with the sim's own success. The same actor records its frames (`record_frames_dir`): a success button
held on /joy labels frames success and, while recording, ends no episode.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from rosutil import NodeProcess, Probe, init_checkpoint, ros_env, unique_domain_id, wait_for
from test_diagnostics import Monitor

STARTUP = 240.0  # Genesis compiles its kernels on a machine's first scene build
CONFIRM_STEPS = 3


def always_success_classifier(out):
    from hilserl.reward.classifier import ClassifierConfig, RewardClassifier, save_classifier

    model = RewardClassifier(ClassifierConfig(image_size=84))
    with torch.no_grad():
        model.head[-1].bias.fill_(30.0)
    save_classifier(model, out)
    return model.digest()


def test_the_classifier_ends_sim_episodes_as_successes_through_the_actor(tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String

    from hilserl.reward.frames import read_frames

    digest = always_success_classifier(tmp_path / "classifier")
    checkpoint = init_checkpoint(tmp_path / "policy", "drqv2", "--seed", "2")["path"]
    domain = unique_domain_id()
    env = ros_env(domain)
    probe = Probe(domain)
    monitor = Monitor(probe)
    latched = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    episodes = probe.subscribe(String, "/actor/episodes", latched)
    joy = probe.node.create_publisher(Joy, "/joy", 10)
    frames_dir = tmp_path / "frames"
    procs = []
    try:
        procs.append(NodeProcess("sim", {"lockstep": True, "seed": 11}, env, tmp_path))
        procs.append(NodeProcess("learner", {"checkpoint": checkpoint, "training": False}, env, tmp_path))
        procs.append(NodeProcess("actor", {"lockstep": True, "reset_service": "sim/reset", "send_transitions": False,
                                           "reward_classifier": str(tmp_path / "classifier"),
                                           "reward_threshold": 0.9, "reward_confirm_steps": CONFIRM_STEPS,
                                           "record_frames_dir": str(frames_dir)},
                                 env, tmp_path))
        wait_for(lambda: len(episodes) >= 2, STARTUP + 120, "two episodes ended by the classifier", procs)
        for _ in range(30):  # the success button (1) held for 1.5 s: success frames, no episode ended by it
            joy.publish(Joy(axes=[0.0] * 8, buttons=[0, 1, 0]))
            time.sleep(0.05)
        joy.publish(Joy(axes=[0.0] * 8, buttons=[0, 0, 0]))
        seen = len(episodes)
        wait_for(lambda: len(episodes) >= seen + 2, 120, "two more episodes", procs)
        status = monitor.wait("actor", lambda s: s["values"].get("reward_classifier/episodes_ended", "0") != "0",
                              "the classifier in the actor's diagnostics", procs)
        log = procs[2].log()
    finally:
        for p in procs:
            p.stop()
        probe.close()
    summaries = [json.loads(m.data) for _, m in episodes]
    for summary in summaries:
        assert summary["success"] and summary["terminated"] and not summary["truncated"], summary
        assert summary["label"] == "success" and summary["label_source"] == "reward_classifier", summary
        assert summary["actions"] == CONFIRM_STEPS - 1, summary
    values = status["values"]
    assert values["reward_classifier/digest"] == digest
    assert float(values["reward_classifier/probability"]) == 1.0
    assert int(values["reward_classifier/sim_steps_compared"]) > 0
    assert 0.0 <= float(values["reward_classifier/sim_agreement"]) < 1.0  # it calls success where the sim does not
    assert f"digest {digest}" in log
    data = read_frames(frames_dir)  # flushed at each episode's end and when the actor stops
    assert data.frames.shape[1:] == (3, 84, 84) and len(np.unique(data.episode)) >= 4
    assert data.success.any() and not data.success.all(), data.success
