"""Deadlines and flow control of the POP3 session on a StringTransport and task.Clock (issue 15, items 1 and 7)."""

from __future__ import annotations

from mailsuite.pop3.protocol import MAX_BUFFERED

from .harness import ALICE, PASSWORD, Harness

MSG = b"Subject: one\r\n\r\nbody one\r\n"


# -- deadlines ---------------------------------------------------------------


def test_command_line_must_complete_within_the_timeout_from_its_first_byte() -> None:
    """A line trickling in one byte at a time is cut at `timeout` after its first byte, not kept alive by each byte."""
    h = Harness([MSG], secure=True, timeout=30)
    h.login()
    h.clock.advance(20)  # idle, then the first byte: the line has 30 s from here
    h.send(b"N")
    for _ in range(29):
        h.clock.advance(1)
        h.send(b"O")
    assert not h.closing
    h.clock.advance(1)
    assert h.take() == b"-ERR Disconnected for inactivity\r\n" and h.closing
    h.disconnect()
    assert h.mailbox.locked_by is None and h.mailbox.expunged == []


def test_each_complete_command_gets_a_fresh_deadline() -> None:
    """A client sending whole commands now and then is not a slowloris."""
    h = Harness([MSG], secure=True, timeout=30)
    h.login()
    for _ in range(5):
        h.clock.advance(25)
        assert h.command("NOOP") == b"+OK\r\n"
    assert not h.closing


def test_no_login_within_login_timeout_is_closed_with_err() -> None:
    """limits.pop3_login_timeout: CAPA every few seconds does not keep a connection that never logs in."""
    h = Harness(secure=True, login_timeout=10)
    for _ in range(4):
        h.clock.advance(2)
        assert h.command("CAPA").startswith(b"+OK")
    h.clock.advance(2)
    assert h.take() == b"-ERR Disconnected: no login in time\r\n" and h.closing


def test_login_timeout_does_not_touch_a_logged_in_session() -> None:
    h = Harness([MSG], secure=True, login_timeout=10)
    h.login()
    h.clock.advance(11)
    assert not h.closing and h.command("STAT").startswith(b"+OK 1 ")


def test_login_timeout_while_a_login_is_verified_releases_the_lock() -> None:
    """The deadline closes the connection even with PASS under way; the late login releases its lock."""
    h = Harness([MSG], secure=True, login_timeout=10)
    h.auth.pending = []
    h.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    h.clock.advance(10)
    assert h.take().endswith(b"-ERR Disconnected: no login in time\r\n") and h.closing
    h.disconnect()
    h.auth.pending[0].callback(None)
    assert h.mailbox.locked_by is None


def test_slow_but_reading_client_keeps_a_long_retr() -> None:
    """Output the client takes counts as progress: a RETR read slowly for longer than the timeout completes."""
    body = b"".join(b"line %06d of a long message\r\n" % i for i in range(20000))  # ~600 KB
    h = Harness([body], secure=True, timeout=30)
    h.transport.window = 64 * 1024
    h.login()
    h.send(b"RETR 1\r\n")
    received = h.transport.drain()
    for _ in range(100):
        if received.endswith(b"\r\n.\r\n"):
            break
        h.clock.advance(20)  # each 64 KB takes 20 s to read: 200 s in all, timeout 30 s
        received += h.transport.drain()
    assert received.endswith(b"\r\n.\r\n") and not h.closing
    assert h.clock.seconds() > 60


def test_client_that_stops_reading_a_retr_is_aborted_at_the_timeout() -> None:
    body = b"x" * 1_000_000 + b"\r\n"
    h = Harness([body], secure=True, timeout=30)
    h.transport.window = 64 * 1024
    h.login()
    h.send(b"RETR 1\r\n")
    h.clock.advance(29)
    assert not h.transport.aborted
    h.clock.advance(2)
    assert h.transport.aborted


def test_timeout_waits_for_a_slow_server() -> None:
    """A login that takes longer than the command timeout is the server's doing: no timeout meanwhile."""
    h = Harness([MSG], secure=True, timeout=30, login_timeout=1000)
    h.auth.pending = []
    h.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    h.clock.advance(100)
    assert not h.closing
    h.auth.pending[0].callback(None)
    assert h.take().startswith(b"+OK Logged in")
    h.clock.advance(29)
    assert not h.closing
    h.clock.advance(2)
    assert h.closing


# -- flow control -----------------------------------------------------------------


def test_client_not_reading_stops_commands_and_socket_reads() -> None:
    """Pipelined CAPA from a client that reads nothing: a window of replies, MAX_BUFFERED of input, then reads pause."""
    h = Harness()
    h.transport.window = 64 * 1024
    flood = b"CAPA\r\n" * (4 * MAX_BUFFERED // 6)
    h.session.dataReceived(flood)
    written = len(h.transport.value())
    assert 64 * 1024 < written < 64 * 1024 + 200  # stopped at the first reply past the window
    assert h.transport.producerState == "paused"  # socket reads stopped
    assert len(h.session._buffer) <= len(flood)
    # the client reads: commands go on, reading resumes once the backlog is small
    replies = h.transport.drain()
    while h.transport.value():
        replies += h.transport.drain()
    assert replies.count(b"+OK Capability list follows\r\n") == len(flood) // 6
    assert h.transport.producerState == "producing"


def test_input_is_bounded_while_a_login_is_verified() -> None:
    h = Harness([MSG], secure=True)
    h.auth.pending = []
    h.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    h.session.dataReceived(b"NOOP\r\n" * (MAX_BUFFERED // 6 + 10))
    assert h.transport.producerState == "paused"
    h.auth.pending[0].callback(None)
    assert h.transport.producerState == "producing"
    assert h.take().count(b"+OK\r\n") == MAX_BUFFERED // 6 + 10


def test_client_that_never_reads_is_aborted_at_the_timeout() -> None:
    h = Harness(timeout=30, login_timeout=1000)
    h.transport.window = 64 * 1024
    h.session.dataReceived(b"CAPA\r\n" * 20000)
    h.clock.advance(31)
    assert h.transport.aborted


def test_stls_discards_bytes_buffered_while_output_was_paused() -> None:
    """Lines held back by flow control and sent before STLS are plaintext too: none runs after the handshake."""
    h = Harness()
    h.transport.window = 64 * 1024
    h.session.dataReceived(b"CAPA\r\n" * 2000 + f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    assert h.transport.tls_creator is None  # STLS still waits behind the unread CAPA replies
    while h.transport.value():
        h.transport.drain()
    assert h.transport.tls_creator == "server-tls-creator"
    assert h.command(f"USER {ALICE}").startswith(b"+OK Send PASS")
    assert h.auth.attempts == []


def test_pipelined_listings_stream_one_after_another_under_backpressure() -> None:
    """Long responses pipelined behind each other: each streams only while the client reads, and all arrive whole."""
    h = Harness([b"Subject: %d\r\n\r\nx\r\n" % i for i in range(3000)], secure=True)
    h.transport.window = 16 * 1024
    h.login()
    h.session.dataReceived(b"LIST\r\nUIDL\r\n" * 20 + b"STAT\r\n")
    received = h.transport.drain()
    for _ in range(10000):
        if received.endswith(b"+OK 3000 %d\r\n" % sum(len(b"Subject: %d\r\n\r\nx\r\n" % i) for i in range(3000))):
            break
        assert len(h.transport.value()) < 16 * 1024 + 64 * 1024  # at most one batch past the window
        received += h.transport.drain()
    assert received.count(b"\r\n.\r\n") == 40 and received.count(b"\r\n3000 ") == 40
    assert not h.closing
