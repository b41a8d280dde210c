"""A POP3 session on a StringTransport with a task.Clock: bytes in, bytes out."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailsuite.pop3.protocol import POP3Session, SessionSettings

from .fakes import FakeAuthenticator, FakeMailbox

ALICE = "alice@example.test"
PASSWORD = "correct horse battery"


class TLSStringTransport(StringTransport):
    """Records startTLS instead of doing a handshake.

    With ``window`` set it behaves like a socket whose peer does not read:
    past ``window`` unread bytes it pauses its producer, as Twisted's TCP
    transport does past its buffer size; ``drain()`` is the peer reading.
    """

    tls_creator: Any = None
    aborted = False
    window: int | None = None
    _producer_paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.window is not None and len(self.value()) > self.window and self.producer is not None and not self._producer_paused:
            self._producer_paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """The peer reads everything written so far; a paused producer is resumed."""
        data = self.value()
        self.clear()
        if self._producer_paused and self.producer is not None:
            self._producer_paused = False
            self.producer.resumeProducing()
        return data

    def startTLS(self, creator: Any) -> None:
        self.tls_creator = creator

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Harness:
    """One session plus its fakes; ``send`` returns what the server wrote in reply."""

    def __init__(self, messages: list[bytes] | None = None, *, secure: bool = False, plaintext: bool = False, timeout: float = 600.0, tls: bool = True,
                 login_timeout: float = 60.0) -> None:
        self.mailbox = FakeMailbox(ALICE, messages or [])
        self.auth = FakeAuthenticator({ALICE: PASSWORD}, {ALICE: self.mailbox})
        self.clock = task.Clock()
        self.settings = SessionSettings(
            authenticator=self.auth,
            hostname="mail.example.test",
            timeout=timeout,
            clock=self.clock,
            tls_creator=(lambda: "server-tls-creator") if tls else None,
            implicit_tls=secure,
            allow_plaintext_auth=plaintext,
            login_timeout=login_timeout,
        )
        self.session = POP3Session(self.settings)
        self.transport = TLSStringTransport()
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.session.dataReceived(data)
        return self.take()

    def command(self, line: str) -> bytes:
        return self.send(line.encode() + b"\r\n")

    def login(self) -> bytes:
        reply = self.command(f"USER {ALICE}") + self.command(f"PASS {PASSWORD}")
        assert reply.endswith(b"\r\n") and b"+OK Logged in" in reply, reply
        return reply

    def disconnect(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.session.connectionLost(Failure(ConnectionDone()))

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)
