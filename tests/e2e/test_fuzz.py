"""Fuzzing the three servers: random and malformed input never breaks a session.

Each case drives a real protocol object (SMTP, POP3, IMAP, built by their
listener factories over the real Maildir store, inline) through a
StringTransport with generated commands: random verbs and arguments, odd
line ends (CRLF, bare LF, bare CR, none), NUL and control bytes, non-UTF-8,
over-long lines, literals and SASL continuations.  The properties:

- no failure is ever logged (nothing unhandled, no SERVERBUG);
- the session either answers or closes cleanly;
- afterwards, unless it closed, a valid command still gets its normal answer.

The normal suite runs ``MAILSUITE_FUZZ_EXAMPLES`` cases per protocol (default
150); the dedicated run is
``MAILSUITE_FUZZ_EXAMPLES=10000 python -m pytest tests/e2e/test_fuzz.py -p no:randomly``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from mailsuite.config import parse
from mailsuite.service import ServerContext
from mailsuite.testing.capture import CaptureAuthenticator, CaptureDirectory
from mailsuite.testing.process import render_toml

EXAMPLES = int(os.environ.get("MAILSUITE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

LINE_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])
JUNK = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.sampled_from([b"<>", b"<a@b>", b"<@x:a@b>", b"<\"a b\"@example.test>", b"\x00", b"\xff\xfe", b"=", b"*", b"{5}", b"{3+}",
                     b"(", b")", b"\"", b"\\", b"%", b"1:*", b"BODY[", b"A" * 3000, b"SIZE=99999999999", b"BODY=8BITMIME", b"SMTPUTF8"]),
)


def command(verbs: list[bytes]) -> st.SearchStrategy[bytes]:
    """One generated command: a known or random verb, junk arguments, an odd or proper line end."""
    verb = st.one_of(st.sampled_from(verbs), st.sampled_from(verbs).map(bytes.lower), st.binary(min_size=1, max_size=8))
    return st.builds(lambda v, args, end: v + b"".join(b" " + a for a in args) + end, verb, st.lists(JUNK, max_size=4), LINE_ENDS)


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> ServerContext:
    """A capture-mode server context over a real Maildir store running inline on a fake clock."""
    from mailsuite.store import InlineRunner, MaildirStore
    from mailsuite.tls import TLSProvider

    root = tmp_path_factory.mktemp("fuzz")
    config = parse(render_toml({"hostname": "mail.example.test", "domains": ["example.test"], "data_root": str(root),
                                "capture.enabled": True, "tls.allow_plaintext_auth": True}), str(root / "c.toml"))
    clock = task.Clock()
    ctx = ServerContext(config=config, reactor=clock)
    ctx.tls = TLSProvider.from_config(config, clock)
    ctx.store = MaildirStore(root / "mail", runner=InlineRunner(), clock=clock)
    ctx.directory = CaptureDirectory("example.test")
    ctx.authenticator = CaptureAuthenticator(ctx.directory, ctx)
    return ctx


@pytest.fixture
def logged_failures() -> Iterator[list[dict[str, Any]]]:
    """Every error event logged while the test runs."""
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


@implementer(ITLSTransport)
class TLSCapableTransport(StringTransport):
    """A StringTransport that accepts STARTTLS/STLS (it records it; bytes stay clear text)."""

    tls_started = False

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        self.tls_started = True


class Session:
    """A protocol object on a StringTransport, as its listener factory builds it."""

    def __init__(self, context: ServerContext, listener: str, builder: Callable[..., Any]) -> None:
        factory = builder(context, listener, context.config.listener(listener))
        self.clock = context.reactor
        self.transport = TLSCapableTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Feed bytes (as one TCP read) and return what the server wrote in answer."""
        before = len(self.transport.value())
        if not self.closed:
            self.protocol.dataReceived(data)
        self.clock.advance(0)  # fire calls scheduled for "now"
        return self.transport.value()[before:]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting or self.transport.disconnected)

    def end(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))


def check_session(session: Session, commands: list[bytes], recover: bytes, probe: bytes, expect: bytes, logged: list[Any]) -> None:
    try:
        answered = b"".join(session.send(c) for c in commands)
        # A line ending in a literal marker ("{5}", "{0+}") is not a complete command yet.
        # A blank line (only spaces) is skipped without an answer by IMAP, like the CRLF after a literal.
        complete = [c for c in commands if c.endswith(b"\r\n") and c.strip() and not re.search(rb"\{\d+\+?\}\r\n$", c)]
        if not session.closed and complete:
            assert answered, "commands got no answer at all"
        session.send(recover)
        if not session.closed:
            answer = session.send(probe)
            assert session.closed or expect in answer, (commands, answer)
        assert not logged, [e.get("log_format") for e in logged]
    finally:
        session.end()


SMTP_VERBS = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT", b"RSET", b"NOOP", b"VRFY", b"EXPN", b"HELP", b"AUTH PLAIN", b"AUTH LOGIN", b"STARTTLS", b"ETRN"]


@FUZZ
@given(commands=st.lists(command(SMTP_VERBS), min_size=1, max_size=6))
def test_smtp_survives_anything(context: ServerContext, logged_failures: list[Any], commands: list[bytes]) -> None:
    from mailsuite.smtp.listener import build_factory

    session = Session(context, "smtp", build_factory)
    # End a DATA body, cancel a SASL exchange, fill a small BDAT chunk, then reset.
    recover = b"\r\n.\r\n*\r\n" + b"X" * 200 + b"\r\nRSET\r\n"
    check_session(session, commands, recover, b"NOOP\r\n", b"250 ", logged_failures)


POP3_VERBS = [b"USER", b"PASS", b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL", b"CAPA", b"AUTH", b"AUTH PLAIN", b"STLS", b"APOP"]


@FUZZ
@given(commands=st.lists(command(POP3_VERBS), min_size=1, max_size=6), login=st.booleans())
def test_pop3_survives_anything(context: ServerContext, logged_failures: list[Any], commands: list[bytes], login: bool) -> None:
    from mailsuite.pop3.listener import build_factory

    session = Session(context, "pop3", build_factory)
    if login:
        session.send(b"USER fuzz@example.test\r\nPASS anything\r\n")
    check_session(session, commands, b"\r\n*\r\n", b"CAPA\r\n", b"+OK", logged_failures)


IMAP_VERBS = [b"a CAPABILITY", b"a NOOP", b"a LOGIN", b"a AUTHENTICATE PLAIN", b"a SELECT", b"a EXAMINE", b"a CREATE", b"a DELETE", b"a RENAME",
              b"a SUBSCRIBE", b"a LIST", b"a LSUB", b"a STATUS", b"a APPEND INBOX", b"a FETCH", b"a STORE", b"a SEARCH", b"a COPY", b"a MOVE",
              b"a UID FETCH", b"a UID SEARCH", b"a EXPUNGE", b"a CLOSE", b"a IDLE", b"a ENABLE", b"a ID", b"a NAMESPACE", b"a UNSELECT", b"a CHECK",
              b"a FETCH 1:* (BODY[", b"a SEARCH CHARSET", b"a APPEND INBOX {3+}\r\nabc", b"a LOGIN {4}\r\n"]


@FUZZ
@given(commands=st.lists(command(IMAP_VERBS), min_size=1, max_size=6), login=st.booleans())
def test_imap_survives_anything(context: ServerContext, logged_failures: list[Any], commands: list[bytes], login: bool) -> None:
    from mailsuite.imap.listener import build_factory

    session = Session(context, "imap", build_factory)
    if login:
        session.send(b"l1 LOGIN fuzz@example.test anything\r\nl2 SELECT INBOX\r\n")
    # Fill any small literal, end an IDLE, cancel an AUTHENTICATE.
    recover = b"X" * 80 + b"\r\nDONE\r\n*\r\n"
    check_session(session, commands, recover, b"zz1 NOOP\r\n", b"zz1 OK", logged_failures)


def test_fuzz_targets_can_fail(context: ServerContext, logged_failures: list[Any]) -> None:
    """The probe really distinguishes a working session: a valid command after good input answers as expected."""
    from mailsuite.smtp.listener import build_factory

    session = Session(context, "smtp", build_factory)
    assert session.send(b"EHLO client.example\r\n").startswith(b"250-")
    assert b"250 " in session.send(b"NOOP\r\n")
    assert b"500 " in session.send(b"BOGUS\r\n")
    session.end()
    assert not logged_failures

