"""In-memory stand-ins for the parts of the store and auth that a POP3 session touches.

Used only by the StringTransport unit tests of the state machine; the
integration tests run the real server, store and authenticator.  They keep
the documented contracts: messages() is a snapshot that only refresh()
changes, open_reader fails with NoSuchMessage for an expunged UID (its reader
is the in-memory store's BytesReader), expunge
removes only \\Deleted messages among the given UIDs, the lock is exclusive.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer

from mailsuite.errors import AuthenticationFailed, LoginThrottled, MailboxInUse, NoSuchMessage, ReadOnlyFolder
from mailsuite.interfaces import MessageInfo
from mailsuite.store.memory import BytesReader


class FakeFolder:
    """INBOX with bytes in memory; records what the session did to it."""

    name = "INBOX"

    def __init__(self, mailbox: "FakeMailbox", read_only: bool) -> None:
        self.mailbox = mailbox
        self.read_only = read_only
        self._snapshot = [self._info(uid) for uid in sorted(mailbox.bodies)]
        self.closed = False

    def _info(self, uid: int) -> MessageInfo:
        return MessageInfo(
            uid=uid,
            flags=frozenset(self.mailbox.flags.get(uid, ())),
            size=len(self.mailbox.bodies[uid]),
            internal_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
            modseq=1,
            key=self.mailbox.keys[uid],
        )

    def messages(self) -> list[MessageInfo]:
        return list(self._snapshot)

    def open_reader(self, uid: int) -> defer.Deferred[BytesReader]:
        if uid not in self.mailbox.bodies:
            return defer.fail(NoSuchMessage())
        self.mailbox.opened.append(uid)
        return defer.succeed(BytesReader(self.mailbox.bodies[uid]))

    def store_flags(self, uids: Any, flags: Any, mode: str, unchanged_since: int | None = None) -> defer.Deferred[list[MessageInfo]]:
        assert mode == "add"
        if self.read_only:
            return defer.fail(ReadOnlyFolder())
        changed = []
        for uid in uids:
            if uid in self.mailbox.bodies:
                self.mailbox.flags.setdefault(uid, set()).update(flags)
                changed.append(self._info(uid))
        return defer.succeed(changed)

    def expunge(self, uids: Any = None) -> defer.Deferred[list[int]]:
        if self.read_only:
            return defer.fail(ReadOnlyFolder())
        if self.mailbox.fail_expunge:
            return defer.fail(OSError("disk on fire"))
        wanted = set(self.mailbox.bodies) if uids is None else set(uids)
        gone = [uid for uid in sorted(wanted) if uid in self.mailbox.bodies and "\\Deleted" in self.mailbox.flags.get(uid, ())]
        for uid in gone:
            del self.mailbox.bodies[uid]
        self.mailbox.expunged.extend(gone)
        return defer.succeed(gone)

    def close(self) -> None:
        self.closed = True


class FakeMailbox:
    """A user's mailbox: INBOX contents, the POP3 lock, and a log of what happened."""

    def __init__(self, address: str, messages: list[bytes] | None = None) -> None:
        self.address = address
        self.bodies: dict[int, bytes] = {}
        self.keys: dict[int, str] = {}
        self.flags: dict[int, set[str]] = {}
        self.expunged: list[int] = []
        self.opened: list[int] = []
        self.locked_by: object | None = None
        self.fail_expunge = False
        self.folders: list[FakeFolder] = []
        for body in messages or []:
            self.add(body)

    def add(self, body: bytes, key: str | None = None) -> int:
        uid = max(self.bodies, default=0) + 1
        self.bodies[uid] = body
        self.keys[uid] = key or f"1700000000.M{uid}P1.host"
        return uid

    def lock_exclusive(self, owner: object) -> defer.Deferred[Callable[[], None]]:
        if self.locked_by is not None:
            return defer.fail(MailboxInUse())
        self.locked_by = owner

        def release() -> None:
            self.locked_by = None

        return defer.succeed(release)

    def open_folder(self, name: str, *, read_only: bool = False) -> defer.Deferred[FakeFolder]:
        assert name == "INBOX"
        folder = FakeFolder(self, read_only)
        self.folders.append(folder)
        return defer.succeed(folder)


@dataclass
class FakeUser:
    address: str
    mailbox: FakeMailbox


@dataclass
class FakeAuthenticator:
    """Checks passwords from a dict; ``pending`` makes logins wait for the test to fire them."""

    passwords: dict[str, str]
    mailboxes: dict[str, FakeMailbox]
    throttled: set[str] = field(default_factory=set)
    pending: list[defer.Deferred[Any]] | None = None
    attempts: list[tuple[str, str, str]] = field(default_factory=list)

    def login(self, ip: str, username: str, password: str) -> defer.Deferred[FakeUser]:
        self.attempts.append((ip, username, password))
        if username in self.throttled:
            result: defer.Deferred[Any] = defer.fail(LoginThrottled())
        elif self.passwords.get(username) != password:
            result = defer.fail(AuthenticationFailed())
        else:
            result = defer.succeed(FakeUser(username, self.mailboxes[username]))
        if self.pending is not None:
            waiting: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(waiting)
            waiting.addCallback(lambda _: result)
            return waiting
        return result
