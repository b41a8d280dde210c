"""The queue's files: atomic, fsynced writes of messages and envelopes.

Every function here blocks on the disk; the queue service calls them in its
thread pool, the CLI calls them directly.  See the package docstring for the
layout and the crash-safety invariants.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from mailsuite.store.durable import FILE_MODE, fsync_dir, make_dirs

#: Recipient states.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

COPY_CHUNK = 256 * 1024


@dataclass
class RecipientState:
    """What the queue knows about one recipient of one message."""

    address: str
    status: str = PENDING
    #: Last reply for this recipient: basic code, enhanced code, text (remote's or ours).
    code: int | None = None
    enhanced: str = ""
    text: str = ""
    #: The host that gave the reply ("" when no server answered).
    remote_mta: str = ""
    #: The command the reply answered ("RCPT TO", "end of DATA"...); "" for our own errors.
    stage: str = ""

    @property
    def diagnostic(self) -> str:
        """The reply as a DSN quotes it: the remote server's verbatim, ours as "code enhanced text"."""
        if self.code is None:
            return self.text
        if self.text[:3] == str(self.code):
            return self.text
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def domain(self) -> str:
        """The domain part, lower-cased (routing groups by it)."""
        return self.address.rpartition("@")[2].lower()


@dataclass
class QueueEntry:
    """One queued message's envelope and delivery state (the JSON file)."""

    id: str
    sender: str
    recipients: list[RecipientState]
    arrival: float
    next_attempt: float
    size: int = 0
    attempts: int = 0
    last_error: str = ""
    last_attempt: float = 0.0
    smtputf8: bool = False
    body_8bit: bool = False
    #: A delay warning DSN was sent already.
    warned: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def pending(self) -> list[RecipientState]:
        """Recipients still to be delivered."""
        return [r for r in self.recipients if r.status == PENDING]

    def to_json(self) -> str:
        """The file form."""
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "QueueEntry":
        """Parse the file form (ValueError/KeyError/TypeError on a damaged file)."""
        raw: dict[str, Any] = json.loads(text)
        raw["recipients"] = [RecipientState(**r) for r in raw["recipients"]]
        return cls(**raw)


def new_id(now: float | None = None) -> str:
    """A queue id: sortable by arrival (hex milliseconds) plus randomness; safe as a file name."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:011x}{secrets.token_hex(5)}"


def valid_id(queue_id: str) -> bool:
    """True for ids new_id() can produce (the CLI checks user input with it)."""
    return 8 <= len(queue_id) <= 40 and all(c in "0123456789abcdef" for c in queue_id)


class Spool:
    """The ``<data_root>/queue`` directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.messages = self.root / "messages"
        self.envelopes = self.root / "envelopes"
        self.tmp = self.root / "tmp"
        self.control = self.root / "control"
        self.lock_path = self.root / "lock"
        self._lock_fd: int | None = None

    def create(self) -> None:
        """Make the directories (idempotent), 0700 like the mailboxes: the queue holds other people's mail."""
        for d in (self.messages, self.envelopes, self.tmp, self.control):
            make_dirs(d)

    # -- the running server's lock --------------------------------------
    def try_lock(self) -> bool:
        """Take the spool's exclusive lock without waiting; False if another process holds it."""
        self.create()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock taken by try_lock()."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- paths -----------------------------------------------------------
    def message_path(self, queue_id: str) -> Path:
        """Where the message bytes of an entry live."""
        return self.messages / queue_id

    def envelope_path(self, queue_id: str) -> Path:
        """Where the envelope of an entry lives."""
        return self.envelopes / f"{queue_id}.json"

    # -- writing ---------------------------------------------------------
    def add(self, entry: QueueEntry, source: BinaryIO, header_prefix: bytes = b"") -> QueueEntry:
        """Write message then envelope, each fsynced, the envelope last (it commits the entry).

        Sets ``entry.size`` to the bytes written.
        """
        self.create()
        tmp_msg = self.tmp / f"{entry.id}.msg"
        size = 0
        with open(os.open(tmp_msg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as out:  # 0600 like Maildir files
            if header_prefix:
                out.write(header_prefix)
                size += len(header_prefix)
            while True:
                chunk = source.read(COPY_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_msg, self.message_path(entry.id))
        fsync_dir(self.messages)
        entry.size = size
        self.save(entry)
        return entry

    def save(self, entry: QueueEntry) -> None:
        """Replace an envelope atomically (tmp, fsync, rename, fsync directory)."""
        tmp = self.tmp / f"{entry.id}.json"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w", encoding="utf-8") as out:
            out.write(entry.to_json())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.envelope_path(entry.id))
        fsync_dir(self.envelopes)

    def remove(self, queue_id: str) -> bool:
        """Delete an entry: envelope first (that takes it out of the queue), then the message."""
        try:
            os.unlink(self.envelope_path(queue_id))
        except FileNotFoundError:
            return False
        fsync_dir(self.envelopes)
        try:
            os.unlink(self.message_path(queue_id))
        except FileNotFoundError:
            pass
        return True

    # -- reading ---------------------------------------------------------
    def load(self, queue_id: str) -> QueueEntry | None:
        """One envelope, or None when it is not (or no longer) queued."""
        try:
            text = self.envelope_path(queue_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return QueueEntry.from_json(text)

    def ids(self) -> list[str]:
        """Ids of every queued entry, oldest first."""
        try:
            names = os.listdir(self.envelopes)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json"))

    def entries(self) -> Iterator[QueueEntry]:
        """Every readable entry, oldest first (entries removed meanwhile are skipped)."""
        for queue_id in self.ids():
            try:
                entry = self.load(queue_id)
            except (ValueError, KeyError, TypeError):
                continue
            if entry is not None:
                yield entry

    def read_header(self, queue_id: str, limit: int = 1024 * 1024) -> bytes:
        """The header block of a queued message (up to the blank line, at most ``limit`` bytes)."""
        out = bytearray()
        with open(self.message_path(queue_id), "rb") as f:
            for line in f:
                out += line
                if line in (b"\r\n", b"\n") or len(out) >= limit:
                    break
        return bytes(out)

    # -- start-up ----------------------------------------------------------
    def recover(self) -> tuple[list[QueueEntry], list[str]]:
        """Clean crash debris and return (entries to resume, ids of damaged envelopes set aside).

        Removes ``tmp/`` files and message files without an envelope (their
        enqueue never committed).  Envelopes whose message is missing or
        whose JSON cannot be read are renamed to ``<id>.json.damaged`` and
        reported, never silently dropped.
        """
        self.create()
        for name in os.listdir(self.tmp):
            try:
                os.unlink(self.tmp / name)
            except FileNotFoundError:
                pass
        committed = set(self.ids())
        for name in os.listdir(self.messages):
            if name not in committed:
                try:
                    os.unlink(self.messages / name)
                except FileNotFoundError:
                    pass
        entries: list[QueueEntry] = []
        damaged: list[str] = []
        for queue_id in sorted(committed):
            try:
                entry = self.load(queue_id)
                ok = entry is not None and self.message_path(queue_id).exists()
            except (ValueError, KeyError, TypeError):
                entry, ok = None, False
            if ok and entry is not None:
                entries.append(entry)
            else:
                damaged.append(queue_id)
                os.replace(self.envelope_path(queue_id), self.envelopes / f"{queue_id}.json.damaged")
        return entries, damaged

    # -- control requests (CLI -> running server) -------------------------
    def request(self, action: str, queue_id: str | None = None) -> Path:
        """Drop a control file (``flush-all``, ``flush-<id>``, ``delete-<id>``); returns its path."""
        self.create()
        name = f"{action}-{queue_id}" if queue_id else f"{action}-all"
        path = self.control / name
        path.write_bytes(b"")
        return path

    def take_requests(self) -> list[tuple[str, str | None]]:
        """Read and remove pending control files: [(action, id or None for all)]."""
        try:
            names = sorted(os.listdir(self.control))
        except FileNotFoundError:
            return []
        out: list[tuple[str, str | None]] = []
        for name in names:
            action, _, target = name.partition("-")
            try:
                os.unlink(self.control / name)
            except FileNotFoundError:
                continue
            if action in ("flush", "delete") and target:
                out.append((action, None if target == "all" else target))
        return out
