"""Transitions from actors to the learner without loss: sequence numbers, a durable journal, acks, resends.

  /transitions      std_msgs/UInt8MultiArray, RELIABLE, VOLATILE, KEEP_LAST 100: one batch per message
  /transitions_ack  std_msgs/String JSON, RELIABLE, KEEP_LAST 100: {"actor_id", "stored_through"}, and for a
                    refused payload also {"rejected": seq or null, "reason", "kind", "payload": its payload_id}

The learner checks a batch completely, then stores batch `seq` of a stream right after `seq - 1` (so
"settled through N" is one number; early batches wait in a bounded window), writes it to its journal
(fsync'd) before acknowledging, and replays the journal into its buffers after a restart
(hilserl.replay.intake). The actor keeps every batch until acknowledged, resends unacknowledged ones every
`resend_period` seconds (a partial batch goes out within half of it), at once when an ack shows a gap or a
learner appears on either topic, and keeps at most `memory_limit` bytes of them in memory, spilling the rest
to disk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from hilserl.control.episode import Transition
from hilserl.durable import write_durably
from hilserl.names import ACK_TOPIC, TRANSITIONS_TOPIC
from hilserl.nodes.qos import TRANSITIONS as STREAM
from hilserl.nodes.wire import bytes_to_msg_data
from hilserl.policies.config import PolicyConfig
from hilserl.replay.intake import TransitionIntake, safe_name
from hilserl.replay.wire import TransitionsError, ack_message, encode_transitions, payload_id, read_transitions

RESEND_BURST = 50  # batches resent per half resend period at most
GAP_RESEND = 32  # batches after a gap resent at once when an ack shows it
GAP_RESEND_AGE = 0.5  # seconds: a batch sent more recently than this may still be on its way
ACK_LOG = 10_000  # (seq, first sent, acknowledged) of the newest acknowledged batches, for latency figures


class TransitionSender:
    """Actor side. `add()` each transition; batches go out every `batch_size` transitions or episode end.

    Each actor process is its own stream (`<actor_id>#<session>`), numbered from 1, so a restarted actor
    never collides with what the learner stored from its previous life. Every batch is written to
    `spill_dir/<stream>/` before it is sent and deleted once acknowledged; at start-up the batches a
    previous life left there are resent under their old stream, so a killed actor loses nothing it recorded.
    Up to `memory_limit` bytes of unacknowledged batches are also kept in memory for cheap resends.

    An ack that shows a gap (the learner restarted, or missed a batch) has the batches after the gap resent
    at once instead of at the next resend period, and so is the whole backlog (up to `RESEND_BURST` batches)
    when a learner appears on `/transitions` or `/transitions_ack`. A batch the learner rejects (the rejection names this very
    payload) is not resent: it moves to `spill_dir/rejected/<stream>/` with a `.reason.txt`, and
    `last_rejection` holds the reason; `rejecting` stays true until a later batch is stored.
    """

    def __init__(self, node: Node, actor_id: str, config_fingerprint: Callable[[], str], spill_dir: Path,
                 batch_size: int = 16, resend_period: float = 2.0, memory_limit: int = 64 << 20):
        self.node, self.fingerprint = node, config_fingerprint
        self.stream = f"{actor_id}#{uuid.uuid4().hex[:8]}"
        self.spill_root = Path(spill_dir)
        self.spill_dir = self.spill_root / safe_name(self.stream)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size, self.resend_period, self.memory_limit = batch_size, resend_period, memory_limit
        self.pending: list[Transition] = []
        # (stream, seq) -> (path on disk, payload kept in memory or None, last sent)
        self.unacked: OrderedDict[tuple[str, int], tuple[Path, bytes | None, float]] = OrderedDict()
        self.first_sent: dict[tuple[str, int], float] = {}
        self.ack_delays: deque[tuple[int, float, float]] = deque(maxlen=ACK_LOG)  # (seq, first sent, acked)
        self.in_memory = 0
        self.seq = 0
        self.rejected_batches = 0
        self.last_rejection = ""
        self.rejecting = False  # the newest batch the learner settled was rejected
        self.last_rejected: tuple[str, int] | None = None
        self.recover_previous_lives()
        # A learner (re)appearing on either topic has the backlog resent at once, not at the next resend period.
        self.pub = node.create_publisher(UInt8MultiArray, TRANSITIONS_TOPIC, STREAM,
                                         event_callbacks=PublisherEventCallbacks(matched=self.on_matched))
        node.create_subscription(String, ACK_TOPIC, self.on_ack, STREAM,
                                 event_callbacks=SubscriptionEventCallbacks(matched=self.on_matched))
        node.create_timer(resend_period / 2, self.resend)

    def recover_previous_lives(self) -> None:
        for path in sorted(self.spill_root.glob("*/*.safetensors")):
            if path.parent in (self.spill_dir, self.rejected_root):
                continue
            try:
                meta, _ = read_transitions(path.read_bytes())
            except TransitionsError as err:
                self.node.get_logger().error(f"unreadable batch {path} left by an earlier run: {err}")
                continue
            self.unacked[(meta["actor_id"], int(meta["seq"]))] = (path, None, 0.0)
        if self.unacked:
            self.node.get_logger().info(f"resending {len(self.unacked)} unacknowledged batches from an earlier run")

    @property
    def rejected_root(self) -> Path:
        return self.spill_root / "rejected"

    def add(self, transition: Transition) -> None:
        self.pending.append(transition)
        if len(self.pending) >= self.batch_size or transition.terminated or transition.truncated:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.seq += 1
        payload = encode_transitions(self.pending, actor_id=self.stream, seq=self.seq,
                                     config_fingerprint=self.fingerprint())
        self.pending = []
        path = self.spill_dir / f"{self.seq:012d}.safetensors"
        write_durably(path, payload)
        keep = self.in_memory + len(payload) <= self.memory_limit  # beyond the limit it waits on disk only
        self.in_memory += len(payload) if keep else 0
        self.unacked[(self.stream, self.seq)] = (path, payload if keep else None, 0.0)
        self.send((self.stream, self.seq))

    def payload(self, key: tuple[str, int]) -> bytes:
        path, payload, _ = self.unacked[key]
        return payload if payload is not None else path.read_bytes()

    def send(self, key: tuple[str, int]) -> None:
        path, payload, _ = self.unacked[key]
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(self.payload(key))
        self.pub.publish(msg)
        now = time.monotonic()
        self.unacked[key] = (path, payload, now)
        self.first_sent.setdefault(key, now)

    def on_ack(self, msg: String) -> None:
        try:
            ack = json.loads(msg.data)
            stream, through = ack["actor_id"], int(ack["stored_through"])
            rejected = ack.get("rejected")
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if isinstance(rejected, int) and (stream, rejected) in self.unacked:
            self.on_rejection((stream, rejected), str(ack.get("reason", "")), str(ack.get("payload", "")))
        now = time.monotonic()
        for key in [k for k in self.unacked if k[0] == stream and k[1] <= through]:
            self.forget(key)
            if self.last_rejected and key[0] == self.last_rejected[0] and key[1] > self.last_rejected[1]:
                self.rejecting = False  # a later batch was stored
            self.ack_delays.append((key[1], self.first_sent.pop(key, now), now))
        self.resend_gap(stream, through, now)

    def on_rejection(self, key: tuple[str, int], reason: str, refused_payload: str) -> None:
        """The learner refused a batch. Only if it was this very payload (not a copy corrupted on the way)."""
        if payload_id(self.payload(key)) != refused_payload:
            return
        folder = self.rejected_root / self.unacked[key][0].parent.name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.unacked[key][0].name
        write_durably(target, self.payload(key))
        write_durably(target.with_name(target.name + ".reason.txt"), f"{reason}\n".encode())
        self.forget(key)
        self.first_sent.pop(key, None)
        self.rejected_batches += 1
        self.last_rejection, self.last_rejected, self.rejecting = reason, key, True
        self.node.get_logger().error(f"the learner rejected transitions batch {key[1]} (kept in {target}): {reason}")

    def forget(self, key: tuple[str, int]) -> None:
        path, payload, _ = self.unacked.pop(key)
        path.unlink(missing_ok=True)
        self.in_memory -= len(payload) if payload is not None else 0
        if path.parent != self.spill_dir and path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()

    def on_matched(self, info) -> None:
        """A reader of our batches or a writer of acks appeared (a learner came back): resend the backlog now.

        Batches published before the match went nowhere (the topic is volatile). Both topics match within a
        moment of each other, so the backlog may go out twice; the learner answers a resend as a duplicate.
        """
        if info.current_count_change > 0:
            for key in list(self.unacked)[:RESEND_BURST]:
                self.send(key)

    def resend_gap(self, stream: str, through: int, now: float) -> None:
        """The learner has everything up to `through`: resend what follows that was sent a while ago."""
        for key in [k for k in self.unacked if k[0] == stream][:GAP_RESEND]:
            if now - self.unacked[key][2] >= GAP_RESEND_AGE:
                self.send(key)

    def resend(self) -> None:
        self.flush()  # a partial batch waits at most half a resend period
        now = time.monotonic()
        due = [key for key, (_, _, sent) in self.unacked.items() if now - sent >= self.resend_period]
        for key in due[:RESEND_BURST]:
            self.send(key)

    @property
    def unacked_count(self) -> int:
        return len(self.unacked)


class TransitionReceiver:
    """Learner side: wires `/transitions` to a `TransitionIntake` and publishes its answers on the ack topic.

    `on_batch(actor_id, transitions)` is called exactly once per stored batch, in order. Nothing a sender puts
    on the topic escapes the callback: a payload that cannot be stored is answered with a rejection, and any
    other failure (a full disk) is logged and left unanswered, so its sender resends it.
    """

    def __init__(self, node: Node, intake: TransitionIntake):
        self.node, self.intake = node, intake
        self.ack_pub = node.create_publisher(String, ACK_TOPIC, STREAM)
        node.create_subscription(UInt8MultiArray, TRANSITIONS_TOPIC, self.on_message, STREAM)

    @property
    def stored_through(self) -> dict[str, int]:
        return self.intake.stored_through

    def on_message(self, msg: UInt8MultiArray) -> None:
        try:
            answer = self.intake.offer(msg.data)
        except Exception as err:  # noqa: BLE001 - e.g. the journal's disk is full: no ack, the sender resends
            self.node.get_logger().error(f"transitions batch not stored: {type(err).__name__}: {err}",
                                         throttle_duration_sec=5.0)
            return
        if answer.is_rejection:
            self.node.get_logger().warning(f"transitions batch {answer.rejected} of {answer.stream[:80]!r} "
                                           f"rejected ({answer.kind}): {answer.reason}", throttle_duration_sec=5.0)
        self.ack_pub.publish(String(data=ack_message(**answer.fields())))
