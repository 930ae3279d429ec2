"""Online learning across real processes: the actor streams transitions, the learner trains and publishes
newer weights that the actor takes up; a learner killed with SIGKILL resumes its run and loses nothing."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from sensor_msgs.msg import Joy

from rosutil import init_checkpoint, wait_for
from test_diagnostics import Monitor
from test_weight_sync import STARTUP, Rig, camera_image, graph  # noqa: F401  (the same rig and fixtures)
from hilserl.robot import JOINTS

LEARNER = {"batch_size": 8, "warmup_transitions": 24, "utd_ratio": 0.5, "publish_every_updates": 4,
           "checkpoint_every_updates": 10, "buffer_capacity": 2000, "n_step": 2}


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> str:
    return init_checkpoint(tmp_path_factory.mktemp("ckpt_small"), "drqv2", "--seed", "4", "--hidden-dim", "64")["path"]


def status(store) -> dict:
    return json.loads(store[-1][1].data) if store else {}


def test_actor_experience_trains_learner_and_survives_kill(graph, small_checkpoint, tmp_path):
    rig: Rig = graph.rig
    monitor = Monitor(rig.probe)
    state_dir = tmp_path / "learner_state"
    learner = graph("learner", LEARNER | {"checkpoint": small_checkpoint, "state_dir": str(state_dir)})
    actor = graph("actor", {"max_episode_steps": 10, "spill_dir": str(tmp_path / "spill"), "control_hz": 20.0})
    # A person holds the dead-man for a moment: those transitions are flagged and land in both buffers.
    joy_pub = rig.probe.node.create_publisher(Joy, "/joy", 10)
    joy = Joy(axes=[0.5] * len(JOINTS), buttons=[1, 0, 0])
    rig.probe.node.create_timer(0.05, lambda: joy_pub.publish(joy) if joy.buttons[0] else None)

    first = wait_for(lambda: (s := status(rig.learner_status)).get("weights_version", 0) >= 3 and s, 4 * STARTUP,
                     "the learner to train and publish v3", graph.procs)
    assert first["learner_step"] > 0 and first["buffers"]["interventions"] > 0
    wait_for(lambda: (rig.last_loaded() or {}).get("weights_version", 0) >= 3, 30, "actor to take up v3", graph.procs)
    joy.buttons = [0, 0, 0]

    # Kill -9 mid-stream, restart on the same state directory.
    run_id, version_before = first["run_id"], status(rig.learner_status)["weights_version"]
    learner.stop(signal.SIGKILL)
    graph.procs.remove(learner)
    rig.learner_status.clear()
    graph("learner", LEARNER | {"checkpoint": small_checkpoint, "state_dir": str(state_dir)}, name="learner2")
    resumed = wait_for(lambda: (s := status(rig.learner_status)).get("resumed") and s, 2 * STARTUP,
                       "the restarted learner", graph.procs)
    assert resumed["run_id"] == run_id and resumed["weights_version"] > version_before
    assert "resumed run" in graph.procs[-1].log() and "state" in graph.procs[-1].log()

    # Let new experience flow, then stop the sensors: the actor holds, and everything it made must be stored.
    wait_for(lambda: status(rig.learner_status).get("weights_version", 0) > version_before, 4 * STARTUP,
             "a newer version after the restart", graph.procs)
    rig.sensor_timer.cancel()
    try:
        final = wait_for(lambda: (a := monitor.latest("actor")) and a["values"]["state"] == "HOLDING"
                         and a["values"]["unacked_batches"] == "0"
                         and str(status(rig.learner_status).get("transitions_stored")) == a["values"]["transitions"]
                         and a, 60, "every transition acknowledged and stored exactly once", graph.procs)
    except AssertionError as err:
        raise AssertionError(f"actor {monitor.latest('actor')}\nlearner {status(rig.learner_status)}") from err
    assert int(final["values"]["transitions"]) > 24
    assert actor.alive()
    assert np.isfinite(status(rig.learner_status)["learner_step"])


def test_killed_actor_loses_nothing_it_recorded(graph, small_checkpoint, tmp_path):
    """Acks stop (learner frozen), the actor is killed -9 with batches unacknowledged; its successor resends them."""
    import os

    from hilserl.nodes.transitions import safe_name
    from hilserl.replay.wire import decode_transitions

    rig: Rig = graph.rig
    spill = tmp_path / "spill"
    learner = graph("learner", LEARNER | {"checkpoint": small_checkpoint, "state_dir": str(tmp_path / "state"),
                                          "warmup_transitions": 10_000})
    actor = graph("actor", {"max_episode_steps": 10, "spill_dir": str(spill), "control_hz": 20.0,
                            "transition_batch": 4})
    wait_for(lambda: status(rig.learner_status).get("transitions_stored", 0) >= 8, 2 * STARTUP,
             "the first transitions stored", graph.procs)
    os.killpg(learner.proc.pid, signal.SIGSTOP)  # no acks from here on
    try:
        wait_for(lambda: len(list(spill.glob("*/*.safetensors"))) >= 3, 30, "unacknowledged batches on disk")
        actor.stop(signal.SIGKILL)
        graph.procs.remove(actor)
        left = [decode_transitions(p.read_bytes())[0] for p in sorted(spill.glob("*/*.safetensors"))]
    finally:
        os.killpg(learner.proc.pid, signal.SIGCONT)
    old_stream = left[0]["actor_id"]
    last_seq = max(m["seq"] for m in left)
    graph("actor", {"max_episode_steps": 10, "spill_dir": str(spill), "control_hz": 20.0, "transition_batch": 4},
          name="actor2")
    stored = wait_for(lambda: (s := status(rig.learner_status).get("stored_through", {})).get(old_stream) == last_seq
                      and not (spill / safe_name(old_stream)).exists() and s,
                      2 * STARTUP, f"batches 1..{last_seq} of the killed actor stored", graph.procs)
    assert stored[old_stream] == last_seq >= 3  # every batch the killed actor recorded, none skipped
