"""A live learner process under malformed `/transitions` traffic (property-based), then restarted on its journal.

Hypothesis draws streams of valid batches interleaved with structured mutations (wrong shapes, dtypes, ranks,
widths, NaN, truncation, bit flips, huge declared lengths, duplicate and out-of-range sequence numbers,
hostile ids) and sends them from a probe on the real topic. The learner must stay up, store every valid
transition exactly once, store no invalid one, and answer every invalid payload with a rejection naming it.
`HILSERL_INTAKE_FUZZ_EXAMPLES` sets the number of examples (bench/intake_fuzz.py runs a large one).
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hilserl.policies.config import PolicyConfig
from hilserl.weights.checkpoint import read_config_file
from hilserl.replay.intake import safe_name
from hilserl.replay.wire import payload_id, read_transitions
from intake_cases import (BAD_SEQUENCES, CONTENT_MUTATIONS, HOSTILE_STREAMS, IMAGE, WIRE_MUTATIONS, rebuilt,
                          valid_payload)
from rosutil import NodeProcess, Probe, init_checkpoint, ros_env, unique_domain_id, wait_for
from test_diagnostics import Monitor

STARTUP = 90.0
EXAMPLES = int(os.environ.get("HILSERL_INTAKE_FUZZ_EXAMPLES", "60"))  # ~300 payloads
# Seconds one example's answers may take. The benchmark-sized run shares a loaded machine for many minutes
# and sets a longer one: a pause there is not a lost answer (a lost answer still times out).
ANSWER_TIMEOUT = float(os.environ.get("HILSERL_INTAKE_FUZZ_ANSWER_TIMEOUT", "30"))


class LiveLearner:
    """A learner process that stores but never trains, a probe that sends payloads and reads every answer."""

    def __init__(self, tmp_path):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String, UInt8MultiArray

        from hilserl.nodes.transitions import ACK_TOPIC, STREAM, TRANSITIONS_TOPIC

        self.tmp_path = tmp_path
        checkpoint = init_checkpoint(tmp_path / "ckpt", "drqv2", "--seed", "2", "--image-size", str(IMAGE),
                                     "--hidden-dim", "32")["path"]
        self.config, _ = read_config_file(checkpoint)
        self.state_dir = tmp_path / "state"
        self.params = {"checkpoint": checkpoint, "state_dir": str(self.state_dir), "warmup_transitions": 10**9,
                       "buffer_capacity": 100_000}
        self.env = ros_env(unique_domain_id())
        self.probe = Probe(int(self.env["ROS_DOMAIN_ID"]))
        latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             history=HistoryPolicy.KEEP_LAST, depth=1)
        self.status = self.probe.subscribe(String, "/learner/status", latched)
        self.acks = self.probe.subscribe(String, ACK_TOPIC, QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_ALL))
        self.parsed_acks: list[dict] = []
        self.monitor = Monitor(self.probe)
        self.pub = self.probe.node.create_publisher(UInt8MultiArray, TRANSITIONS_TOPIC, STREAM)
        self.msg_type = UInt8MultiArray
        self.procs: list[NodeProcess] = []
        self.start()
        # ledger
        self.valid: dict[tuple[str, int], tuple[str, int]] = {}  # (stream, seq) -> (digest, transitions)
        self.invalid_sent = 0
        self.examples = 0

    def start(self, name: str = "learner") -> None:
        self.status.clear()
        self.procs.append(NodeProcess("learner", self.params, self.env, self.tmp_path, name=name))
        wait_for(lambda: self.latest_status().get("weights_version", 0) >= 1
                 and self.pub.get_subscription_count() > 0
                 and self.probe.node.count_publishers("/transitions_ack") > 0, STARTUP, "the learner", self.procs)

    def latest_status(self) -> dict:
        with self.probe.lock:
            del self.status[:-1]  # only the newest counts; a long run's statuses (every stream's progress) add up
            data = self.status[-1][1].data if self.status else ""
        return json.loads(data) if data else {}

    def send(self, payload: bytes) -> None:
        from hilserl.nodes.wire import bytes_to_msg_data

        msg = self.msg_type()
        msg.data = bytes_to_msg_data(payload)
        self.pub.publish(msg)

    def answers(self) -> list[dict]:
        """Every answer so far. Each is parsed once: re-parsing them all on every poll (under the probe's lock,
        which its spin thread needs to take the next ack) grows with the run and starves a long one."""
        with self.probe.lock:
            fresh = self.acks[len(self.parsed_acks):]
        self.parsed_acks += [json.loads(msg.data) for _, msg in fresh]
        return self.parsed_acks

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.probe.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    learner = LiveLearner(tmp_path_factory.mktemp("intake_live"))
    yield learner
    learner.close()


def draw_example(data, index: int, config: PolicyConfig) -> tuple[str, int, list[tuple[str, int, bytes]]]:
    """(stream, last sequence number, [(role, seq, payload)]) with role "valid", "invalid" (a rejection is due)
    or "early" (valid but too far ahead to hold: answered with an ack that shows the gap)."""
    stream = data.draw(st.sampled_from([f"/fuzz_{index}#s", f"fuzz_{index}_s", f"/ns/fuzz-{index}/actor#0a1b"]))
    n = data.draw(st.integers(1, 4))
    plan: list[tuple[str, int, bytes]] = []
    for seq in range(1, n + 1):
        good = valid_payload(stream, seq, config, length=data.draw(st.integers(2, 4)), seed=index * 10 + seq)
        if data.draw(st.booleans()):  # malformed copies before the real one: none may settle this number
            mutation = data.draw(st.sampled_from(sorted(WIRE_MUTATIONS)))
            plan.append(("invalid", seq, WIRE_MUTATIONS[mutation](good, data.draw(st.integers(0, 1 << 20)))))
        if data.draw(st.integers(0, 3)) == 0:
            bad = data.draw(st.sampled_from(
                [{"actor_id": s} for s in HOSTILE_STREAMS] + [{"seq": s} for s in BAD_SEQUENCES]))
            plan.append(("invalid", seq, rebuilt(good, bad)))
        if data.draw(st.integers(0, 3)) == 0:  # this number is settled as rejected; the stream goes on
            kind = data.draw(st.sampled_from(sorted(CONTENT_MUTATIONS)))
            bad = CONTENT_MUTATIONS[kind][1](good)
            plan.append(("invalid", seq, bad))
            if data.draw(st.booleans()):
                plan.append(("invalid", seq, bad))  # resent: the same rejection again
            if data.draw(st.booleans()):
                plan.append(("invalid", seq, good))  # other content under the settled number
        else:
            plan.append(("valid", seq, good))
            if data.draw(st.booleans()):
                plan.append(("valid", seq, good))  # a resend: acknowledged, stored once
    if data.draw(st.booleans()):
        plan.append(("early", n + 10_000, valid_payload(stream, n + 10_000, config, length=1)))
    if len(plan) > 1 and data.draw(st.booleans()):  # out of order within the window
        i = data.draw(st.integers(0, len(plan) - 2))
        if plan[i][1] != plan[i + 1][1]:
            plan[i], plan[i + 1] = plan[i + 1], plan[i]
    return stream, n, plan


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.generate],  # no shrinking on a live process
          
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_learner_answers_every_payload_and_stores_exactly_the_valid_ones(live, data):
    live.examples += 1
    index = live.examples  # a fresh stream per example
    stream, last, plan = draw_example(data, index, live.config)
    before = len(live.answers())
    for _, _, payload in plan:
        live.send(payload)
    refused_ids = [payload_id(p) for role, _, p in plan if role == "invalid"]

    def answered():
        answers = live.answers()[before:]
        rejected = [a["payload"] for a in answers if "reason" in a]
        through = max([a["stored_through"] for a in answers if a["actor_id"] == stream], default=0)
        return all(rejected.count(pid) >= refused_ids.count(pid) for pid in set(refused_ids)) and through >= last \
            and (answers, rejected)
    answers, rejected = wait_for(answered, ANSWER_TIMEOUT, f"answers to {len(plan)} payloads of {stream}",
                                 live.procs, interval=0.01)
    valid_ids = {payload_id(p) for role, _, p in plan if role in ("valid", "early")}
    assert not valid_ids & set(rejected), "a valid payload was rejected"
    assert all("reason" in a for a in answers if a.get("payload") in refused_ids)
    assert max(a["stored_through"] for a in answers if a["actor_id"] == stream) == last
    for role, _, payload in plan:
        if role == "valid":
            meta = read_transitions(payload)[0]
            live.valid[(meta["actor_id"], int(meta["seq"]))] = (meta["digest"], int(meta["count"]))
    live.invalid_sent += len(refused_ids)
    if index % 500 == 0:
        print(f"live intake fuzz: {index} examples drawn, {live.invalid_sent} malformed payloads answered so far", flush=True)
    assert live.procs[-1].alive()


def journalled(state_dir) -> dict[tuple[str, int], tuple[str, int]]:
    out = {}
    for path in (state_dir / "journal").glob("*/*.safetensors"):
        meta, _ = read_transitions(path.read_bytes())
        out[(meta["actor_id"], int(meta["seq"]))] = (meta["digest"], int(meta["count"]))
    return out


def test_the_journal_and_the_buffers_hold_exactly_the_valid_batches(live):
    expected = sum(count for _, count in live.valid.values())
    status = wait_for(lambda: (s := live.latest_status()).get("transitions_stored") == expected and s, 30,
                      f"the learner's status to count {expected} stored transitions", live.procs)
    assert journalled(live.state_dir) == live.valid
    print(f"live intake fuzz: {live.invalid_sent} malformed payloads rejected, {len(live.valid)} valid batches "
          f"({expected} transitions) stored once; learner stored_through has {len(status['stored_through'])} streams; "
          f"the learner process stayed up: {live.procs[-1].alive()}")
    learner = live.monitor.wait("learner", lambda s: "transitions_rejected" in s["values"], "learner diagnostics",
                                live.procs)
    assert int(learner["values"]["transitions_rejected"]) >= live.invalid_sent


def test_a_restart_quarantines_a_bad_journal_entry_and_replays_the_rest(live):
    victim = sorted(live.valid)[0]
    folder = live.state_dir / "journal" / safe_name(victim[0])
    (folder / f"{victim[1]:012d}.safetensors").write_bytes(b"\x00bit rot")
    learner = live.procs[-1]
    learner.stop(signal.SIGKILL)
    live.procs.remove(learner)
    live.start(name="learner_restarted")
    expected = sum(count for key, (_, count) in live.valid.items() if key != victim)
    wait_for(lambda: live.latest_status().get("transitions_stored") == expected, 30,
             f"{expected} transitions replayed", live.procs)
    reason = live.state_dir / "quarantine" / f"{folder.name}__{victim[1]:012d}.safetensors.reason.txt"
    assert reason.is_file() and "TransitionsError" in reason.read_text()
    status = live.monitor.wait("learner", lambda s: s["level"] == 2 and "quarantined" in s["message"],
                               "the learner's diagnostics to show the quarantine as ERROR", live.procs)
    assert status["values"]["journal_quarantined"] == "1"
    # And it carries on: a new stream is stored.
    live.send(valid_payload("/after_restart#1", 1, live.config))
    wait_for(lambda: live.latest_status().get("stored_through", {}).get("/after_restart#1") == 1, 30,
             "a batch stored after the restart", live.procs)
