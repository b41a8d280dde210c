"""The POP3 state machine over a StringTransport: every command, state and response code."""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.logger import LogLevel, capturedLogs

from .harness import ALICE, PASSWORD, Harness

MSG1 = b"Subject: one\r\n\r\nbody one\r\n"
MSG2 = b"Subject: two\r\nFrom: b@example.test\r\n\r\nline 1\r\n.dot line\r\n..two dots\r\nline 4\r\n"


def multiline(reply: bytes) -> list[bytes]:
    """The lines of a multi-line response after "+OK", un-stuffed, without the terminator."""
    assert reply.startswith(b"+OK"), reply
    assert reply.endswith(b"\r\n.\r\n"), reply
    lines = reply.split(b"\r\n")[1:-2]
    return [line[1:] if line.startswith(b".") else line for line in lines]


def plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


# -- greeting, CAPA, STLS ----------------------------------------------------


def test_greeting_has_no_apop_timestamp() -> None:
    """APOP is not offered, so the greeting carries no <timestamp> (RFC 1939 7)."""
    h = Harness()
    assert h.greeting.startswith(b"+OK ")
    assert b"<" not in h.greeting


def test_capa_before_tls_offers_stls_but_no_login() -> None:
    """On port 110 without TLS: STLS is offered; USER and SASL are not, as they would be refused."""
    caps = multiline(Harness().command("CAPA"))
    assert set(caps) == {b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"STLS"}


def test_capa_over_tls_offers_login_not_stls() -> None:
    """Implicit TLS (port 995): USER and SASL PLAIN, no STLS, no EXPIRE / LOGIN-DELAY / APOP."""
    caps = multiline(Harness(secure=True).command("CAPA"))
    assert set(caps) == {b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER", b"SASL PLAIN"}


def test_capa_with_plaintext_allowed_lists_everything() -> None:
    caps = multiline(Harness(plaintext=True).command("CAPA"))
    assert b"USER" in caps and b"SASL PLAIN" in caps and b"STLS" in caps


def test_capa_without_tls_configured_omits_stls() -> None:
    assert b"STLS" not in multiline(Harness(tls=False).command("CAPA"))


def test_capa_same_in_transaction_state() -> None:
    """RFC 2449 5: AUTHORIZATION capabilities are announced in both states."""
    h = Harness(secure=True)
    before = h.command("CAPA")
    h.login()
    assert h.command("CAPA") == before


def test_user_pass_and_auth_refused_before_tls() -> None:
    """Plaintext logins are refused with [AUTH] and the authenticator is never asked."""
    h = Harness()
    assert h.command(f"USER {ALICE}").startswith(b"-ERR [AUTH]")
    assert h.command(f"PASS {PASSWORD}").startswith(b"-ERR [AUTH]")
    assert h.command("AUTH PLAIN " + plain("", ALICE, PASSWORD)).startswith(b"-ERR [AUTH]")
    assert h.auth.attempts == []


def test_stls_starts_tls_and_discards_pipelined_bytes() -> None:
    """RFC 2595 4: commands sent in plaintext behind STLS are never executed."""
    h = Harness()
    reply = h.send(b"STLS\r\nUSER " + ALICE.encode() + b"\r\nPASS " + PASSWORD.encode() + b"\r\nQUIT\r\npartial")
    assert reply == b"+OK Begin TLS negotiation\r\n"
    assert h.transport.tls_creator == "server-tls-creator"
    assert h.auth.attempts == [] and not h.closing
    # The next read comes through TLS: a clean command line works, and login is now allowed.
    assert h.command(f"USER {ALICE}").startswith(b"+OK")
    assert h.command(f"PASS {PASSWORD}").startswith(b"+OK Logged in")


def test_stls_twice_refused() -> None:
    h = Harness()
    h.command("STLS")
    assert h.command("STLS").startswith(b"-ERR")
    assert Harness(secure=True).command("STLS").startswith(b"-ERR")


def test_stls_not_available_without_tls() -> None:
    h = Harness(tls=False)
    assert h.command("STLS").startswith(b"-ERR")
    assert h.transport.tls_creator is None


# -- logins -------------------------------------------------------------------


def test_user_pass_login_over_tls() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    reply = h.login()
    assert b"2 messages" in reply
    assert h.auth.attempts == [("192.168.1.1", ALICE, PASSWORD)]
    assert h.mailbox.locked_by is h.session


def test_password_with_spaces_is_kept_whole() -> None:
    h = Harness(secure=True)
    h.auth.passwords[ALICE] = "  two  spaces "
    h.command(f"USER {ALICE}")
    assert h.send(b"PASS   two  spaces \r\n").startswith(b"+OK")


def test_wrong_password_answers_auth_code_and_needs_user_again() -> None:
    h = Harness(secure=True)
    h.command(f"USER {ALICE}")
    assert h.command("PASS wrong") == b"-ERR [AUTH] Authentication failed\r\n"
    assert h.command(f"PASS {PASSWORD}").startswith(b"-ERR")  # USER must come again
    assert not h.closing


def test_three_failed_logins_close_the_connection() -> None:
    h = Harness(secure=True)
    for _ in range(3):
        h.command(f"USER {ALICE}")
        assert h.command("PASS wrong").startswith(b"-ERR [AUTH]")
    assert h.closing


def test_throttled_login_is_temporary_and_disconnects() -> None:
    """The shared throttle refusing: [SYS/TEMP] (not [AUTH], the password may be right), then hang up."""
    h = Harness(secure=True)
    h.auth.throttled.add(ALICE)
    h.command(f"USER {ALICE}")
    assert h.command(f"PASS {PASSWORD}").startswith(b"-ERR [SYS/TEMP]")
    assert h.closing


def test_pass_without_user() -> None:
    assert Harness(secure=True).command("PASS x").startswith(b"-ERR")


def test_apop_not_supported() -> None:
    assert Harness(secure=True).command(f"APOP {ALICE} 0123456789abcdef").startswith(b"-ERR")


def test_auth_plain_initial_response() -> None:
    h = Harness([MSG1], secure=True)
    assert h.command("AUTH PLAIN " + plain("", ALICE, PASSWORD)).startswith(b"+OK Logged in")


def test_auth_plain_with_continuation() -> None:
    h = Harness(secure=True)
    assert h.command("AUTH PLAIN") == b"+ \r\n"
    assert h.command(plain(ALICE, ALICE, PASSWORD)).startswith(b"+OK Logged in")


def test_auth_plain_cancel_and_bad_base64() -> None:
    h = Harness(secure=True)
    h.command("AUTH PLAIN")
    assert h.command("*").startswith(b"-ERR")
    assert h.command("NOOP").startswith(b"-ERR")  # back in command mode, still AUTHORIZATION
    h.command("AUTH PLAIN")
    assert h.command("!!!notbase64").startswith(b"-ERR")
    assert h.auth.attempts == []


def test_auth_replies_exactly_and_malformed_responses_count_as_failed_logins() -> None:
    """Cancel, bad base64 and an unknown mechanism keep their own -ERR texts and cost nothing;
    malformed PLAIN responses (wrong field count, empty login name, not UTF-8) are failed logins:
    the third ends the connection, and the authenticator is never asked."""
    h = Harness(secure=True)
    h.command("AUTH PLAIN")
    assert h.command("*") == b"-ERR Authentication cancelled\r\n"
    assert h.command("AUTH PLAIN !!!") == b"-ERR Invalid base64 in AUTH response\r\n"
    assert h.command("AUTH CRAM-MD5") == b"-ERR Unsupported SASL mechanism\r\n"
    for payload in (b"only one field", b"\x00\x00secret", b"\x00alice\x00\xff"):
        assert not h.transport.disconnecting
        assert h.command("AUTH PLAIN " + base64.b64encode(payload).decode()) == b"-ERR [AUTH] Authentication failed\r\n"
    assert h.transport.disconnecting
    assert h.auth.attempts == []


def test_auth_plain_other_authzid_refused() -> None:
    h = Harness(secure=True)
    assert h.command("AUTH PLAIN " + plain("bob@example.test", ALICE, PASSWORD)).startswith(b"-ERR [AUTH]")
    assert h.auth.attempts == []


def test_auth_plain_wrong_password() -> None:
    h = Harness(secure=True)
    assert h.command("AUTH PLAIN " + plain("", ALICE, "nope")).startswith(b"-ERR [AUTH]")


def test_auth_unknown_mechanism() -> None:
    assert Harness(secure=True).command("AUTH CRAM-MD5").startswith(b"-ERR")


def test_auth_without_mechanism_lists_plain() -> None:
    assert multiline(Harness(secure=True).command("AUTH")) == [b"PLAIN"]


def test_password_never_logged() -> None:
    with capturedLogs() as events:
        h = Harness(secure=True)
        h.command(f"USER {ALICE}")
        h.command("PASS wrong-secret-123")
        h.command("AUTH PLAIN " + plain("", ALICE, "other-secret-456"))
    from twisted.logger import formatEvent

    text = " ".join(formatEvent(e) + repr(e) for e in events)
    assert "secret" not in text
    assert all("cid" in e for e in events if e.get("log_namespace", "").startswith("mailsuite"))


def test_mailbox_in_use() -> None:
    """RFC 2449 8.1.2: a second session on a locked maildrop gets [IN-USE] and stays in AUTHORIZATION."""
    first = Harness(secure=True)
    first.login()
    second = Harness(secure=True)
    second.auth, second.session.settings.__dict__["authenticator"] = first.auth, first.auth
    second.command(f"USER {ALICE}")
    assert second.command(f"PASS {PASSWORD}").startswith(b"-ERR [IN-USE]")
    assert second.command("STAT").startswith(b"-ERR")
    first.disconnect()
    second.command(f"USER {ALICE}")
    assert second.command(f"PASS {PASSWORD}").startswith(b"+OK")


def test_commands_need_login() -> None:
    h = Harness(secure=True)
    for command in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "RSET", "NOOP"):
        assert h.command(command).startswith(b"-ERR"), command


def test_login_commands_refused_after_login() -> None:
    h = Harness(secure=True)
    h.login()
    assert h.command(f"USER {ALICE}").startswith(b"-ERR")
    assert h.command("STLS").startswith(b"-ERR")


def test_unknown_command_and_limit() -> None:
    h = Harness(secure=True)
    assert h.command("XYZZY") == b"-ERR Unknown command\r\n"
    for _ in range(19):
        h.command("XYZZY")
    assert h.closing


def test_too_long_line_closes() -> None:
    h = Harness(secure=True)
    assert h.send(b"NOOP " + b"x" * 10000 + b"\r\n").startswith(b"-ERR")
    assert h.closing


# -- transaction ---------------------------------------------------------------


def test_stat_list_uidl() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    assert h.command("STAT") == b"+OK 2 %d\r\n" % (len(MSG1) + len(MSG2))
    assert multiline(h.command("LIST")) == [b"1 %d" % len(MSG1), b"2 %d" % len(MSG2)]
    assert h.command("LIST 2") == b"+OK 2 %d\r\n" % len(MSG2)
    assert multiline(h.command("UIDL")) == [b"1 1700000000.M1P1.host", b"2 1700000000.M2P1.host"]
    assert h.command("UIDL 1") == b"+OK 1 1700000000.M1P1.host\r\n"
    assert h.mailbox.opened == []  # no body read for any of these
    assert h.mailbox.folders[0].read_only  # POP3 never changes \\Recent / \\Seen for IMAP clients


def test_bad_message_numbers() -> None:
    h = Harness([MSG1], secure=True)
    h.login()
    for command in ("LIST 0", "LIST 2", "LIST x", "LIST -1", "RETR 9", "DELE 2", "UIDL 5", "TOP 1", "TOP 1 x", "TOP 3 1", "RETR"):
        assert h.command(command).startswith(b"-ERR"), command
    assert not h.closing


def test_retr_byte_stuffs_and_ends_with_dot() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    reply = h.command("RETR 2")
    assert reply.startswith(b"+OK %d octets\r\n" % len(MSG2))
    assert b"\r\n..dot line\r\n...two dots\r\n" in reply
    assert b"\r\n".join(multiline(reply)) + b"\r\n" == MSG2


def test_retr_normalises_bare_lf_and_adds_final_crlf() -> None:
    h = Harness([b"Subject: lf\n\n.start\nno final newline"], secure=True)
    h.login()
    reply = h.command("RETR 1")
    assert reply.split(b"\r\n", 1)[1] == b"Subject: lf\r\n\r\n..start\r\nno final newline\r\n.\r\n"


def test_top() -> None:
    h = Harness([MSG2], secure=True)
    h.login()
    assert multiline(h.command("TOP 1 0")) == [b"Subject: two", b"From: b@example.test", b""]
    assert multiline(h.command("TOP 1 2")) == [b"Subject: two", b"From: b@example.test", b"", b"line 1", b".dot line"]
    assert b"\r\n".join(multiline(h.command("TOP 1 100"))) + b"\r\n" == MSG2


def test_dele_marks_until_quit() -> None:
    """RFC 1939 6: DELE only marks; the store changes in the UPDATE state after QUIT."""
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    assert h.command("DELE 1").startswith(b"+OK")
    assert h.command("DELE 1").startswith(b"-ERR")
    assert h.command("RETR 1").startswith(b"-ERR")
    assert h.command("LIST 1").startswith(b"-ERR")
    assert multiline(h.command("LIST")) == [b"2 %d" % len(MSG2)]
    assert multiline(h.command("UIDL")) == [b"2 1700000000.M2P1.host"]
    assert h.command("STAT") == b"+OK 1 %d\r\n" % len(MSG2)
    assert h.mailbox.expunged == [] and 1 in h.mailbox.bodies
    reply = h.command("QUIT")
    assert reply.startswith(b"+OK")
    assert h.mailbox.expunged == [1] and list(h.mailbox.bodies) == [2]
    assert h.mailbox.locked_by is None and h.closing


def test_rset_unmarks() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    h.command("DELE 1")
    h.command("DELE 2")
    assert h.command("RSET").startswith(b"+OK 2 messages")
    h.command("QUIT")
    assert h.mailbox.expunged == []


def test_dropped_connection_deletes_nothing_and_releases_lock() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    h.command("DELE 1")
    h.command("DELE 2")
    h.disconnect()
    assert h.mailbox.expunged == [] and len(h.mailbox.bodies) == 2
    assert h.mailbox.locked_by is None
    assert all(f.closed for f in h.mailbox.folders)


def test_quit_expunges_only_what_this_session_marked() -> None:
    """Messages another client flagged \\Deleted are not ours to expunge."""
    h = Harness([MSG1, MSG2], secure=True)
    h.mailbox.flags[2] = {"\\Deleted"}
    h.login()
    h.command("DELE 1")
    h.command("QUIT")
    assert h.mailbox.expunged == [1] and 2 in h.mailbox.bodies


def test_update_failure_is_reported() -> None:
    h = Harness([MSG1], secure=True)
    h.login()
    h.command("DELE 1")
    h.mailbox.fail_expunge = True
    with capturedLogs() as events:
        assert h.command("QUIT").startswith(b"-ERR [SYS/TEMP]")
    assert any(e.get("log_failure") is not None for e in events)
    assert h.mailbox.locked_by is None and h.closing


def test_message_arriving_during_session_not_shown() -> None:
    h = Harness([MSG1], secure=True)
    h.login()
    h.mailbox.add(MSG2)
    assert h.command("STAT").startswith(b"+OK 1 ")
    assert h.command("RETR 2").startswith(b"-ERR")


def test_message_expunged_elsewhere_during_session() -> None:
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    del h.mailbox.bodies[1]
    assert h.command("RETR 1").startswith(b"-ERR")
    assert h.command("RETR 2").startswith(b"+OK")


def test_noop_quit_in_authorization() -> None:
    h = Harness([MSG1], secure=True)
    h.login()
    assert h.command("NOOP") == b"+OK\r\n"
    h2 = Harness()
    assert h2.command("QUIT").startswith(b"+OK")
    assert h2.closing


def test_unexpected_error_is_logged_and_answered() -> None:
    h = Harness([MSG1], secure=True)
    h.login()

    def broken(uid: int) -> None:
        raise RuntimeError("boom")

    h.session.maildrop.folder.open_reader = broken  # type: ignore[union-attr]
    with capturedLogs() as events:
        assert h.command("RETR 1") == b"-ERR [SYS/TEMP] Internal server error, try again later\r\n"
    assert any(e.get("log_level") == LogLevel.critical and "boom" in str(e.get("log_failure")) for e in events)
    assert h.command("NOOP") == b"+OK\r\n"


# -- pipelining and timeouts ---------------------------------------------------


def test_pipelined_commands_wait_for_login() -> None:
    """RFC 2449 6.6: commands after PASS run only once the (slow) login is decided, in order."""
    h = Harness([MSG1], secure=True)
    h.auth.pending = []
    reply = h.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nRETR 1\r\nQUIT\r\n".encode())
    assert reply == b"+OK Send PASS\r\n"
    h.auth.pending[0].callback(None)
    reply = h.take()
    first, stat, rest = reply.split(b"\r\n", 2)
    assert first.startswith(b"+OK Logged in") and stat == b"+OK 1 %d" % len(MSG1)
    assert rest.endswith(b"+OK Bye, 0 messages deleted\r\n")
    assert rest.count(b"\r\n.\r\n") == 2


def test_pipelined_sasl_response_after_slow_command() -> None:
    h = Harness([MSG1], secure=True)
    h.auth.pending = []
    h.send(f"USER {ALICE}\r\nPASS wrong\r\nAUTH PLAIN\r\n{plain('', ALICE, PASSWORD)}\r\nSTAT\r\n".encode())
    h.auth.pending.pop().callback(None)
    reply = h.take()
    assert reply.startswith(b"-ERR [AUTH] Authentication failed\r\n+ \r\n")
    h.auth.pending.pop().callback(None)
    reply = h.take()
    assert reply.startswith(b"+OK Logged in") and b"+OK 1 " in reply


def test_inactivity_timeout_closes_without_update() -> None:
    """RFC 1939 3: ten minutes of silence closes the connection; nothing is deleted."""
    h = Harness([MSG1], secure=True)
    h.login()
    h.command("DELE 1")
    h.clock.advance(599)
    assert not h.closing
    h.command("NOOP")  # a command restarts the timer
    h.clock.advance(599)
    assert not h.closing
    h.clock.advance(2)
    assert h.take() == b"-ERR Disconnected for inactivity\r\n" and h.closing
    h.disconnect()
    assert h.mailbox.expunged == [] and h.mailbox.locked_by is None


def test_timeout_is_configurable() -> None:
    h = Harness(timeout=30)
    h.clock.advance(29)
    assert not h.closing
    h.clock.advance(2)
    assert h.take().startswith(b"-ERR") and h.closing


def test_login_finishing_after_disconnect_releases_lock() -> None:
    h = Harness([MSG1], secure=True)
    h.auth.pending = []
    h.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
    h.disconnect()
    h.auth.pending[0].callback(None)
    assert h.mailbox.locked_by is None


def test_streaming_respects_backpressure() -> None:
    """RETR stops reading the message while the transport is paused (after one chunk of read-ahead)."""
    body = b"".join(b"line %06d of a long message\r\n" % i for i in range(100000))
    h = Harness([body], secure=True)
    h.login()
    paused: list[bool] = []
    read_calls: list[int] = []

    waiting: list[defer.Deferred[object]] = []

    def gate(then):  # type: ignore[no-untyped-def]
        """A store call that completes when the test says so."""
        read_calls.append(1)
        d: defer.Deferred[object] = defer.Deferred()
        waiting.append(d)
        return d.addCallback(lambda _: then())

    class GatedReader:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        def read(self, start, length, then=None):  # type: ignore[no-untyped-def]
            return gate(lambda: self.inner.read(start, length, then))

        def close(self) -> None:
            self.inner.close()

    folder = h.session.maildrop.folder  # type: ignore[union-attr]
    real_open = folder.open_reader
    folder.open_reader = lambda uid: gate(lambda: real_open(uid)).addCallback(GatedReader)
    h.send(b"RETR 1\r\n")
    waiting.pop(0).callback(None)  # open the file
    h.transport.producer.pauseProducing()
    paused.append(True)
    # While paused, the read under way may finish and one more may be prefetched; then reading stops.
    for _ in range(2):
        if waiting:
            waiting.pop(0).callback(None)
    assert not waiting
    calls = len(read_calls)
    assert calls <= 4  # open + at most two reads: a 3.2 MB message is not read ahead while paused
    h.transport.producer.resumeProducing()
    while waiting:
        waiting.pop(0).callback(None)
    reply = h.take()
    assert reply.endswith(b"\r\n.\r\n") and len(reply) > len(body)


def test_keepalive_and_nodelay_on_the_real_socket_under_wrappers() -> None:
    """A silently dead client is detected by TCP keepalive in ~2 minutes (its lock with it)."""
    import socket

    from mailsuite.pop3.protocol import KEEPALIVE_IDLE, enable_keepalive, tcp_socket

    class Layer:
        def __init__(self, inner: object) -> None:
            self.transport = inner

    class TCP:
        def __init__(self, sock: socket.socket) -> None:
            self.socket = sock

    sock = socket.socket()
    try:
        found = tcp_socket(Layer(Layer(TCP(sock))))  # TLS and connection-limit wrappers
        assert found is sock
        enable_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
    finally:
        sock.close()
    assert tcp_socket(Harness().transport) is None


def test_store_failure_at_login_is_temporary_and_releases_lock() -> None:
    from mailsuite.errors import TemporaryFailure

    h = Harness([MSG1], secure=True)
    h.mailbox.open_folder = lambda name, read_only=False: defer.fail(TemporaryFailure("disk busy"))  # type: ignore[method-assign]
    h.command(f"USER {ALICE}")
    assert h.command(f"PASS {PASSWORD}") == b"-ERR [SYS/TEMP] disk busy\r\n"
    assert h.mailbox.locked_by is None
    assert h.command("STAT").startswith(b"-ERR")  # still AUTHORIZATION


def test_permanent_error_gets_sys_perm() -> None:
    from mailsuite.errors import InvalidName

    h = Harness(secure=True)
    h.auth.login = lambda ip, user, password: defer.fail(InvalidName("not a usable address"))  # type: ignore[method-assign]
    h.command("USER x/y")
    assert h.command("PASS z") == b"-ERR [SYS/PERM] not a usable address\r\n"


def test_list_and_uidl_of_many_messages_read_no_body() -> None:
    h = Harness([b"Subject: %d\r\n\r\nx\r\n" % i for i in range(3000)], secure=True)
    h.login()
    listing = multiline(h.command("LIST"))
    assert len(listing) == 3000 and listing[0] == b"1 17" and listing[-1] == b"3000 20"
    uidl = multiline(h.command("UIDL"))
    assert len(uidl) == 3000 and len({line.split()[1] for line in uidl}) == 3000
    assert h.mailbox.opened == []


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_verbs = st.sampled_from([b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL", b"CAPA", b"USER", b"PASS", b"AUTH", b"STLS", b"APOP", b"list", b"XTND", b""])
_args = st.lists(st.one_of(st.integers(min_value=-3, max_value=5).map(lambda n: b"%d" % n), st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)), max_size=3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(st.tuples(_verbs, _args), max_size=12))
def test_any_command_sequence_gets_protocol_answers(commands: list[tuple[bytes, list[bytes]]]) -> None:
    """Whatever a client sends, the session answers +OK / -ERR / "+ " and never hits an unexpected error."""
    h = Harness([MSG1, MSG2], secure=True)
    h.login()
    with capturedLogs() as events:
        for verb, args in commands:
            if h.closing:
                break
            reply = h.send(b" ".join([verb, *args]) + b"\r\n")
            assert reply[:3] in (b"+OK", b"-ER", b"+ \r"), reply
    assert not [e for e in events if e.get("log_failure") is not None]
    if not h.closing:
        if h.session.state == "AUTH":
            h.command("*")
        assert h.command("NOOP") in (b"+OK\r\n", b"-ERR Command not valid in this state\r\n")
    assert h.mailbox.expunged == []  # nothing is deleted without QUIT


def test_error_text_cannot_inject_lines() -> None:
    from mailsuite.errors import TemporaryFailure

    h = Harness(secure=True)
    h.auth.login = lambda ip, user, password: defer.fail(TemporaryFailure("bad\r\n+OK injected"))  # type: ignore[method-assign]
    h.command("USER x")
    assert h.command("PASS y") == b"-ERR [SYS/TEMP] bad  +OK injected\r\n"


def test_unique_id_is_the_key_or_a_stable_digest() -> None:
    """RFC 1939 7: 1-70 characters 0x21-0x7E; other keys map to the same digest every time."""
    from mailsuite.pop3.maildrop import unique_id

    assert unique_id("1700000000.M1P2Q3.host,S=42") == b"1700000000.M1P2Q3.host,S=42"
    for bad in ("x" * 71, "with space", "caf\u00e9", "tab\tkey"):
        uid = unique_id(bad)
        assert uid == unique_id(bad) and len(uid) == 40 and all(0x21 <= b <= 0x7E for b in uid)
    assert unique_id("x" * 71) != unique_id("x" * 72)
