"""Transitions from actors to the learner without loss: sequence numbers, a durable journal, acks, resends.

  /transitions      std_msgs/UInt8MultiArray, RELIABLE, VOLATILE, KEEP_LAST 100: one batch per message
  /transitions_ack  std_msgs/String JSON {"actor_id", "stored_through"}, RELIABLE, KEEP_LAST 100

The learner stores batch `seq` of an actor only right after `seq - 1` (so "stored through N" is one number),
writes it to its journal (fsync'd) before acknowledging, and replays the journal into its buffers after a
restart. The actor keeps every batch until acknowledged, resends unacknowledged ones every
`resend_period` seconds (a partial batch goes out within half of it), and keeps at most `memory_limit` bytes of them in memory, spilling the rest to disk.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt8MultiArray

from hilserl.control.episode import Transition
from hilserl.nodes.wire import bytes_to_msg_data
from hilserl.replay.wire import TransitionsError, ack_message, decode_transitions, encode_transitions

TRANSITIONS_TOPIC, ACK_TOPIC = "/transitions", "/transitions_ack"
STREAM = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST, depth=100)


class TransitionSender:
    """Actor side. `add()` each transition; batches go out every `batch_size` transitions or episode end."""

    def __init__(self, node: Node, actor_id: str, config_fingerprint: Callable[[], str], spill_dir: Path,
                 batch_size: int = 16, resend_period: float = 2.0, memory_limit: int = 64 << 20):
        self.node, self.actor_id, self.fingerprint = node, actor_id, config_fingerprint
        self.spill_dir = Path(spill_dir)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size, self.resend_period, self.memory_limit = batch_size, resend_period, memory_limit
        self.pending: list[Transition] = []
        self.unacked: OrderedDict[int, tuple[bytes | Path, float]] = OrderedDict()  # seq -> (payload, sent at)
        self.in_memory = 0
        self.seq = 0
        self.acked_through = 0
        self.pub = node.create_publisher(UInt8MultiArray, TRANSITIONS_TOPIC, STREAM)
        node.create_subscription(String, ACK_TOPIC, self.on_ack, STREAM)
        node.create_timer(resend_period / 2, self.resend)

    def add(self, transition: Transition) -> None:
        self.pending.append(transition)
        if len(self.pending) >= self.batch_size or transition.terminated or transition.truncated:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.seq += 1
        payload = encode_transitions(self.pending, actor_id=self.actor_id, seq=self.seq,
                                     config_fingerprint=self.fingerprint())
        self.pending = []
        if self.in_memory + len(payload) > self.memory_limit:  # bounded memory: the rest waits on disk
            path = self.spill_dir / f"{self.seq:012d}.safetensors"
            path.write_bytes(payload)
            self.unacked[self.seq] = (path, 0.0)
        else:
            self.in_memory += len(payload)
            self.unacked[self.seq] = (payload, 0.0)
        self.send(self.seq)

    def send(self, seq: int) -> None:
        payload, _ = self.unacked[seq]
        data = payload.read_bytes() if isinstance(payload, Path) else payload
        msg = UInt8MultiArray()
        msg.data = bytes_to_msg_data(data)
        self.pub.publish(msg)
        self.unacked[seq] = (payload, time.monotonic())

    def on_ack(self, msg: String) -> None:
        try:
            ack = json.loads(msg.data)
            if ack["actor_id"] != self.actor_id:
                return
            through = int(ack["stored_through"])
        except (ValueError, KeyError, TypeError):
            return
        if through < self.acked_through:  # a learner that lost state: send everything unacknowledged now
            self.node.get_logger().warning(f"learner acknowledges only through {through}; resending")
        self.acked_through = through
        for seq in [s for s in self.unacked if s <= through]:
            payload, _ = self.unacked.pop(seq)
            if isinstance(payload, Path):
                payload.unlink(missing_ok=True)
            else:
                self.in_memory -= len(payload)

    def resend(self) -> None:
        self.flush()  # a partial batch waits at most half a resend period
        now = time.monotonic()
        for seq, (_, sent) in list(self.unacked.items())[:50]:
            if now - sent >= self.resend_period:
                self.send(seq)

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


def write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
