"""The transitions intake without a learner: the validator, injective journal names, sequencing, journal replay
and quarantine (plain Python), the actor's handling of a rejection (a real rclpy node, no traffic), and its
backlog reaching a learner that appears (two rclpy nodes on one domain)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilserl.policies.config import PolicyConfig
from hilserl.replay.intake import TransitionIntake, safe_name
from hilserl.replay.wire import (FORMAT, TransitionsError, decode_transitions, payload_id, read_transitions,
                                 validate)
from intake_cases import (BAD_SEQUENCES, CONTENT_MUTATIONS, HOSTILE_STREAMS, WIRE_MUTATIONS, rebuilt,
                          valid_payload)

CONFIG = PolicyConfig(image_size=16, hidden_dim=32)


def check(payload: bytes, config: PolicyConfig | None = CONFIG):
    meta, tensors = read_transitions(payload)
    return validate(meta, tensors, config)


def test_a_valid_batch_passes_and_decodes_to_what_was_sent():
    payload = valid_payload("/actor#1", 4, CONFIG)
    assert check(payload).seq == 4 and check(payload, None).count == 3
    meta, back = decode_transitions(payload, CONFIG)
    assert meta["actor_id"] == "/actor#1" and back[-1].final_frames is not None and back[1].intervention


def test_a_batch_whose_header_length_starts_like_a_pickle_is_read(tmp_path):
    """A safetensors header of 640/896/1152/1408 bytes begins with the bytes of a pickle opcode (0x80, 2..5)."""
    payloads = (valid_payload("/actor#" + "a" * n, 1, CONFIG, length=length)
                for length in (3, 40, 400) for n in range(1, 190))
    payload = next(p for p in payloads if p[0] == 0x80 and 2 <= p[1] <= 5)
    assert check(payload).seq == 1
    intake = TransitionIntake(tmp_path, lambda stream, batch: None, lambda: CONFIG)
    assert not intake.offer(payload).is_rejection


@pytest.mark.parametrize("name", sorted(CONTENT_MUTATIONS))
def test_every_content_mutation_is_refused_by_the_check_it_names(name):
    kind, mutate = CONTENT_MUTATIONS[name]
    with pytest.raises(TransitionsError) as err:
        check(mutate(valid_payload("/actor#1", 1, CONFIG)))
    assert err.value.kind == kind, err.value


def test_stream_ids_and_sequence_numbers_are_checked():
    good = valid_payload("/actor#1", 1, CONFIG)
    for stream in HOSTILE_STREAMS:
        with pytest.raises(TransitionsError) as err:
            check(rebuilt(good, {"actor_id": stream}))
        assert err.value.kind == "stream_id"
    for seq in BAD_SEQUENCES:
        with pytest.raises(TransitionsError) as err:
            check(rebuilt(good, {"seq": seq}))
        assert err.value.kind == "sequence"


@pytest.mark.parametrize("name", sorted(WIRE_MUTATIONS))
def test_wire_damage_is_refused_before_anything_is_believed(name):
    with pytest.raises(TransitionsError):
        read_transitions(WIRE_MUTATIONS[name](valid_payload("/actor#1", 1, CONFIG), 1234))


def test_a_flip_of_any_single_bit_is_refused():
    payload = valid_payload("/a#1", 1, PolicyConfig(image_size=16, action_dim=2), length=1)
    for bit in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TransitionsError):
            read_transitions(bytes(damaged))


def test_the_format_is_versioned():
    assert read_transitions(valid_payload("/a#1", 1, CONFIG))[0]["format"] == FORMAT


# -- injective names --------------------------------------------------------------------------------
def test_ids_that_sanitise_alike_get_different_folders_and_long_ids_short_ones():
    assert safe_name("/probe_actor#b59c") != safe_name("probe_actor_b59c")
    assert safe_name("/probe_actor#b59c").startswith("probe_actor_b59c-")
    for stream in HOSTILE_STREAMS:
        name = safe_name(stream)
        assert len(name) <= 80 and "/" not in name and "\x00" not in name and name not in (".", "..")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=300), min_size=2, max_size=20, unique=True))
def test_distinct_ids_never_share_a_folder(ids):
    assert len({safe_name(i) for i in ids}) == len(ids)


# -- sequencing, journal, replay, quarantine ----------------------------------------------------------
class Learner:
    """What the learner's buffers would hold: every stored transition, tagged with its stream."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.stored: list[tuple[str, int, int]] = []  # (stream, episode, step)
        self.intake = TransitionIntake(state_dir / "journal", self.store, lambda: CONFIG, log=lambda _: None)

    def store(self, stream, transitions):
        self.stored += [(stream, t.episode, t.step) for t in transitions]


def test_early_batches_wait_for_the_gap_then_are_stored_in_order(tmp_path):
    learner = Learner(tmp_path)
    payloads = [valid_payload("/a#1", seq, CONFIG) for seq in range(1, 6)]
    for seq in (3, 5, 2):
        assert learner.intake.offer(payloads[seq - 1]).stored_through == 0
    assert learner.stored == []
    assert learner.intake.offer(payloads[0]).stored_through == 3  # 1 fills the gap: 1, 2, 3 stored
    assert learner.intake.offer(payloads[3]).stored_through == 5
    assert [s[1] for s in learner.stored] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    again = learner.intake.offer(payloads[1])  # a resend of a stored batch: acked, not stored twice
    assert not again.is_rejection and again.stored_through == 5 and len(learner.stored) == 15


def test_a_refused_batch_settles_its_number_and_the_stream_goes_on(tmp_path):
    learner = Learner(tmp_path)
    good = [valid_payload("/a#1", seq, CONFIG) for seq in range(1, 5)]
    bad = CONTENT_MUTATIONS["state_nan"][1](good[1])
    learner.intake.offer(good[2])  # early
    answer = learner.intake.offer(bad)
    assert answer.is_rejection and answer.rejected == 2 and answer.kind == "nonfinite"
    assert answer.payload == payload_id(bad) and answer.stored_through == 0
    assert learner.intake.offer(good[0]).stored_through == 3  # 1 stored, 2 rejected, 3 stored
    assert learner.intake.offer(bad).is_rejection  # the same refused payload again: the same answer
    forged = learner.intake.offer(good[1])  # other content under a settled number
    assert forged.is_rejection and forged.kind == "sequence"
    assert learner.intake.offer(good[3]).stored_through == 4
    assert sorted({s[1] for s in learner.stored}) == [1, 3, 4]
    assert learner.intake.rejections_by_reason == {"nonfinite": 2, "sequence": 1}

    restarted = Learner(tmp_path)  # the journal knows the tombstone: same streams, same buffers
    assert restarted.intake.replay() == 9 and restarted.stored == learner.stored
    assert restarted.intake.stored_through == {"/a#1": 4} and not restarted.intake.quarantined


def test_nothing_a_sender_sends_escapes_as_an_exception(tmp_path):
    learner = Learner(tmp_path)
    good = valid_payload("/a#1", 1, CONFIG)
    junk = [m(good, 77) for m in WIRE_MUTATIONS.values()]
    junk += [rebuilt(good, {"actor_id": s}) for s in HOSTILE_STREAMS] + [rebuilt(good, {"seq": s}) for s in BAD_SEQUENCES]
    for payload in junk:
        answer = learner.intake.offer(payload)
        assert answer.is_rejection and answer.rejected is None and answer.payload == payload_id(payload)
    assert learner.stored == [] and not any((tmp_path / "journal").rglob("*.safetensors"))
    assert learner.intake.offer(good).stored_through == 1


def test_ids_that_sanitise_alike_keep_their_own_journals(tmp_path):
    learner = Learner(tmp_path)
    for stream in ("/probe_actor#b59c", "probe_actor_b59c"):
        for seq in (1, 2):
            learner.intake.offer(valid_payload(stream, seq, CONFIG, seed=seq))
    restarted = Learner(tmp_path)
    restarted.intake.replay()
    assert restarted.intake.stored_through == {"/probe_actor#b59c": 2, "probe_actor_b59c": 2}
    assert sorted(restarted.stored) == sorted(learner.stored) and len(learner.stored) == 12


def test_journal_entries_that_cannot_be_replayed_are_quarantined_and_the_rest_replays(tmp_path):
    learner = Learner(tmp_path)
    for seq in (1, 2, 3):
        learner.intake.offer(valid_payload("/a#1", seq, CONFIG))
    learner.intake.offer(valid_payload("/b#1", 1, CONFIG))
    folder = tmp_path / "journal" / safe_name("/a#1")
    (folder / "000000000002.safetensors").write_bytes(b"not a batch")  # bit rot, a bad disk, an old format
    other = PolicyConfig(image_size=20, hidden_dim=32)  # a batch this learner's policy cannot hold
    (tmp_path / "journal" / safe_name("/b#1") / "000000000002.safetensors").write_bytes(valid_payload("/b#1", 2, other))
    stray = tmp_path / "journal" / "stray"
    stray.mkdir()
    (stray / "000000000001.safetensors").write_bytes(b"\x00" * 100)

    restarted = Learner(tmp_path)
    assert restarted.intake.replay() == 9  # /a#1 batches 1 and 3, /b#1 batch 1
    assert restarted.intake.stored_through == {"/a#1": 3, "/b#1": 2}
    quarantine = tmp_path / "quarantine"
    reasons = sorted(p.name for p in quarantine.glob("*.reason.txt"))
    assert len(reasons) == 3 and len(restarted.intake.quarantined) == 3
    assert "TransitionsError" in (quarantine / f"{folder.name}__000000000002.safetensors.reason.txt").read_text()
    # Quarantine is once: the next restart replays the rest again without new entries.
    again = Learner(tmp_path)
    assert again.intake.replay() == 9 and not again.intake.quarantined


# -- the actor's side --------------------------------------------------------------------------------
@pytest.fixture
def ros_node():
    import rclpy

    from rosutil import unique_domain_id

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=unique_domain_id())
    node = rclpy.create_node("sender_test", context=context)
    yield node
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_actor_keeps_a_rejected_batch_aside_stops_resending_it_and_reports_why(ros_node, tmp_path):
    from std_msgs.msg import String

    from hilserl.nodes.transitions import TransitionSender
    from intake_cases import transitions

    sender = TransitionSender(ros_node, "/actor", lambda: CONFIG.fingerprint(), tmp_path / "spill", batch_size=3)
    for t in transitions(0, 9, CONFIG, ends=False):
        sender.add(t)
    assert sorted(seq for _, seq in sender.unacked) == [1, 2, 3]
    stream = sender.stream
    refused = sender.payload((stream, 2))

    def ack(**fields):
        sender.on_ack(String(data=json.dumps({"actor_id": stream} | fields)))

    ack(stored_through=1)
    # A rejection of a payload that is not this actor's copy (corrupted on the way) changes nothing.
    ack(stored_through=1, rejected=2, reason="digest", payload=payload_id(refused[:-1]))
    assert (stream, 2) in sender.unacked and not sender.rejecting
    ack(stored_through=2, rejected=2, reason="transitions state holds NaN", payload=payload_id(refused))
    assert (stream, 2) not in sender.unacked and (stream, 3) in sender.unacked
    assert sender.rejecting and sender.rejected_batches == 1 and "NaN" in sender.last_rejection
    kept = tmp_path / "spill" / "rejected" / safe_name(stream) / "000000000002.safetensors"
    assert kept.read_bytes() == refused and "NaN" in kept.with_name(kept.name + ".reason.txt").read_text()
    assert not (tmp_path / "spill" / safe_name(stream) / "000000000002.safetensors").exists()
    ack(stored_through=3)  # a later batch stored: no longer rejecting, the reason stays for the record
    assert not sender.rejecting and sender.unacked_count == 0 and sender.last_rejection
    # A restarted actor does not resend what was rejected.
    successor = TransitionSender(ros_node, "/actor", lambda: CONFIG.fingerprint(), tmp_path / "spill")
    assert successor.unacked_count == 0


def test_batches_sent_before_any_learner_existed_reach_the_learner_when_it_appears(tmp_path):
    """A learner coming back after a restart is a new reader: the backlog goes to it when it matches, not at the
    next resend period (here an hour, so only the appearance can have resent them)."""
    from hilserl.nodes.transitions import TransitionReceiver, TransitionSender
    from hilserl.replay.intake import TransitionIntake
    from intake_cases import transitions
    from rosutil import Probe, unique_domain_id, wait_for

    domain = unique_domain_id()
    actor = Probe(domain, "actor")
    learner = None
    try:
        sender = TransitionSender(actor.node, "/actor", lambda: CONFIG.fingerprint(), tmp_path / "spill",
                                  batch_size=3, resend_period=3600.0)
        for t in transitions(0, 9, CONFIG, ends=False):
            sender.add(t)  # published to nobody
        learner = Probe(domain, "learner")
        stored = []
        intake = TransitionIntake(tmp_path / "journal", lambda stream, batch: stored.extend(batch), lambda: CONFIG)
        TransitionReceiver(learner.node, intake)
        wait_for(lambda: getattr(intake.streams.get(sender.stream), "stored_through", 0) == 3, 60,
                 "the backlog stored by the learner that appeared")
        assert len(stored) == 9
    finally:
        actor.close()
        if learner is not None:
            learner.close()
