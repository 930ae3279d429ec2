"""An actor on a second host: a Linux network namespace joined to this one by a veth pair.

The robot host (the namespace) runs the sim and the actor; this host runs the learner and the test's probe.
Only UDP crosses (no shared memory between "hosts"), and discovery goes over the veth link with static peers.
The actor discovers the learner, gets the weights and streams transitions; the link is then cut while the
actor keeps recording, and restored: every transition it recorded ends up stored by the learner once, and the
weights the learner trains from them reach the actor again.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from rosutil import REPO, init_checkpoint, NodeProcess, Probe, ros_env, unique_domain_id, wait_for
from test_diagnostics import Monitor

STARTUP = 240.0  # two nodes plus a Genesis sim start on 2 shared cores; only a failing run waits this long
LEARNER = {"batch_size": 8, "warmup_transitions": 24, "utd_ratio": 0.5, "publish_every_updates": 4,
           "checkpoint_every_updates": 1000, "n_step": 2}
SETTLE_SECONDS = 3.0  # after the cut: what was in flight has landed and the learner's status says so
CUT_SECONDS = 8.0  # then nothing may arrive for this long while the actor keeps recording
SCENARIO_LIMIT = 1200.0  # every wait inside has its own, shorter limit; this one only catches a hang
# The nodes speak UDP only: the two "hosts" share /dev/shm, so shared memory could carry traffic past a cut cable,
# and hilserl's profile (SHM + UDP), which an earlier test's probe may have put into this environment, must not
# be inherited. Each side also names the other's address as a static peer.
UDP_ONLY = {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
PROFILE_SETTINGS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
PUBLISHED = re.compile(r"published weights v(\d+) .*digest (\w+)")
_hosts = itertools.count()


@dataclass(frozen=True)
class SecondHost:
    namespace: str
    host_if: str  # veth end in this (root) namespace; setting it down cuts the cable
    host_addr: str
    peer_addr: str  # the namespace's address

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def second_host() -> Iterator[SecondHost]:
    """A namespace with a /30 veth link to this one; names and subnet unique per process and fixture."""
    pid, n = os.getpid(), next(_hosts)
    tag = f"{pid % 100000}x{n}"  # interface names must stay within 15 characters
    block = (pid * 8 + n) % 16384  # one of the 16384 /30 blocks of 10.231.0.0/16
    subnet = f"10.231.{block // 64}.{block % 64 * 4}"
    host = SecondHost(f"hilserl-{pid}-{n}", f"hsh{tag}", ip_plus(subnet, 1), ip_plus(subnet, 2))
    peer_if = f"hsp{tag}"
    inside = ("netns", "exec", host.namespace, "ip")
    steps = [("netns", "add", host.namespace),
             ("link", "add", host.host_if, "type", "veth", "peer", "name", peer_if),
             ("link", "set", peer_if, "netns", host.namespace),
             ("addr", "add", f"{host.host_addr}/30", "dev", host.host_if),
             ("link", "set", host.host_if, "up"),
             (*inside, "addr", "add", f"{host.peer_addr}/30", "dev", peer_if),
             (*inside, "link", "set", peer_if, "up"),
             (*inside, "link", "set", "lo", "up")]
    setup(steps[0])  # nothing to undo if this fails
    try:
        for step in steps[1:]:
            setup(step)
        yield host
    finally:
        subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)  # takes the veth pair along
        subprocess.run(["ip", "link", "del", host.host_if], capture_output=True)  # in case it was never moved


def setup(step: tuple[str, ...]) -> None:
    try:
        ip(*step)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = (getattr(err, "stderr", "") or str(err)).strip()
        pytest.skip(f"cannot create a network namespace joined by a veth pair (needs root, iproute2 and veth): "
                    f"`ip {' '.join(step)}`: {detail}")


def ip_plus(address: str, offset: int) -> str:
    head, last = address.rsplit(".", 1)
    return f"{head}.{int(last) + offset}"


def published_digests(learner: NodeProcess) -> dict[int, str]:
    """Every weights version the learner published, with its digest, from its log (complete, unlike a topic)."""
    return {int(m[1]): m[2] for m in PUBLISHED.finditer(learner.log())}


def spilled(spill: Path) -> list[Path]:
    """The batches the actor recorded that the learner has not acknowledged yet."""
    return sorted(spill.glob("*/*.safetensors"))


def newest_batches(paths: list[Path]) -> dict[str, int]:
    """Stream -> highest sequence number among these batch files."""
    from hilserl.replay.wire import decode_transitions

    newest: dict[str, int] = {}
    for path in paths:
        meta, _ = decode_transitions(path.read_bytes())
        newest[meta["actor_id"]] = max(newest.get(meta["actor_id"], 0), meta["seq"])
    return newest


def test_actor_on_second_host_gets_weights_and_loses_nothing_over_a_cut_link(second_host, tmp_path):
    """Runs `scenario` in a fresh interpreter: Fast DDS keeps the network interfaces it found when a process
    first used it, so a probe in this process, had an earlier test started Fast DDS here, could not reach the
    veth link this test just made."""
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_SETTINGS} | UDP_ONLY
    env["ROS_STATIC_PEERS"] = second_host.peer_addr
    run = subprocess.Popen([sys.executable, __file__, json.dumps(asdict(second_host)), str(tmp_path)], env=env,
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = run.communicate(timeout=SCENARIO_LIMIT)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGINT)  # its clean-up stops the nodes
        output, _ = run.communicate(timeout=60)
    print(output)
    assert run.returncode == 0, f"the second-host scenario failed:\n{output[-30000:]}"


def scenario(host: SecondHost, tmp_path: Path) -> None:
    """The learner and the probe on this host, the sim and the actor on `host`; every participant UDP only."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from std_msgs.msg import Float64MultiArray, String

    domain = unique_domain_id()
    here = ros_env(domain, **UDP_ONLY, ROS_STATIC_PEERS=host.peer_addr)
    there = ros_env(domain, **UDP_ONLY, ROS_STATIC_PEERS=host.host_addr)

    made = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "4", "--hidden-dim", "64", "--image-size", "48")
    checkpoint, checkpoint_digest = made["path"], made["inference_digest"]

    probe = Probe(domain)
    history = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    learner_status = probe.subscribe(String, "/learner/status", history)
    sim_status = probe.subscribe(String, "/sim/status", history)
    probe.subscribe(String, "/actor/weights_loaded", history)
    commands = probe.subscribe(Float64MultiArray, "/forward_position_controller/commands", qos_profile_sensor_data)
    monitor = Monitor(probe)
    status = lambda: json.loads(learner_status[-1][1].data) if learner_status else {}  # noqa: E731
    loaded = lambda: probe.json_messages("/actor/weights_loaded")  # noqa: E731
    spill = tmp_path / "spill"

    procs: list[NodeProcess] = []
    try:
        learner = NodeProcess("learner", LEARNER | {"checkpoint": str(checkpoint),
                                                    "state_dir": str(tmp_path / "state")}, here, tmp_path)
        procs.append(learner)
        sim = NodeProcess("sim", {"lockstep": True, "lockstep_max_hz": 10.0, "image_size": 48, "episode_steps": 20},
                          there, tmp_path, prefix=host.prefix)
        procs.append(sim)
        actor = NodeProcess("actor", {"lockstep": True, "reset_service": "sim/reset", "max_episode_steps": 0,
                                      "transition_batch": 4, "spill_dir": str(spill)},
                            there, tmp_path, prefix=host.prefix)
        procs.append(actor)

        def loaded_as_published() -> bool:
            """Each version the remote actor reports loaded is, digest for digest, one the learner published."""
            digests, run_id = published_digests(learner), status().get("run_id")
            return all(v["run_id"] == run_id and v["digest"] == digests.get(v["weights_version"]) for v in loaded())

        def expect_loaded_as_published() -> None:
            try:  # the actor may report a version a moment before the learner's log line about it is written
                wait_for(loaded_as_published, 10, "the actor's loaded digests to match the learner's", [learner])
            except AssertionError as err:
                raise AssertionError(f"loaded {loaded()}\npublished {published_digests(learner)}") from err

        # Discovery across the link, both ways: the actor's report of the weights it loaded comes back here.
        wait_for(loaded, STARTUP, "the remote actor to load weights", procs)
        expect_loaded_as_published()
        assert published_digests(learner)[1] == checkpoint_digest, "v1 is not the checkpoint's weights"
        # The actor commands once the sim streams (its Genesis scene may still be building on a busy CPU).
        wait_for(lambda: sim_status, STARTUP, "the remote sim's status on this host", procs)
        wait_for(lambda: commands, 30, "the remote actor's arm commands to be seen on this host", procs)
        wait_for(lambda: status().get("transitions_stored", 0) >= 40 and status()["weights_version"] >= 2, STARTUP,
                 "transitions from the remote actor stored, and the learner training on them", procs)

        ip("link", "set", host.host_if, "down")  # the cable is pulled; the robot host keeps running
        try:
            time.sleep(SETTLE_SECONDS)
            stored_at_cut, spilled_at_cut = status()["transitions_stored"], len(spilled(spill))
            time.sleep(CUT_SECONDS)
            stored_in_cut, waiting = status()["transitions_stored"], spilled(spill)
            waiting_through = newest_batches(waiting)  # no acks can come: nothing is deleted under us
            newest_before_restore = max(published_digests(learner))
        finally:
            ip("link", "set", host.host_if, "up")
        assert stored_in_cut == stored_at_cut, (
            f"transitions crossed a cut link ({stored_at_cut} -> {stored_in_cut} stored): does shared memory bridge "
            f"the hosts?")
        assert len(waiting) >= spilled_at_cut + 3, (
            f"the actor should keep recording during the cut, its unacknowledged batches waiting on disk: "
            f"{spilled_at_cut} -> {len(waiting)}")

        wait_for(lambda: any(v["weights_version"] > newest_before_restore for v in loaded()), 120,
                 f"the remote actor to load weights newer than v{newest_before_restore}, trained after the link "
                 f"came back", procs)
        sim.stop()  # the arm stops; everything the actor recorded must now be stored exactly once
        try:
            wait_for(lambda: (a := monitor.latest("actor")) and a["values"]["unacked_batches"] == "0"
                             and str(status().get("transitions_stored")) == a["values"]["transitions"] and a,
                             120, "every transition the remote actor recorded stored exactly once", [learner, actor])
        except AssertionError as err:
            raise AssertionError(f"actor {monitor.latest('actor')}\nlearner {status()}") from err
        stored_through = status()["stored_through"]
        assert all(stored_through.get(stream, 0) >= seq for stream, seq in waiting_through.items()), (
            f"batches waiting at the end of the cut {waiting_through}, stored through {stored_through}")
        assert spilled(spill) == [], "acknowledged batches are deleted from the actor's disk"
        # Training on the last transitions ends; the actor ends on the learner's newest weights.
        wait_for(lambda: loaded()[-1]["weights_version"] == max(published_digests(learner)), 60,
                 "the remote actor to take up the learner's newest weights", [learner, actor])
        expect_loaded_as_published()
        assert actor.alive() and learner.alive(), "a node exited"
        print(f"stored {status()['transitions_stored']} transitions, {stored_at_cut} of them before the cut; "
              f"{len(waiting)} batches waited out the cut on the actor's disk; the actor took up "
              f"{len(loaded())} weights versions, up to v{loaded()[-1]['weights_version']}")
    finally:
        for p in procs:
            p.stop(signal.SIGINT)
        probe.close()


if __name__ == "__main__":
    scenario(SecondHost(**json.loads(sys.argv[1])), Path(sys.argv[2]))
