"""An IMAP server protocol on a StringTransport over the real Maildir store.

The store runs with its InlineRunner (disk work in the calling thread) and a
task.Clock, so each command's response is complete when ``send`` returns.
The authenticator is a small password table standing in for mailsuite.auth
(the protocol only calls ``login(ip, username, password)``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from mailsuite import errors
from mailsuite.config import Config, LimitsConfig, TLSConfig
from mailsuite.imap.listener import build_factory
from mailsuite.interfaces import Delivery, IMailUser
from mailsuite.service import ServerContext
from mailsuite.store import InlineRunner, MaildirStore


@implementer(IMailUser)
@dataclasses.dataclass
class User:
    address: str
    mailbox: Any


class TableAuthenticator:
    """``login`` over a dict of passwords; counts failures so throttling can be simulated."""

    def __init__(self, store: MaildirStore, users: dict[str, str], block_after: int = 1000) -> None:
        self.store = store
        self.users = users
        self.failures = 0
        self.block_after = block_after
        self.calls: list[tuple[str, str]] = []

    def login(self, ip: str, username: str, password: str) -> defer.Deferred[Any]:
        self.calls.append((ip, username))
        if self.failures >= self.block_after:
            return defer.fail(errors.LoginThrottled())
        if self.users.get(username) != password:
            self.failures += 1
            return defer.fail(errors.AuthenticationFailed())
        return defer.succeed(User(username, self.store.user_mailbox(username)))


class Harness:
    """Builds connections to one in-memory server context."""

    def __init__(self, tmp_path: Path, *, plaintext: bool = True, users: dict[str, str] | None = None, **limits: Any) -> None:
        self.clock = task.Clock()
        self.store = MaildirStore(tmp_path / "mail", runner=InlineRunner(), clock=self.clock)
        config = Config(
            hostname="mail.example.test",
            tls=TLSConfig(allow_plaintext_auth=plaintext),
            limits=dataclasses.replace(LimitsConfig(), **limits),
        )
        self.context = ServerContext(config=config, reactor=self.clock)
        self.context.store = self.store
        self.context.authenticator = TableAuthenticator(self.store, users if users is not None else {"alice@example.test": "secret", "bob@example.test": "pw"})
        self.factory = build_factory(self.context, "imap", config.imap)

    def use_authenticator(self, authenticator: Any) -> Any:
        """Swap the login service (the listener's settings are taken again, as at a server start)."""
        self.context.authenticator = authenticator
        self.factory = build_factory(self.context, "imap", self.context.config.imap)
        return authenticator

    def connect(self, login: str | None = None) -> "Connection":
        conn = Connection(self)
        if login:
            out = conn.send(f'L1 LOGIN {login} "{self.context.authenticator.users[login]}"\r\n')
            assert b"L1 OK" in out, out
        return conn

    def deliver(self, address: str, data: bytes, folder: str = "INBOX") -> None:
        message = self.store.new_incoming()
        message.write(data)
        message.finish()
        d = self.store.deliver(message, [Delivery(address, folder)])
        results: list[Any] = []
        d.addBoth(results.append)
        assert results and not isinstance(results[0], Exception), results
        for r in results[0]:
            assert r.error is None, r.error


class _Transport(StringTransport):
    """A StringTransport that, like a real one, tells the protocol its connection is gone after an abort."""

    def __init__(self, clock: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self._clock = clock
        self._lost = False
        self.protocol: Any = None  # set by Connection

    def abortConnection(self) -> None:
        super().abortConnection()
        if not self._lost:
            self._clock.callLater(0, self.hang_up)

    def hang_up(self) -> None:
        """The connection ends (once): the protocol hears connectionLost, as from a real transport."""
        if not self._lost:
            self._lost = True
            self.protocol.connectionLost(Failure(ConnectionAborted()))


#: Connections of the running test, ended after it so no command is left waiting on a dead transport.
OPEN: list["Connection"] = []


class Connection:
    """One client connection: bytes in, bytes out."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.protocol = harness.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = _Transport(harness.clock, peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        OPEN.append(self)
        self.greeting = self.read()

    def read(self) -> bytes:
        for _ in range(50):
            self.harness.clock.advance(0)
        out = self.transport.value()
        self.transport.clear()
        return out

    def send(self, data: bytes | str) -> bytes:
        if isinstance(data, str):
            data = data.encode()
        self.protocol.dataReceived(data)
        return self.read()

    def lines(self, data: bytes | str) -> list[bytes]:
        return self.send(data).split(b"\r\n")[:-1]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting
