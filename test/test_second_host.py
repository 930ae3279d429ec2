"""An actor on a second host: a Linux network namespace joined to this one by a veth pair.

The robot host (namespace) runs the sim and the actor; this host runs the learner and the test's probe.
Only UDP crosses (no shared memory between "hosts"), discovery goes over the veth link with static peers.
Fast DDS reads its XML profile once per process, and earlier tests' probes load hilserl's (shared memory +
UDP) into pytest's process, so the scenario runs in a fresh interpreter (`python test/test_second_host.py DIR`).
The actor discovers the learner, gets the weights and streams transitions; the link is then cut while the
actor keeps recording, and restored: every transition it recorded ends up stored by the learner once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from rosutil import REPO, NodeProcess, Probe, ros_env, unique_domain_id, wait_for
from test_diagnostics import Monitor
from hilserl.nodes.dds import USER_SETTINGS

STARTUP = 240.0
LEARNER = {"batch_size": 8, "warmup_transitions": 24, "utd_ratio": 0.5, "publish_every_updates": 4,
           "checkpoint_every_updates": 1000, "n_step": 2}
CUT_SECONDS = 10.0
SKIP_EXIT = 77  # the scenario's exit status when this machine cannot make a namespace


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NoNamespaces(RuntimeError):
    pass


@contextmanager
def second_host():
    """(namespace, host-side veth, host address, namespace address); removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    ns, host_if, peer_if = f"hilserl{tag}", f"hsh{tag}", f"hsp{tag}"
    octet = 1 + os.getpid() % 250
    host_addr, peer_addr = f"10.231.{octet}.1", f"10.231.{octet}.2"
    try:
        ip("netns", "add", ns)
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        raise NoNamespaces(f"cannot create a network namespace here (needs root and iproute2): {detail}") from err
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        ip("link", "set", peer_if, "netns", ns)
        ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{peer_addr}/30", "dev", peer_if)
        ip("netns", "exec", ns, "ip", "link", "set", peer_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_addr, peer_addr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes the veth pair with it
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_actor_on_second_host_gets_weights_and_loses_nothing_over_a_cut_link(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}  # no Fast DDS profile inherited
    out = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    if out.returncode == SKIP_EXIT:
        pytest.skip(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, (out.stdout + out.stderr)[-8000:]
    assert "every transition stored once" in out.stdout


def scenario(tmp_path: Path, ns: str, host_if: str, host_addr: str, peer_addr: str) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    # UDP only (shared memory would bridge the namespaces); each side knows the other's address.
    network = {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    domain = unique_domain_id()
    here = ros_env(domain, **network, ROS_STATIC_PEERS=peer_addr)
    there = ros_env(domain, **network, ROS_STATIC_PEERS=host_addr)
    os.environ.update({key: here[key] for key in (*network, "ROS_STATIC_PEERS")})  # the probe's side
    probe = Probe(domain)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    learner_status = probe.subscribe(String, "/learner/status", latched)
    loaded = probe.subscribe(String, "/actor/weights_loaded", latched)
    monitor = Monitor(probe)
    status = lambda: json.loads(learner_status[-1][1].data) if learner_status else {}  # noqa: E731

    checkpoint = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-m", "hilserl", "init-checkpoint", "--policy", "drqv2", "--seed", "4",
                    "--hidden-dim", "64", "--image-size", "48", "--out", str(checkpoint)], check=True, cwd=REPO,
                   capture_output=True)
    remote = ["ip", "netns", "exec", ns]
    procs: list[NodeProcess] = []
    try:
        procs.append(NodeProcess("learner", LEARNER | {"checkpoint": str(checkpoint), "state_dir": str(tmp_path / "state")},
                                 here, tmp_path))
        procs.append(NodeProcess("sim", {"lockstep": True, "lockstep_max_hz": 10.0, "image_size": 48,
                                         "episode_steps": 20}, there, tmp_path, prefix=remote))
        procs.append(NodeProcess("actor", {"lockstep": True, "reset_service": "sim/reset", "max_episode_steps": 0,
                                           "transition_batch": 4, "spill_dir": str(tmp_path / "spill")},
                                 there, tmp_path, prefix=remote))
        sim, actor = procs[1], procs[2]

        first = wait_for(lambda: loaded and json.loads(loaded[-1][1].data), STARTUP,
                         "the remote actor to load weights", procs)
        assert first["run_id"] == status()["run_id"] and first["digest"]
        wait_for(lambda: status().get("transitions_stored", 0) >= 40 and status()["weights_version"] >= 2, STARTUP,
                 "transitions from the remote actor stored, and the learner training on them", procs)

        ip("link", "set", host_if, "down")  # the cable is pulled; the robot host keeps running
        try:
            time.sleep(2.0)  # what was in flight lands or is lost now
            stored_at_cut = status()["transitions_stored"]
            time.sleep(CUT_SECONDS)
            assert status()["transitions_stored"] == stored_at_cut, "nothing can cross a cut link"
            waiting = list((tmp_path / "spill").glob("*/*.safetensors"))
            assert len(waiting) >= 3, "the actor kept recording during the cut, its batches waiting on disk"
        finally:
            ip("link", "set", host_if, "up")

        wait_for(lambda: status().get("transitions_stored", 0) > stored_at_cut + 20, 120,
                 "the batches recorded during the cut to arrive after the link is restored", procs)
        sim.stop()  # the arm stops; everything the actor recorded must now be stored exactly once
        final = wait_for(lambda: (a := monitor.latest("actor")) and a["values"]["unacked_batches"] == "0"
                         and str(status().get("transitions_stored")) == a["values"]["transitions"] and a,
                         120, "every transition the remote actor recorded stored exactly once", procs[:1] + [actor])
        assert int(final["values"]["transitions"]) > stored_at_cut
        assert not list((tmp_path / "spill").glob("*/*.safetensors"))
        newest = status()["weights_version"]
        wait_for(lambda: json.loads(loaded[-1][1].data)["weights_version"] >= newest - 1, 60,
                 "the remote actor to take up the learner's newest weights", procs[:1] + [actor])
        assert actor.alive() and procs[0].alive()
        print(f"every transition stored once: {final['values']['transitions']} transitions, "
              f"{status()['transitions_stored'] - stored_at_cut} of them after the cut", flush=True)
    finally:
        for p in procs:
            p.stop(signal.SIGINT)
        probe.close()


if __name__ == "__main__":
    work = Path(sys.argv[1])
    try:
        with second_host() as host:
            scenario(work, *host)
    except NoNamespaces as err:
        print(err, flush=True)
        sys.exit(SKIP_EXIT)
