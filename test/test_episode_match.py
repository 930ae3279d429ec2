"""The actor's episodes equal the sim's, label for label, in lock-step and in real time.

sim + learner (shipped checkpoint, training off) + actor as real processes. The sim publishes every finished
episode on `sim/episodes`, the actor on `/actor/episodes` (both latched histories). Every sim episode that
ended after the actor's first action must appear in the actor's list with the same step count, return,
success and terminal/truncation flags, and the actor must report no episode the sim did not have.
"""

from __future__ import annotations

import json

import pytest

from rosutil import REPO, NodeProcess, Probe, ros_env, unique_domain_id, wait_for

SHIPPED = REPO / "checkpoints" / "reach"
STARTUP = 240.0  # Genesis compiles its kernels on a machine's first scene build
EPISODES = 5
FIELDS = ("steps", "return", "success", "terminated", "truncated")


def episodes_of_both(tmp_path, lockstep: bool) -> tuple[list[dict], list[dict]]:
    from std_msgs.msg import String

    from hilserl.nodes.qos import EPISODE_LOG

    domain = unique_domain_id()
    env = ros_env(domain)
    probe = Probe(domain)
    sim_episodes = probe.subscribe(String, "/sim/episodes", EPISODE_LOG)
    actor_episodes = probe.subscribe(String, "/actor/episodes", EPISODE_LOG)
    # Short episodes so a few minutes of sim hold several of both kinds (successes and time limits).
    procs = [NodeProcess("sim", {"lockstep": lockstep, "episode_steps": 25, "seed": 11}, env, tmp_path),
             NodeProcess("learner", {"checkpoint": str(SHIPPED), "training": False}, env, tmp_path),
             NodeProcess("actor", {"lockstep": lockstep, "send_transitions": False, "max_episode_steps": 0},
                         env, tmp_path)]
    try:
        wait_for(lambda: len(actor_episodes) >= EPISODES, STARTUP + 60 * EPISODES,
                 f"{EPISODES} actor episodes", procs)
        last = json.loads(actor_episodes[-1][1].data)["episode"]
        wait_for(lambda: any(json.loads(m.data)["episode"] >= last for _, m in sim_episodes), 30,
                 "the sim's record of the same episodes", procs)
        with probe.lock:
            return ([json.loads(m.data) for _, m in sim_episodes], [json.loads(m.data) for _, m in actor_episodes])
    finally:
        for p in procs:
            p.stop()
        probe.close()


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="no shipped checkpoint in this tree")
@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "realtime"])
def test_actor_episodes_equal_the_sims(tmp_path, lockstep):
    sim, actor = episodes_of_both(tmp_path, lockstep)
    by_index = {e["episode"]: e for e in sim}
    first, last = actor[0]["episode"], actor[-1]["episode"]
    assert [e["episode"] for e in actor] == list(range(first, last + 1)), "the actor skipped or repeated an episode"
    for episode in actor:
        expected = by_index[episode["episode"]]
        assert {k: episode[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}, episode["episode"]
    assert any(e["success"] for e in actor) or any(e["truncated"] for e in actor)
