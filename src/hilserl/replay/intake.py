"""The learner's side of `/transitions`, without ROS: validate, journal, store in order, answer.

Every payload gets one `Answer`: an ack ("stream S is settled through N") or a rejection (which payload,
why). A batch is checked completely (`wire.read_transitions` + `wire.validate` against the learner's policy
config) before anything is written, so only a batch the buffers will take as sent reaches the journal.

Sequencing. Batch `seq` of a stream is stored right after `seq - 1`, so one number acknowledges a stream.
Batches that arrive early (up to `WINDOW` ahead, at most `HELD_BYTES` in all) are held in memory and stored
when the gap fills, so a stream catches up as soon as its missing batch is resent. An intact batch that fails
validation settles its sequence number as rejected: a small tombstone (`<seq>.rejected`) is journalled
in its place, so the stream goes on with its next batch and a restart knows it too. A payload whose stream
and sequence cannot be believed (corrupted, unreadable, out-of-range ids) is answered and forgotten.

Journal: `<journal>/<safe_name(stream)>/<seq:012d>.safetensors` (the payload as received, fsync'd), with
the stream id in `stream.txt`. On a restart `replay()` feeds it back in order; an entry that cannot be
decoded or stored is moved to `<quarantine>/` with a `.reason.txt` beside it, tombstoned, and replay goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hilserl.control.episode import Transition
from hilserl.durable import write_durably
from hilserl.policies.config import PolicyConfig
from hilserl.replay.wire import (MAX_STREAM_CHARS, TransitionsError, payload_id, read_transitions, to_transitions,
                                 validate)

WINDOW = 256  # batches a stream may run ahead of its gap and still be held
HELD_BYTES = 256 << 20  # early batches held in memory, all streams together
REMEMBERED = 1024  # per stream, the digests of the newest settled batches: tells a resend from a forgery
STREAM_FILE = "stream.txt"
NAME_PREFIX_CHARS = 48


def safe_name(stream: str) -> str:
    """A folder name for a stream id, one to one: a readable prefix plus a hash of the whole id.

    Whatever the id's characters or length, the name is short, portable and distinct from every other id's
    (`/a#1` and `a_1` share a prefix but not a hash).
    """
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", stream.strip("/"))[:NAME_PREFIX_CHARS] or "stream"
    return f"{readable}-{hashlib.sha256(stream.encode('utf-8', 'surrogatepass')).hexdigest()[:20]}"


@dataclass(frozen=True)
class Answer:
    """What to publish on the ack topic for one payload."""

    stream: str
    stored_through: int
    rejected: int | None = None  # the refused sequence number (None for an ack, or when not believable)
    reason: str = ""
    kind: str = ""
    payload: str = ""  # payload_id of the refused payload

    @property
    def is_rejection(self) -> bool:
        return bool(self.reason)

    def fields(self) -> dict:
        ack = {"actor_id": self.stream, "stored_through": self.stored_through}
        if self.is_rejection:
            ack |= {"rejected": self.rejected, "reason": self.reason, "kind": self.kind, "payload": self.payload}
        return ack


@dataclass
class StreamState:
    stored_through: int = 0
    held: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # early valid batches: seq -> (payload, digest)
    rejected_ahead: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # seq -> (digest, kind, reason)
    # seq -> (digest, kind, reason); kind "" = stored. Bounded to REMEMBERED entries.
    settled: OrderedDict[int, tuple[str, str, str]] = field(default_factory=OrderedDict)


class TransitionIntake:
    """`offer(payload) -> Answer`; `store(stream, transitions)` runs exactly once per stored batch, in order."""

    def __init__(self, journal_dir: Path, store: Callable[[str, list[Transition]], None],
                 config: Callable[[], PolicyConfig], quarantine_dir: Path | None = None, log=print,
                 joints: Callable[[], int | None] = lambda: None):
        """`joints()`: the joint count already stored, for a policy whose config does not fix it (else None)."""
        self.journal = Path(journal_dir)
        self.quarantine = Path(quarantine_dir) if quarantine_dir else self.journal.parent / "quarantine"
        self.store, self.config, self.joints, self.log = store, config, joints, log
        self.journal.mkdir(parents=True, exist_ok=True)
        self.streams: dict[str, StreamState] = {}
        self.held_bytes = 0
        self.rejections_by_reason: Counter[str] = Counter()
        self.last_rejection = ""
        self.last_rejection_time = 0.0  # monotonic
        self.quarantined: list[str] = []  # "<file>: <reason>" for each entry moved aside by this life
        self.duplicates = 0

    @property
    def stored_through(self) -> dict[str, int]:
        return {stream: s.stored_through for stream, s in self.streams.items()}

    @property
    def rejected(self) -> int:
        return sum(self.rejections_by_reason.values())

    # -- live payloads ---------------------------------------------------------------------------
    def offer(self, payload) -> Answer:
        """Check, journal and store one payload; never raises for anything a sender can put in it."""
        try:
            meta, tensors = read_transitions(payload)
        except TransitionsError as err:
            return self._refuse(self._claimed_stream(payload), None, err, payload)
        stream, digest = meta["actor_id"], meta["digest"]
        problem = None
        try:
            seq = validate(meta, tensors, self.config(), self.joints()).seq
        except TransitionsError as err:
            if err.kind in ("stream_id", "sequence"):  # the id itself is wrong: there is no stream to settle
                return self._refuse(stream[:MAX_STREAM_CHARS], None, err, payload)
            problem, seq = err, int(meta["seq"])  # validate checked the sequence number before the rest
        state = self.streams.setdefault(stream, StreamState())
        known = self._known(state, seq)
        if known is not None or seq <= state.stored_through:
            return self._answer_again(stream, seq, digest, known, problem, payload)
        if seq > state.stored_through + WINDOW:  # too far ahead to settle now: its sender resends it later
            return self._refuse(stream, None, problem, payload) if problem else self._ack(stream)
        if problem is not None:
            self._tombstone(stream, state, seq, (digest, problem.kind, str(problem)))
            return self._refuse(stream, seq, problem, payload)
        if seq > state.stored_through + 1:
            if self.held_bytes + len(payload) <= HELD_BYTES:
                state.held[seq] = (bytes(payload), digest)
                self.held_bytes += len(payload)
            return self._ack(stream)
        self._journal_and_store(stream, state, seq, bytes(payload), digest, tensors)
        self._drain(stream, state)
        return self._ack(stream)

    @staticmethod
    def _known(state: StreamState, seq: int) -> tuple[str, str, str] | None:
        """(digest, rejection kind or "", reason) of what this stream already has for `seq`, if known."""
        if seq in state.held:
            return state.held[seq][1], "", ""
        return state.rejected_ahead.get(seq) or state.settled.get(seq)

    def _answer_again(self, stream: str, seq: int, digest: str, known: tuple[str, str, str] | None,
                      problem: TransitionsError | None, payload) -> Answer:
        """A sequence number this stream already used: a resend gets the same answer, other content a rejection."""
        if known is None:  # settled too long ago to compare
            return self._refuse(stream, seq, problem, payload) if problem else self._ack(stream, duplicate=True)
        if known[0] != digest:
            return self._refuse(stream, seq, TransitionsError(
                f"sequence {seq} of this stream was already received with other content", kind="sequence"), payload)
        if known[1]:
            return self._refuse(stream, seq, TransitionsError(known[2], kind=known[1]), payload)
        return self._ack(stream, duplicate=True)

    def _tombstone(self, stream: str, state: StreamState, seq: int, outcome: tuple[str, str, str]) -> None:
        """Settle `seq` as rejected, durably, so the stream goes on with its next batch (now or after a restart)."""
        digest, kind, reason = outcome
        record = {"stream": stream, "seq": seq, "digest": digest, "kind": kind, "reason": reason}
        write_durably(self._stream_dir(stream) / f"{seq:012d}.rejected", json.dumps(record).encode())
        if seq == state.stored_through + 1:
            self._settle(state, seq, outcome)
            self._drain(stream, state)
        else:
            state.rejected_ahead[seq] = outcome

    def _journal_and_store(self, stream: str, state: StreamState, seq: int, payload: bytes, digest: str,
                           tensors=None) -> None:
        if tensors is None:
            _, tensors = read_transitions(payload)
        transitions = to_transitions(tensors)
        write_durably(self._stream_dir(stream) / f"{seq:012d}.safetensors", payload)
        self.store(stream, transitions)
        self._settle(state, seq, (digest, "", ""))

    def _drain(self, stream: str, state: StreamState) -> None:
        """Store the early batches (and pass the rejected ones) that the newest settled batch made next."""
        while True:
            nxt = state.stored_through + 1
            if nxt in state.held:
                payload, digest = state.held.pop(nxt)
                self.held_bytes -= len(payload)
                self._journal_and_store(stream, state, nxt, payload, digest)
            elif nxt in state.rejected_ahead:
                self._settle(state, nxt, state.rejected_ahead.pop(nxt))
            else:
                return

    def _settle(self, state: StreamState, seq: int, outcome: tuple[str, str, str]) -> None:
        state.stored_through = seq
        state.settled[seq] = outcome
        while len(state.settled) > REMEMBERED:
            state.settled.popitem(last=False)

    def _ack(self, stream: str, duplicate: bool = False) -> Answer:
        self.duplicates += duplicate
        return Answer(stream, self.streams[stream].stored_through)

    def _refuse(self, stream: str, seq: int | None, err: TransitionsError, payload) -> Answer:
        self.rejections_by_reason[err.kind] += 1
        self.last_rejection, self.last_rejection_time = f"{err.kind}: {err}", time.monotonic()
        state = self.streams.get(stream)
        return Answer(stream, state.stored_through if state else 0, rejected=seq, reason=str(err), kind=err.kind,
                      payload=payload_id(payload))

    @staticmethod
    def _claimed_stream(payload) -> str:
        """The stream id a payload that failed to read claims, if its header says one: for the answer only."""
        try:
            head = bytes(memoryview(payload).cast("B")[:64 << 10])
            match = re.search(rb'"actor_id":"([^"\\]{1,200})"', head)
            return match.group(1).decode("utf-8", "replace") if match else ""
        except (TypeError, ValueError):
            return ""

    def _stream_dir(self, stream: str) -> Path:
        path = self.journal / safe_name(stream)
        if not (path / STREAM_FILE).is_file():
            path.mkdir(parents=True, exist_ok=True)
            write_durably(path / STREAM_FILE, stream.encode())
        return path

    # -- restart ---------------------------------------------------------------------------------
    def replay(self) -> int:
        """Feed every journalled batch back, in order per stream; quarantine what cannot be. Returns transitions."""
        count = 0
        for folder in sorted(p for p in self.journal.iterdir() if p.is_dir()):
            count += self._replay_stream(folder)
        return count

    def _replay_stream(self, folder: Path) -> int:
        entries: dict[int, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix in (".safetensors", ".rejected") and path.stem.isdigit():
                entries.setdefault(int(path.stem), path)
                if path.suffix == ".rejected":
                    entries[int(path.stem)] = path  # a tombstone wins over a payload of the same number
            elif path.name != STREAM_FILE:
                self._quarantine(path, folder, "not a journal entry")
        stream = self._folder_stream(folder, entries)
        if stream is None:
            for path in entries.values():
                self._quarantine(path, folder, "its stream is unknown: no stream.txt and no readable batch")
            return 0
        state = self.streams.setdefault(stream, StreamState())
        count = 0
        for seq in sorted(entries):
            if seq != state.stored_through + 1:
                self.log(f"journal {folder.name}: batches from {seq} on follow a gap after {state.stored_through}; "
                         "left for the stream to resend")
                break
            path = entries[seq]
            try:
                if path.suffix == ".rejected":
                    record = json.loads(path.read_text())
                    self._settle(state, seq, (str(record["digest"]), str(record["kind"]), str(record["reason"])))
                    continue
                meta, tensors = read_transitions(path.read_bytes())
                batch = validate(meta, tensors, self.config(), self.joints())
                if (batch.stream, batch.seq) != (stream, seq):
                    raise TransitionsError(f"holds batch {batch.seq} of stream {batch.stream!r}", kind="journal")
                transitions = to_transitions(tensors)
                self.store(stream, transitions)
            except Exception as err:  # noqa: BLE001 - whatever it is, this entry must not stop the learner again
                reason = f"{type(err).__name__}: {err}"
                self._quarantine(path, folder, reason)
                tombstone = {"stream": stream, "seq": seq, "digest": "", "kind": "quarantined",
                             "reason": f"quarantined on journal replay: {reason}"}
                write_durably(folder / f"{seq:012d}.rejected", json.dumps(tombstone).encode())
                self._settle(state, seq, ("", "quarantined", tombstone["reason"]))
                continue
            self._settle(state, seq, (meta["digest"], "", ""))
            count += len(transitions)
        return count

    def _folder_stream(self, folder: Path, entries: dict[int, Path]) -> str | None:
        try:
            return (folder / STREAM_FILE).read_text()
        except (OSError, UnicodeDecodeError):
            pass
        for path in entries.values():  # a journal written before stream.txt existed
            try:
                stream = read_transitions(path.read_bytes())[0]["actor_id"] if path.suffix == ".safetensors" \
                    else json.loads(path.read_text())["stream"]
            except Exception:  # noqa: BLE001 - unreadable: try the next entry
                continue
            write_durably(folder / STREAM_FILE, stream.encode())
            return stream
        return None

    def _quarantine(self, path: Path, folder: Path, reason: str) -> None:
        self.quarantine.mkdir(parents=True, exist_ok=True)
        target = self.quarantine / f"{folder.name}__{path.name}"
        shutil.move(str(path), target)
        write_durably(target.with_name(target.name + ".reason.txt"), f"{reason}\n".encode())
        self.quarantined.append(f"{folder.name}/{path.name}: {reason}")
        self.log(f"journal entry {folder.name}/{path.name} quarantined to {target}: {reason}")
