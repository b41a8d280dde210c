"""The protocol skeleton: framing, literals, errors, capabilities, login (StringTransport)."""

from __future__ import annotations

import base64

import pytest
from twisted.internet import defer

from mailsuite import errors

from tests.imap.harness import Harness


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)


def test_greeting_lists_capabilities(harness):
    """The greeting carries CAPABILITY so clients need no extra round trip."""
    conn = harness.connect()
    assert conn.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in conn.greeting


def test_capability_before_and_after_login(harness):
    """CAPABILITY changes with login: extensions for selected state appear only after."""
    conn = harness.connect()
    before = conn.send("a CAPABILITY\r\n")
    assert before.endswith(b"a OK CAPABILITY completed.\r\n")
    assert b"UIDPLUS" not in before and b"AUTH=PLAIN" in before
    out = conn.send('b LOGIN alice@example.test secret\r\n')
    assert b"b OK [CAPABILITY IMAP4rev1" in out and b"UIDPLUS" in out
    after = conn.send("c CAPABILITY\r\n")
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"NAMESPACE", b"UNSELECT", b"ENABLE", b"LITERAL+", b"SPECIAL-USE", b"CHILDREN", b"ID"):
        assert cap in after
    assert b"AUTH=" not in after and b"STARTTLS" not in after


def test_logindisabled_without_tls(tmp_path):
    """On a plaintext connection LOGIN is refused and advertised as disabled (RFC 3501 6.2.3)."""
    conn = Harness(tmp_path, plaintext=False).connect()
    assert b"LOGINDISABLED" in conn.greeting and b"AUTH=PLAIN" not in conn.greeting
    out = conn.send("a LOGIN alice@example.test secret\r\n")
    assert out.startswith(b"a NO [PRIVACYREQUIRED]")
    out = conn.send("b AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
    assert out.startswith(b"b NO [PRIVACYREQUIRED]")


def test_login_failure_and_success(harness):
    conn = harness.connect()
    assert conn.send("a LOGIN alice@example.test wrong\r\n") == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    out = conn.send("b LOGIN alice@example.test secret\r\n")
    # plaintext login (allowed by this test config) comes with an ALERT for the user
    assert out.startswith(b"* OK [ALERT] Your password was sent without encryption")
    assert b"\r\nb OK [CAPABILITY" in out
    assert conn.send("c LOGIN alice@example.test secret\r\n") == b"c BAD Already logged in.\r\n"


def test_login_with_literals(harness):
    """Synchronising literals get a continuation; LITERAL+ ones don't."""
    conn = harness.connect()
    assert conn.send("a LOGIN {18}\r\n") == b"+ OK\r\n"
    assert b"\r\na OK [CAPABILITY" in conn.send('alice@example.test {6+}\r\nsecret\r\n')


def test_throttled_login_disconnects(tmp_path):
    harness = Harness(tmp_path)
    harness.context.authenticator.block_after = 0
    conn = harness.connect()
    out = conn.send("a LOGIN alice@example.test secret\r\n")
    assert out == b"* BYE Too many failed logins.\r\na NO [UNAVAILABLE] Too many failed logins, try again later\r\n"
    assert conn.closed


def test_authenticate_plain_with_initial_response(harness):
    conn = harness.connect()
    token = base64.b64encode(b"\0alice@example.test\0secret").decode()
    assert b"\r\na OK [CAPABILITY" in conn.send(f"a AUTHENTICATE PLAIN {token}\r\n")


def test_authenticate_plain_with_continuation(harness):
    conn = harness.connect()
    assert conn.send("a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    token = base64.b64encode(b"\0alice@example.test\0wrong").decode()
    assert conn.send(token + "\r\n").startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert conn.send("b AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert conn.send("*\r\n") == b"b BAD Authentication aborted by client.\r\n"
    assert conn.send("c AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert conn.send("!!notbase64\r\n") == b"c BAD Invalid base64 data.\r\n"
    assert conn.send("d AUTHENTICATE CRAM-MD5\r\n").startswith(b"d NO")
    assert conn.send("e NOOP\r\n") == b"e OK NOOP completed.\r\n"


def test_authenticate_sasl_errors_and_invalid_login_names(harness):
    """Malformed PLAIN responses BAD, another authorization identity NO [AUTHORIZATIONFAILED],
    a login name the directory rejects as invalid NO [AUTHENTICATIONFAILED] (not a mailbox's [CANNOT])."""
    conn = harness.connect()
    one_field = base64.b64encode(b"alice").decode()
    assert conn.send(f"a AUTHENTICATE PLAIN {one_field}\r\n") == b"a BAD Invalid PLAIN response.\r\n"
    other = base64.b64encode(b"bob@example.test\0alice@example.test\0secret").decode()
    assert conn.send(f"b AUTHENTICATE PLAIN {other}\r\n") == (
        b"b NO [AUTHORIZATIONFAILED] Authorization identity differs from the login name.\r\n")
    assert harness.context.authenticator.calls == []

    def invalid(ip, username, password):
        return defer.fail(errors.InvalidName("bad name"))

    harness.context.authenticator.login = invalid
    assert conn.send("c LOGIN x y\r\n") == b"c NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    token = base64.b64encode(b"\0x\0y").decode()
    assert conn.send(f"d AUTHENTICATE PLAIN {token}\r\n") == b"d NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


def test_malformed_commands_get_bad_and_connection_survives(harness):
    conn = harness.connect()
    assert conn.send("a FROB\r\n").startswith(b"a BAD")
    assert conn.send("b\r\n") == b"b BAD Missing command.\r\n"
    assert conn.send("(bad tag\r\n").startswith(b"* BAD")
    assert conn.send("c LOGIN onlyone\r\n").startswith(b"c BAD")
    assert conn.send('d LOGIN "unterminated\r\n').startswith(b"d BAD")
    assert conn.send("e SELECT INBOX\r\n") == b"e BAD Not logged in.\r\n"
    assert conn.send("f NOOP extra\r\n").startswith(b"f BAD")
    assert conn.send("\x00\x01\x02\xff\r\n").startswith(b"* BAD")
    assert conn.send("g NOOP\r\n") == b"g OK NOOP completed.\r\n"
    assert not conn.closed


def test_too_many_errors_end_with_bye(harness):
    conn = harness.connect()
    out = b"".join(conn.send(f"t{i} FROB\r\n") for i in range(25))
    assert b"* BYE Too many invalid IMAP commands." in out
    assert conn.closed


def test_overlong_line_is_refused_and_skipped(tmp_path):
    harness = Harness(tmp_path, imap_line_length=1000)
    conn = harness.connect()
    out = conn.send("a NOOP " + "x" * 3000)
    assert out == b"a BAD Command line too long\r\n"
    assert conn.send("yyy\r\nb NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_huge_synchronising_literal_refused_before_data(tmp_path):
    harness = Harness(tmp_path, imap_literal_size=1000)
    conn = harness.connect("alice@example.test")
    out = conn.send("a APPEND INBOX {5000}\r\n")
    assert out == b"a NO [TOOBIG] Literal too large (limit 1000 bytes).\r\n"
    assert conn.send("b NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_literal_before_login_is_capped(harness):
    conn = harness.connect()
    assert conn.send("a LOGIN {100000}\r\n").startswith(b"a NO [TOOBIG]")
    assert conn.send("b APPEND INBOX {10}\r\n") == b"b BAD APPEND not allowed now.\r\n"


def test_oversized_nonsync_literal_closes(tmp_path):
    harness = Harness(tmp_path, imap_literal_size=1000)
    conn = harness.connect("alice@example.test")
    out = conn.send("a APPEND INBOX {5000+}\r\n" + "x" * 100)
    assert out == b"* BYE [TOOBIG] Literal too large.\r\n"
    assert conn.closed


def test_id_and_namespace_and_enable(harness):
    conn = harness.connect()
    out = conn.send('a ID ("name" "pytest" "version" "1")\r\n')
    assert out.startswith(b'* ID ("name" "mailsuite"') and out.endswith(b"a OK ID completed.\r\n")
    assert conn.send("b ID NIL\r\n").endswith(b"b OK ID completed.\r\n")
    assert conn.send("c ENABLE CONDSTORE\r\n") == b"c BAD Not logged in.\r\n"
    conn.send("l LOGIN alice@example.test secret\r\n")
    assert conn.send("d ENABLE CONDSTORE X-UNKNOWN\r\n") == b"* ENABLED CONDSTORE\r\nd OK ENABLE completed.\r\n"
    assert conn.send("e NAMESPACE\r\n") == b'* NAMESPACE (("" "/")) NIL NIL\r\ne OK NAMESPACE completed.\r\n'


def test_logout(harness):
    conn = harness.connect()
    assert conn.send("a LOGOUT\r\n") == b"* BYE Logging out\r\na OK Logout completed.\r\n"
    assert conn.closed


def test_inactivity_timeout(tmp_path):
    harness = Harness(tmp_path, imap_timeout=60.0)
    conn = harness.connect("alice@example.test")  # before login the shorter imap_login_timeout applies
    harness.clock.advance(59)
    assert not conn.closed
    conn.send("a NOOP\r\n")
    harness.clock.advance(59)
    assert not conn.closed
    harness.clock.advance(2)
    assert conn.read() == b"* BYE Disconnected for inactivity.\r\n"
    assert conn.closed


def test_pipelined_commands_answer_in_order(harness):
    conn = harness.connect()
    out = conn.send("a NOOP\r\nb LOGIN alice@example.test secret\r\nc NOOP\r\n")
    lines = out.split(b"\r\n")
    assert lines[0] == b"a OK NOOP completed."
    assert lines[1].startswith(b"* OK [ALERT]")
    assert lines[2].startswith(b"b OK")
    assert lines[3] == b"c OK NOOP completed."


def test_user_connection_cap(tmp_path):
    harness = Harness(tmp_path, imap_connections_per_user=2)
    first = harness.connect("alice@example.test")
    harness.connect("alice@example.test")
    third = harness.connect()
    assert third.send("a LOGIN alice@example.test secret\r\n").startswith(b"a NO [LIMIT]")
    first.send("z LOGOUT\r\n")
    first.protocol.connectionLost(None)
    assert b"\r\nb OK [CAPABILITY" in third.send("b LOGIN alice@example.test secret\r\n")


def test_literals_of_one_command_are_capped_together(tmp_path):
    harness = Harness(tmp_path, imap_literal_size=1000)
    conn = harness.connect("alice@example.test")
    assert conn.send("a RENAME {600}\r\n") == b"+ OK\r\n"
    assert conn.send(b"x" * 600 + b" {600}\r\n") == b"a NO [TOOBIG] Literal too large (limit 1000 bytes).\r\n"
    assert conn.send("b NOOP\r\n") == b"b OK NOOP completed.\r\n"


def test_large_append_literal_streams_to_the_store(harness):
    """APPEND's message is written to the store's incoming message as it arrives, not buffered."""
    conn = harness.connect("alice@example.test")
    message = b"Subject: big\r\n\r\n" + b"z" * 200_000 + b"\r\n"
    assert conn.send(b"a APPEND INBOX {%d}\r\n" % len(message)) == b"+ OK\r\n"
    conn.send(message[:150_000])
    assert len(conn.protocol._literal) == 0
    assert conn.protocol.streamed_literal.size == 150_000
    out = conn.send(message[150_000:] + b"\r\n")
    assert out.startswith(b"a OK [APPENDUID ")
    conn.send("b SELECT INBOX\r\n")
    assert conn.send("c FETCH 1 RFC822.SIZE\r\n").startswith(b"* 1 FETCH (RFC822.SIZE %d)" % len(message))


def test_streamed_literal_of_a_failed_append_is_discarded(harness):
    conn = harness.connect("alice@example.test")
    message = b"x" * 100_000
    out = conn.send(b"a APPEND Nowhere {%d+}\r\n" % len(message) + message + b"\r\n")
    assert out == b"a NO [TRYCREATE] Mailbox doesn't exist\r\n"
    assert conn.protocol.streamed_literal is None
    out = conn.send(b"b APPEND INBOX (\\Bogus) {%d+}\r\n" % len(message) + message + b"\r\n")
    assert out.startswith(b"b BAD")
    assert conn.protocol.streamed_literal is None


def test_peer_that_stops_reading_is_aborted_after_timeout(tmp_path):
    """A timeout on a connection whose peer no longer reads still ends it (abort after a grace period)."""
    harness = Harness(tmp_path, imap_timeout=60.0)
    conn = harness.connect()
    conn.transport.abortConnection = lambda: setattr(conn, "aborted", True)
    harness.clock.advance(61)
    assert conn.closed and not getattr(conn, "aborted", False)
    harness.clock.advance(11)
    assert getattr(conn, "aborted", False)


def test_refused_nonsync_literal_is_swallowed_not_fatal(harness):
    """A LITERAL+ command refused for its state (not its size) is read to its end and answered BAD."""
    conn = harness.connect()
    assert conn.send("a APPEND INBOX {5+}\r\nhello\r\n") == b"a BAD APPEND not allowed now.\r\n"
    assert conn.send("b FROB {3+}\r\nabc {2+}\r\nxy\r\n") == b"b BAD Unknown command.\r\n"
    assert conn.send("c NOOP\r\n") == b"c OK NOOP completed.\r\n"
    assert not conn.closed
