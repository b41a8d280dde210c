"""Connection-level defences of the IMAP server on a StringTransport and a task.Clock.

Deadlines (a command must arrive within limits.imap_timeout of its first
byte; no login within limits.imap_login_timeout ends the connection),
output backpressure (no command is taken on while the peer does not read),
the literal caps, APPEND's checks before ``+``, connection slots of logins
the client walked away from, and how a full disk is answered.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from twisted.internet import defer

from mailsuite import errors
from mailsuite.imap import server as imap_server
from mailsuite.imap.responses import failure_response
from mailsuite.store.quota import QuotaLimits

from tests.imap.harness import Connection, Harness, User

ALICE = "alice@example.test"
MESSAGE = b"Subject: hello\r\n\r\nhello\r\n"


def test_login_deadline_is_not_moved_by_commands(tmp_path: Path) -> None:
    """A client that keeps talking but never logs in is closed imap_login_timeout after connecting."""
    harness = Harness(tmp_path, imap_login_timeout=60.0)
    conn = harness.connect()
    for _ in range(5):
        harness.clock.advance(10)
        assert conn.send("a NOOP\r\n") == b"a OK NOOP completed.\r\n"
    harness.clock.advance(9)
    assert not conn.closed
    harness.clock.advance(2)
    assert conn.read() == b"* BYE Login timeout.\r\n"
    assert conn.closed


def test_login_deadline_ends_with_the_login(tmp_path: Path) -> None:
    harness = Harness(tmp_path, imap_login_timeout=60.0, imap_timeout=1800.0)
    conn = harness.connect(ALICE)
    harness.clock.advance(600)
    assert conn.send("a NOOP\r\n") == b"a OK NOOP completed.\r\n"
    assert not conn.closed


def test_a_trickled_command_has_a_deadline_from_its_first_byte(tmp_path: Path) -> None:
    """One byte every 10 s does not hold a connection: the command must be complete imap_timeout after it began."""
    harness = Harness(tmp_path, imap_timeout=60.0)
    conn = harness.connect(ALICE)
    conn.send("a SEARCH ")
    for _ in range(5):
        harness.clock.advance(10)
        assert conn.send("x") == b""
    harness.clock.advance(9)
    assert not conn.closed
    harness.clock.advance(2)
    assert conn.read() == b"* BYE Command not completed in time.\r\n"
    assert conn.closed


def test_the_deadline_covers_literals(tmp_path: Path) -> None:
    harness = Harness(tmp_path, imap_timeout=60.0)
    conn = harness.connect(ALICE)
    assert conn.send("a APPEND INBOX {100}\r\n") == b"+ OK\r\n"
    out = b""
    for _ in range(5):
        harness.clock.advance(10)
        out += conn.send("x")
    harness.clock.advance(9)
    assert out == b"" and not conn.closed
    harness.clock.advance(2)
    assert conn.read() == b"* BYE Command not completed in time.\r\n"
    assert conn.closed


def test_each_command_gets_its_own_deadline(tmp_path: Path) -> None:
    """Complete commands keep a logged-in connection open, however long the session."""
    harness = Harness(tmp_path, imap_timeout=60.0)
    conn = harness.connect(ALICE)
    for _ in range(10):
        harness.clock.advance(50)
        assert conn.send("a NOOP\r\n") == b"a OK NOOP completed.\r\n"
    assert not conn.closed


def test_idle_outlives_the_login_deadline(tmp_path: Path) -> None:
    """IDLE is not cut by the pre-login deadline nor by a command deadline; DONE ends it as usual."""
    harness = Harness(tmp_path, imap_login_timeout=60.0, imap_timeout=1800.0)
    harness.deliver(ALICE, MESSAGE)
    conn = harness.connect(ALICE)
    conn.send("s SELECT INBOX\r\n")
    assert conn.send("i IDLE\r\n") == b"+ idling\r\n"
    harness.clock.advance(600)
    assert not conn.closed
    assert conn.send("DONE\r\n").endswith(b"i OK Idle completed.\r\n")


def _small_window(conn: Connection, size: int = 65536) -> None:
    """Make the StringTransport pause its producer past ``size`` unread bytes, as a TCP transport does."""
    transport, write = conn.transport, conn.transport.write

    def limited(data: bytes) -> None:
        write(data)
        if len(transport.value()) > size:
            conn.protocol.pauseProducing()

    transport.write = limited  # type: ignore[method-assign]


def _big_fetch(tmp_path: Path) -> tuple[Harness, Connection]:
    harness = Harness(tmp_path, imap_timeout=60.0)
    harness.deliver(ALICE, b"Subject: big\r\n\r\n" + b"y" * 2_000_000 + b"\r\n")
    conn = harness.connect(ALICE)
    conn.send("s SELECT INBOX\r\n")
    _small_window(conn)
    conn.send("f FETCH 1 BODY[]\r\n")
    assert conn.protocol._write_paused  # the FETCH waits for the client to read
    return harness, conn


def test_output_the_client_reads_keeps_a_long_fetch_alive(tmp_path: Path) -> None:
    """A FETCH waiting for the client to read makes progress each time the client drains it, however long in all."""
    harness, conn = _big_fetch(tmp_path)
    out = b""
    for _ in range(100):  # 50 s between two reads of the client, far beyond imap_timeout in all
        harness.clock.advance(50)
        assert not conn.closed
        conn.protocol.resumeProducing()
        out += conn.read()
        if b"f OK" in out:
            break
    assert out.endswith(b"f OK FETCH completed.\r\n")
    assert harness.clock.seconds() > 5 * 60.0  # several times imap_timeout in all


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    harness, conn = _big_fetch(tmp_path)
    harness.clock.advance(59)
    assert not conn.closed
    harness.clock.advance(2)
    assert conn.closed


def test_no_command_is_taken_on_while_output_is_held(tmp_path: Path) -> None:
    """While the transport's write buffer is full nothing is answered, and reading stops past the high-water mark."""
    harness = Harness(tmp_path)
    conn = harness.connect(ALICE)
    conn.protocol.pauseProducing()
    flood = b"a NOOP\r\n" * (2 * imap_server.INPUT_HIGH_WATER // 8)
    assert conn.send(flood) == b""
    assert conn.transport.producerState == "paused"  # the socket is no longer read
    conn.protocol.resumeProducing()
    out = conn.read()
    assert out.count(b"a OK NOOP completed.\r\n") == flood.count(b"\r\n")
    assert conn.transport.producerState == "producing"


def test_literals_other_than_append_are_capped_small(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    conn = harness.connect(ALICE)
    conn.send("s SELECT INBOX\r\n")
    limit = imap_server.COMMAND_LITERAL_LIMIT
    assert conn.send("a SEARCH TEXT {%d}\r\n" % (limit + 1)) == b"a NO [TOOBIG] Literal too large (limit %d bytes).\r\n" % limit
    assert conn.send("b SEARCH TEXT {%d}\r\n" % limit) == b"+ OK\r\n"
    assert conn.send(b"x" * limit + b"\r\n").endswith(b"b OK SEARCH completed.\r\n")
    out = conn.send("c SEARCH TEXT {%d+}\r\n" % (limit + 1))
    assert out == b"* BYE [TOOBIG] Literal too large.\r\n"
    assert conn.closed


def test_append_to_a_missing_folder_is_refused_before_the_continuation(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    conn = harness.connect(ALICE)
    assert conn.send("a APPEND Nowhere (\\Seen) {10}\r\n") == b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert conn.send("b NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_append_over_the_size_limit_is_refused_before_the_continuation(tmp_path: Path) -> None:
    harness = Harness(tmp_path, message_size=1000)
    conn = harness.connect(ALICE)
    assert conn.send("a APPEND INBOX {1001}\r\n") == b"a NO [TOOBIG] Literal too large (limit 1000 bytes).\r\n"


def test_append_over_quota_is_refused_before_the_continuation(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.store.default_quota = QuotaLimits(bytes=1000)
    conn = harness.connect(ALICE)
    assert conn.send("a APPEND INBOX {1001}\r\n").startswith(b"a NO [OVERQUOTA] ")
    assert conn.send("b APPEND INBOX {%d}\r\n" % len(MESSAGE)) == b"+ OK\r\n"
    assert conn.send(MESSAGE + b"\r\n").startswith(b"b OK [APPENDUID ")


def test_append_with_a_literal_folder_name(tmp_path: Path) -> None:
    """The folder name may itself be a literal: the check runs at the message's literal."""
    harness = Harness(tmp_path)
    conn = harness.connect(ALICE)
    assert conn.send("a APPEND {5}\r\n") == b"+ OK\r\n"
    assert conn.send("INBOX {%d}\r\n" % len(MESSAGE)) == b"+ OK\r\n"
    assert conn.send(MESSAGE + b"\r\n").startswith(b"a OK [APPENDUID ")
    assert conn.send("b APPEND {7}\r\n") == b"+ OK\r\n"
    assert conn.send("Nowhere {%d}\r\n" % len(MESSAGE)) == b"b NO [TRYCREATE] Mailbox doesn't exist\r\n"


class SlowAuthenticator:
    """Answers each login when the test says so (a password hash still running)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pending: list[tuple[defer.Deferred[Any], str]] = []

    def login(self, ip: str, username: str, password: str) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((d, username))
        return d

    def finish_all(self) -> None:
        for d, username in self.pending:
            d.callback(User(username, self.store.user_mailbox(username)))
        self.pending.clear()


def test_hanging_up_during_login_takes_no_connection_slot(tmp_path: Path) -> None:
    harness = Harness(tmp_path, imap_connections_per_user=2)
    slow = harness.use_authenticator(SlowAuthenticator(harness.store))
    for _ in range(3):
        conn = harness.connect()
        conn.send(f"a LOGIN {ALICE} secret\r\n")
        conn.protocol.connectionLost(None)
    slow.finish_all()
    assert not harness.factory.user_connections.open
    conn = harness.connect()
    conn.send(f"a LOGIN {ALICE} secret\r\n")
    slow.finish_all()
    assert b"a OK" in conn.read()
    assert harness.factory.user_connections.open[ALICE] == 1


def test_login_deadline_during_a_slow_login_takes_no_slot(tmp_path: Path) -> None:
    harness = Harness(tmp_path, imap_login_timeout=60.0)
    slow = harness.use_authenticator(SlowAuthenticator(harness.store))
    conn = harness.connect()
    conn.send(f"a LOGIN {ALICE} secret\r\n")
    harness.clock.advance(61)
    assert conn.read() == b"* BYE Login timeout.\r\n"
    slow.finish_all()
    assert conn.read() == b""
    assert not harness.factory.user_connections.open


def test_full_disk_is_a_temporary_failure_not_a_bug() -> None:
    """ENOSPC (or SMTP's X.3.1 'mail system full') -> NO [UNAVAILABLE]; a file-system quota -> NO [OVERQUOTA]."""
    full = failure_response(OSError(errno.ENOSPC, "No space left on device"), "APPEND")
    assert (full.status, full.code, full.unexpected) == ("NO", "UNAVAILABLE", False)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise errors.TemporaryFailure("Local storage error") from e
    except errors.TemporaryFailure as wrapped:
        assert failure_response(wrapped, "COPY").code == "UNAVAILABLE"
    assert failure_response(errors.TemporaryFailure("Mail system full", code=452, enhanced="4.3.1"), "COPY").code == "UNAVAILABLE"
    assert failure_response(OSError(errno.EDQUOT, "Disk quota exceeded"), "APPEND").code == "OVERQUOTA"
    assert failure_response(OSError(errno.EIO, "I/O error"), "APPEND").code == "SERVERBUG"
