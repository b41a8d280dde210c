"""An SMTP session on a StringTransport with a task.Clock, over the real directory, store and login.

The SQLite directory runs without a thread pool and the Maildir store with
its InlineRunner, so every Deferred fires synchronously and a test is just
bytes in, bytes out.  The relay queue is the one stand-in: it records what it
is given (the real queue is exercised by the TCP tests in test_server.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.hashing import hash_password
from mailsuite.auth.login import Authenticator
from mailsuite.auth.portal import make_portal
from mailsuite.auth.throttle import LoginThrottle
from mailsuite.config import Config, ListenerConfig, LimitsConfig, TLSConfig
from mailsuite.interfaces import IRelayQueue
from mailsuite.service import ServerContext
from mailsuite.smtp.listener import settings_for
from mailsuite.smtp.server import SMTPSession
from mailsuite.store.maildir import InlineRunner, MaildirStore
from mailsuite.store.quota import QuotaLimits

ALICE, BOB = "alice@example.test", "bob@example.test"
PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # hashed once: argon2id is slow on purpose


@implementer(IRelayQueue)
class RecordingQueue:
    """Remembers each enqueue (envelope, message bytes, header prefix); fails on demand."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, bytes, bytes]] = []
        self.fail_with: Exception | None = None

    def enqueue(self, envelope: Any, message: Any, header_prefix: bytes = b"") -> defer.Deferred[str]:
        if self.fail_with is not None:
            return defer.fail(self.fail_with)
        with message.open() as f:
            self.entries.append((envelope, f.read(), header_prefix))
        return defer.succeed(f"q{len(self.entries)}")


class TLSStringTransport(StringTransport):
    """Records startTLS instead of doing a handshake."""

    tls_started = False
    aborted = False

    def startTLS(self, creator: Any) -> None:
        self.tls_started = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class World:
    """Directory, store, queue and login shared by the sessions of one test."""

    def __init__(self, tmp_path: Path, *, queue: bool = True, limits: dict[str, Any] | None = None, allow_plaintext_auth: bool = False,
                 smtp_auth: bool = False) -> None:
        self.clock = task.Clock()
        self.directory = SQLiteDirectory(tmp_path / "users.sqlite", extra_domains=["example.test"])
        self.directory.add_user(ALICE, password_hash=_HASH)
        self.directory.add_user(BOB, password_hash=_HASH)
        self.store = MaildirStore(tmp_path / "mail", runner=InlineRunner(), clock=self.clock, default_quota=QuotaLimits(0, 0), directory=self.directory)
        self.queue = RecordingQueue() if queue else None
        self.config = Config(hostname="mail.example.test", domains=["example.test"], data_root=str(tmp_path),
                             limits=dataclasses.replace(LimitsConfig(), **(limits or {})),
                             tls=TLSConfig(allow_plaintext_auth=allow_plaintext_auth), smtp=ListenerConfig(auth=smtp_auth))
        self.context = ServerContext(config=self.config, reactor=self.clock)
        self.context.directory = self.directory
        self.context.store = self.store
        self.context.queue = self.queue
        self.context.throttle = LoginThrottle(self.clock, free_failures=2, max_failures=4, max_delay=2.0, block_seconds=60.0)
        self.context.portal = make_portal(self.context, self.directory)
        self.context.authenticator = Authenticator(self.context.portal, self.context.throttle, self.clock)
        self.context.tls = _FakeTLS()

    def session(self, listener: str = "smtp", *, ip: str = "192.0.2.1") -> "Session":
        return Session(self, listener, ip)

    def inbox(self, address: str) -> list[bytes]:
        """Bytes of every message in the user's INBOX new/ directory."""
        local, _, domain = address.rpartition("@")
        new = Path(self.store.root) / domain / local / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


class _FakeTLS:
    def server_creator(self) -> str:
        return "tls-creator"


class Session:
    """One connection: ``send(bytes) -> bytes`` written back."""

    def __init__(self, world: World, listener: str, ip: str) -> None:
        self.world = world
        settings = settings_for(world.context, listener, world.config.listener(listener))
        self.protocol = SMTPSession(settings)
        self.transport = TLSStringTransport(peerAddress=_Peer(ip))
        self.protocol.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.protocol.dataReceived(data)
        return self.take()

    def cmd(self, line: str) -> bytes:
        return self.send(line.encode("utf-8") + b"\r\n")

    def codes(self, data: bytes) -> list[str]:
        """Final reply codes with enhanced codes, e.g. ['250 2.1.0', ...]."""
        out = []
        for line in data.split(b"\r\n"):
            if len(line) > 3 and line[3:4] == b" ":
                parts = line.decode().split(" ")
                out.append(" ".join(parts[:2]) if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1] else parts[0])
        return out

    def login(self, user: str = ALICE, password: str = PASSWORD) -> bytes:
        import base64

        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


@dataclasses.dataclass
class _Peer:
    host: str
    port: int = 40000
    type: str = "TCP"
