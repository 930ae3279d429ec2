"""Transitions from actors to the learner without loss: sequence numbers, a durable journal, acks, resends.

  /transitions      std_msgs/UInt8MultiArray, RELIABLE, VOLATILE, KEEP_LAST 100: one batch per message
  /transitions_ack  std_msgs/String JSON {"actor_id", "stored_through"}, RELIABLE, KEEP_LAST 100

The learner stores batch `seq` of a stream only right after `seq - 1` (so "stored through N" is one number),
writes it to its journal (fsync'd) before acknowledging, and replays the journal into its buffers after a
restart. The actor keeps every batch until acknowledged, resends unacknowledged ones every
`resend_period` seconds (a partial batch goes out within half of it), and keeps at most `memory_limit` bytes of them in memory, spilling the rest to disk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from hilserl.control.episode import Transition
from hilserl.durable import write_durably  # noqa: F401 - also imported from here
from hilserl.names import ACK_TOPIC, TRANSITIONS_TOPIC
from hilserl.nodes.qos import TRANSITIONS as STREAM
from hilserl.nodes.wire import bytes_to_msg_data
from hilserl.replay.wire import TransitionsError, ack_message, decode_transitions, encode_transitions



class TransitionSender:
    """Actor side. `add()` each transition; batches go out every `batch_size` transitions or episode end.

    Each actor process is its own stream (`<actor_id>#<session>`), numbered from 1, so a restarted actor
    never collides with what the learner stored from its previous life. Every batch is written to
    `spill_dir/<stream>/` before it is sent and deleted once acknowledged; at start-up the batches a
    previous life left there are resent under their old stream, so a killed actor loses nothing it recorded.
    Up to `memory_limit` bytes of unacknowledged batches are also kept in memory for cheap resends.
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
        self.in_memory = 0
        self.seq = 0
        self.recover_previous_lives()
        self.pub = node.create_publisher(UInt8MultiArray, TRANSITIONS_TOPIC, STREAM)
        node.create_subscription(String, ACK_TOPIC, self.on_ack, STREAM)
        node.create_timer(resend_period / 2, self.resend)

    def recover_previous_lives(self) -> None:
        for path in sorted(self.spill_root.glob("*/*.safetensors")):
            if path.parent == self.spill_dir:
                continue
            try:
                meta, _ = decode_transitions(path.read_bytes())
            except TransitionsError as err:
                self.node.get_logger().error(f"unreadable batch {path} left by an earlier run: {err}")
                continue
            self.unacked[(meta["actor_id"], meta["seq"])] = (path, None, 0.0)
        if self.unacked:
            self.node.get_logger().info(f"resending {len(self.unacked)} unacknowledged batches from an earlier run")

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

    def send(self, key: tuple[str, int]) -> None:
        path, payload, _ = self.unacked[key]
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(payload if payload is not None else path.read_bytes())
        self.pub.publish(msg)
        self.unacked[key] = (path, payload, time.monotonic())

    def on_ack(self, msg: String) -> None:
        try:
            ack = json.loads(msg.data)
            stream, through = ack["actor_id"], int(ack["stored_through"])
        except (ValueError, KeyError, TypeError):
            return
        for key in [k for k in self.unacked if k[0] == stream and k[1] <= through]:
            path, payload, _ = self.unacked.pop(key)
            path.unlink(missing_ok=True)
            self.in_memory -= len(payload) if payload is not None else 0
            if path.parent != self.spill_dir and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def resend(self) -> None:
        self.flush()  # a partial batch waits at most half a resend period
        now = time.monotonic()
        for key, (_, _, sent) in list(self.unacked.items())[:50]:
            if now - sent >= self.resend_period:
                self.send(key)

    @property
    def unacked_count(self) -> int:
        return len(self.unacked)


class TransitionReceiver:
    """Learner side. `on_batch(actor_id, transitions)` is called exactly once per stored batch, in order."""

    def __init__(self, node: Node, journal_dir: Path, on_batch: Callable[[str, list[Transition]], None],
                 expected_fingerprint: Callable[[], str]):
        self.node, self.on_batch, self.expected_fingerprint = node, on_batch, expected_fingerprint
        self.journal = Path(journal_dir)
        self.journal.mkdir(parents=True, exist_ok=True)
        self.stored_through: dict[str, int] = {}
        self.rejected = 0
        self.duplicates = 0
        self.replay_journal()
        self.ack_pub = node.create_publisher(String, ACK_TOPIC, STREAM)
        node.create_subscription(UInt8MultiArray, TRANSITIONS_TOPIC, self.on_message, STREAM)

    def replay_journal(self) -> int:
        """After a restart: feed every journalled batch back, in order, and resume the ack counters."""
        count = 0
        for actor_dir in sorted(p for p in self.journal.iterdir() if p.is_dir()):
            for path in sorted(actor_dir.glob("*.safetensors")):
                meta, transitions = decode_transitions(path.read_bytes())
                if meta["seq"] != self.stored_through.get(meta["actor_id"], 0) + 1:
                    break
                self.on_batch(meta["actor_id"], transitions)
                self.stored_through[meta["actor_id"]] = meta["seq"]
                count += len(transitions)
        if count:
            self.node.get_logger().info(f"journal replayed: {count} transitions from {self.stored_through}")
        return count

    def on_message(self, msg: UInt8MultiArray) -> None:
        try:
            meta, transitions = decode_transitions(msg.data)
        except TransitionsError as err:
            self.rejected += 1
            self.node.get_logger().error(f"transitions batch rejected: {err}", throttle_duration_sec=5.0)
            return
        actor, seq = meta["actor_id"], meta["seq"]
        if meta["config_fingerprint"] != self.expected_fingerprint():
            self.rejected += 1
            self.node.get_logger().error(f"transitions from {actor} were recorded with policy config "
                                         f"{meta['config_fingerprint']}, the learner trains "
                                         f"{self.expected_fingerprint()}: not stored", throttle_duration_sec=5.0)
            return
        through = self.stored_through.get(actor, 0)
        if seq == through + 1:
            path = self.journal / safe_name(actor) / f"{seq:012d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(path, bytes(msg.data))
            self.on_batch(actor, transitions)
            self.stored_through[actor] = through = seq
        elif seq <= through:
            self.duplicates += 1
        # Out of order (an earlier batch missing): not stored; the actor resends from the gap.
        self.ack_pub.publish(String(data=ack_message(actor, through)))


def safe_name(actor_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in actor_id.strip("/")) or "actor"
