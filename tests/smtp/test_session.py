"""The SMTP state machine on a StringTransport and task.Clock, over the real directory, store and login."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from mailsuite.errors import MailError, TemporaryFailure
from .harness import ALICE, BOB, PASSWORD, World


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def envelope(s, sender: str = "someone@remote.test", rcpts: tuple[str, ...] = (ALICE,)) -> bytes:
    s.cmd("EHLO client.test")
    out = s.cmd(f"MAIL FROM:<{sender}>")
    for r in rcpts:
        out += s.cmd(f"RCPT TO:<{r}>")
    return out


def test_greeting_and_ehlo_extensions(world: World) -> None:
    """220 greeting; EHLO lists every extension, STARTTLS before TLS, no AUTH on port 25 by default."""
    s = world.session()
    assert s.greeting == b"220 mail.example.test ESMTP mailsuite\r\n"
    reply = s.cmd("EHLO client.test").decode()
    for ext in ("PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "STARTTLS"):
        assert f"250-{ext}\r\n" in reply or f"250 {ext}\r\n" in reply, ext
    assert "AUTH" not in reply


def test_smtp_listener_offers_auth_when_configured(tmp_path: Path) -> None:
    """[smtp] auth = true offers AUTH on port 25 (over TLS)."""
    world = World(tmp_path, smtp_auth=True)
    s = world.session()
    s.cmd("EHLO c")
    s.cmd("STARTTLS")
    assert b"AUTH PLAIN LOGIN" in s.cmd("EHLO c")


def test_submission_offers_auth_only_after_tls(world: World) -> None:
    """587: AUTH not offered or accepted in clear; offered after STARTTLS."""
    s = world.session("submission")
    assert b"AUTH" not in s.cmd("EHLO c")
    assert s.codes(s.login()) == ["538 5.7.11"]
    assert s.cmd("STARTTLS").startswith(b"220 2.0.0")
    assert s.transport.tls_started
    reply = s.cmd("EHLO c")
    assert b"AUTH PLAIN LOGIN" in reply and b"STARTTLS" not in reply


def test_plaintext_auth_when_allowed(tmp_path: Path) -> None:
    """tls.allow_plaintext_auth lets AUTH work without TLS."""
    world = World(tmp_path, allow_plaintext_auth=True)
    s = world.session("submission")
    assert b"AUTH PLAIN LOGIN" in s.cmd("EHLO c")
    assert s.codes(s.login()) == ["235 2.7.0"]


def test_implicit_tls_listener(world: World) -> None:
    """465: TLS from the start, no STARTTLS, AUTH offered at once."""
    s = world.session("submissions")
    reply = s.cmd("EHLO c")
    assert b"STARTTLS" not in reply and b"AUTH PLAIN LOGIN" in reply
    assert s.codes(s.cmd("STARTTLS")) == ["503 5.5.1"]


def test_inbound_delivery_with_trace_headers(world: World) -> None:
    """Port 25: local recipient stored with Return-Path, Delivered-To, Received; 250 only after."""
    s = world.session()
    assert s.codes(envelope(s)) == ["250 2.1.0", "250 2.1.5"]
    assert s.cmd("DATA").startswith(b"354 ")
    reply = s.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
    assert s.codes(reply) == ["250 2.0.0"]
    [stored] = world.inbox(ALICE)
    head, _, body = stored.partition(b"\r\n\r\n")
    assert head.startswith(b"Return-Path: <someone@remote.test>\r\nDelivered-To: alice@example.test\r\nReceived: from client.test ([192.0.2.1])\r\n\tby mail.example.test (mailsuite) with ESMTP id ")
    assert b"for <alice@example.test>;" in head
    assert body == b".dot\r\nbody\r\n"
    assert b"Message-ID" not in head  # only submission adds it


def test_unknown_user_and_relay_denied(world: World) -> None:
    """550 5.1.1 for an unknown local user, 554 5.7.1 for another domain without AUTH."""
    s = world.session()
    out = envelope(s, rcpts=("nobody@example.test", "x@elsewhere.test"))
    assert s.codes(out) == ["250 2.1.0", "550 5.1.1", "554 5.7.1"]
    assert s.codes(s.cmd("DATA")) == ["554 5.5.1"]


def test_postmaster_without_domain(world: World) -> None:
    """RCPT TO:<Postmaster> is accepted when postmaster exists (RFC 5321 4.1.1.3)."""
    world.directory.add_alias("postmaster@example.test", [ALICE])
    s = world.session()
    envelope(s, rcpts=())
    assert s.codes(s.cmd("RCPT TO:<Postmaster>")) == ["250 2.1.5"]


def test_alias_local_and_remote_targets(world: World) -> None:
    """An alias to a local user and a remote address: the mailbox and the queue each get the message."""
    world.directory.add_alias("team@example.test", [BOB, "ext@remote.test"])
    s = world.session()
    envelope(s, rcpts=("team@example.test",))
    s.cmd("DATA")
    assert s.codes(s.send(b"Subject: t\r\n\r\nx\r\n.\r\n")) == ["250 2.0.0"]
    assert len(world.inbox(BOB)) == 1
    [(env, data, prefix)] = world.queue.entries
    assert env.recipients == ("ext@remote.test",) and env.sender == "someone@remote.test" and not env.body_8bit
    assert data == b"Subject: t\r\n\r\nx\r\n" and prefix.startswith(b"Received: ")


def test_eight_bit_body_is_flagged_for_the_queue(world: World) -> None:
    """8-bit data sent without BODY=8BITMIME still reaches the queue marked 8-bit (so the relay can pick BODY=8BITMIME)."""
    world.directory.add_alias("fwd@example.test", ["ext@remote.test"])
    s = world.session()
    envelope(s, rcpts=("fwd@example.test",))
    s.cmd("DATA")
    assert s.codes(s.send("Subject: é\r\n\r\nü\r\n.\r\n".encode())) == ["250 2.0.0"]
    [(env, _, _)] = world.queue.entries
    assert env.body_8bit


def test_no_queue_means_451_for_remote(tmp_path: Path) -> None:
    """Without a relay queue a remote recipient is a temporary failure at RCPT."""
    world = World(tmp_path, queue=False)
    s = world.session("submissions")
    s.cmd("EHLO c")
    s.login()
    s.cmd(f"MAIL FROM:<{ALICE}>")
    assert s.codes(s.cmd("RCPT TO:<x@remote.test>")) == ["451 4.3.0"]


def test_submission_policy(world: World) -> None:
    """MAIL before AUTH 530; foreign sender 553; own address may send anywhere; Message-ID and Date added."""
    s = world.session("submissions")
    s.cmd("EHLO c")
    assert s.codes(s.cmd(f"MAIL FROM:<{ALICE}>")) == ["530 5.7.0"]
    assert s.codes(s.login()) == ["235 2.7.0"]
    assert s.codes(s.cmd(f"MAIL FROM:<{BOB}>")) == ["553 5.7.1"]
    assert s.codes(s.cmd("MAIL FROM:<ALICE@EXAMPLE.TEST>")) == ["250 2.1.0"]
    assert s.codes(s.cmd("RCPT TO:<friend@remote.test>") + s.cmd(f"RCPT TO:<{BOB}>")) == ["250 2.1.5", "250 2.1.5"]
    s.cmd("DATA")
    assert s.codes(s.send(b"Subject: s\r\n\r\nhello\r\n.\r\n")) == ["250 2.0.0"]
    [stored] = world.inbox(BOB)
    assert b"with ESMTPSA id" in stored and b"\r\nMessage-ID: <" in stored and b"\r\nDate: " in stored
    assert ALICE.encode() not in stored.split(b"Received:")[1].split(b"\r\nMessage-ID")[0]  # user not leaked
    [(env, _, prefix)] = world.queue.entries
    assert env.recipients == ("friend@remote.test",) and b"Message-ID: <" in prefix


def test_submission_keeps_existing_message_id(world: World) -> None:
    """A message with Message-ID and Date gets neither added again."""
    s = world.session("submissions")
    s.cmd("EHLO c")
    s.login()
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd(f"RCPT TO:<{BOB}>")
    s.cmd("DATA")
    s.send(b"Message-ID: <a@b>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nx\r\n.\r\n")
    [stored] = world.inbox(BOB)
    assert stored.count(b"Message-ID:") == 1 and stored.count(b"\nDate:") == 1


def test_auth_login_and_failures(world: World) -> None:
    """AUTH LOGIN prompts; wrong password 535; cancel 501; bad base64 501; second AUTH 503."""
    s = world.session("submissions")
    s.cmd("EHLO c")
    assert s.cmd("AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert s.cmd(base64.b64encode(ALICE.encode()).decode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert s.codes(s.cmd(base64.b64encode(b"wrong").decode())) == ["535 5.7.8"]
    assert s.cmd("AUTH PLAIN") == b"334 \r\n"
    assert s.codes(s.cmd("*")) == ["501 5.0.0"]
    assert s.codes(s.cmd("AUTH PLAIN !!!")) == ["501 5.5.2"]
    assert s.codes(s.cmd("AUTH CRAM-MD5")) == ["504 5.5.4"]
    assert s.codes(s.login()) == ["235 2.7.0"]
    assert s.codes(s.login()) == ["503 5.5.1"]


class _FailingAuthenticator:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def login(self, ip: str, username: str, password: str) -> Any:
        from twisted.internet import defer

        return defer.fail(self.error)


@pytest.mark.parametrize(("error", "reply"), [
    (TemporaryFailure("directory busy"), b"454 4.7.0 directory busy\r\n"),
    (MailError("disk broken", code=554, enhanced="5.3.0"), b"454 4.7.0 Temporary authentication failure\r\n"),
])
def test_auth_login_service_failure_is_454(world: World, error: Exception, reply: bytes) -> None:
    """RFC 4954 6: the login service failing (not the password) is 454 4.7.0, and the session goes on."""
    world.context.authenticator = _FailingAuthenticator(error)
    s = world.session("submissions")
    s.cmd("EHLO c")
    assert s.login() == reply
    assert not s.closed
    assert s.codes(s.cmd("NOOP")) == ["250 2.0.0"]


def test_auth_sasl_errors_of_each_kind(world: World) -> None:
    """Malformed PLAIN responses 501 5.5.2 with the reason; acting as another user 535 5.7.8; LOGIN over two lines."""
    s = world.session("submissions")
    s.cmd("EHLO c")
    assert s.cmd("AUTH PLAIN " + base64.b64encode(b"just one field").decode()) == b"501 5.5.2 Invalid PLAIN response\r\n"
    assert s.cmd("AUTH PLAIN " + base64.b64encode(b"\x00alice\x00\xff").decode()) == b"501 5.5.2 Invalid UTF-8 in credentials\r\n"
    assert s.cmd("AUTH PLAIN =") == b"501 5.5.2 Invalid PLAIN response\r\n"
    assert s.codes(s.cmd("AUTH PLAIN " + base64.b64encode(f"{BOB}\0{ALICE}\0{PASSWORD}".encode()).decode())) == ["535 5.7.8"]
    assert s.cmd("AUTH LOGIN " + base64.b64encode(ALICE.encode()).decode()) == b"334 UGFzc3dvcmQ6\r\n"
    assert s.codes(s.cmd(base64.b64encode(PASSWORD.encode()).decode())) == ["235 2.7.0"]


def test_auth_throttle_ends_with_454_and_disconnect(world: World) -> None:
    """Repeated failures cost delays, then 454 4.7.0 and the connection is closed."""
    s = world.session("submissions")
    s.cmd("EHLO c")
    replies = []
    for _ in range(6):
        out = s.login(ALICE, "bad")
        while not out and not s.closed:
            world.clock.advance(1)
            out = s.take()
        replies.append(s.codes(out)[0])
        if s.closed:
            break
    assert replies[0] == "535 5.7.8"
    assert replies[-1] == "454 4.7.0" and s.closed


def test_credentials_never_logged(world: World) -> None:
    """Neither the password nor the AUTH payload appears in the log."""
    from twisted.logger import capturedLogs, formatEvent

    with capturedLogs() as events:
        s = world.session("submissions")
        s.cmd("EHLO c")
        s.login(ALICE, "secret-pass-1")
        s.login(ALICE, PASSWORD)
    text = "\n".join(formatEvent(e) for e in events)
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert PASSWORD not in text and "secret-pass-1" not in text and token not in text
    assert "authenticated as alice@example.test" in text


def test_starttls_discards_pipelined_commands_and_resets_state(world: World) -> None:
    """Bytes after STARTTLS in the same packet are dropped; EHLO needed again afterwards."""
    s = world.session()
    s.cmd("EHLO c")
    out = s.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@example.test>\r\n")
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.codes(s.cmd("MAIL FROM:<a@b.test>")) == ["503 5.5.1"]  # no EHLO since the handshake
    assert s.codes(s.cmd("EHLO c")) == ["250"]


def test_pipelined_replies_in_order(world: World) -> None:
    """One packet with the whole envelope gets its replies in order."""
    s = world.session()
    out = s.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<x@other.test>\r\nDATA\r\n")
    assert s.codes(out) == ["250", "250 2.1.0", "550 5.1.1", "250 2.1.5", "554 5.7.1", "354"]
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    out = s.send(b"x\r\n.\r\nMAIL FROM:<b@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n")
    assert s.codes(out) == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]


def test_replies_wait_for_slow_commands(world: World) -> None:
    """A command answered later (a Deferred) still gets its reply before the next command's."""
    from twisted.internet import defer

    pending: list[defer.Deferred[None]] = []
    real = world.store.check_quota
    world.store.check_quota = lambda a, n: pending.append(defer.Deferred()) or pending[-1]  # type: ignore[method-assign]
    s = world.session()
    out = s.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nNOOP\r\n")
    assert out == b""  # RFC 2920: replies wait while pipelined commands are still buffered
    world.store.check_quota = real  # type: ignore[method-assign]
    pending[0].callback(None)
    assert s.codes(s.take()) == ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0"]
    out = s.send(b"RSET\r\nMAIL FROM:<a@remote.test>\r\n")
    assert s.codes(out) == ["250 2.0.0", "250 2.1.0"]  # input drained: everything is written at once
    world.store.check_quota = lambda a, n: pending.append(defer.Deferred()) or pending[-1]  # type: ignore[method-assign]
    assert s.cmd("RCPT TO:<bob@example.test>") == b""  # waiting on the Deferred, nothing else to do
    pending[1].callback(None)
    assert s.codes(s.take()) == ["250 2.1.5"]


def test_commands_that_fail_now_or_after_waiting_get_their_error_and_the_session_goes_on(world: World) -> None:
    """A refusal raised at once, or after a Deferred fired, is the reply; an unexpected error is a 451; later commands run."""
    from twisted.internet import defer

    from mailsuite.errors import QuotaExceeded

    pending: list[defer.Deferred[None]] = []
    real = world.store.check_quota
    world.store.check_quota = lambda a, n: pending.append(defer.Deferred()) or pending[-1]  # type: ignore[method-assign]
    s = world.session()
    envelope(s, rcpts=())
    assert s.cmd("RCPT TO:<alice@example.test>") == b""
    pending[0].errback(QuotaExceeded())
    assert s.codes(s.take()) == ["552 5.2.2"]
    assert s.cmd("RCPT TO:<bob@example.test>") == b""
    pending[1].errback(RuntimeError("disk on fire"))
    assert s.codes(s.take()) == ["451 4.3.0"]
    world.store.check_quota = lambda a, n: (_ for _ in ()).throw(RuntimeError("at once"))  # type: ignore[method-assign]
    assert s.codes(s.cmd("RCPT TO:<bob@example.test>")) == ["451 4.3.0"]
    world.store.check_quota = real  # type: ignore[method-assign]
    assert s.codes(s.cmd("RCPT TO:<bob@example.test>")) == ["250 2.1.5"]
    assert s.codes(s.send(b"DATA\r\nhello\r\n.\r\n")) == ["354", "250 2.0.0"]
    assert world.inbox(BOB)


@pytest.mark.parametrize("seq", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"])
def test_smuggling_refused(world: World, seq: bytes) -> None:
    """A lax end marker neither ends the data nor starts a second message; the whole message is refused."""
    s = world.session()
    envelope(s)
    s.cmd("DATA")
    out = s.send(b"Subject: a\r\n\r\nfirst" + seq + b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
    assert s.codes(out) == ["550 5.6.11"]
    assert world.inbox(ALICE) == [] and world.inbox(BOB) == []
    assert s.codes(s.cmd("NOOP")) == ["250 2.0.0"]


def test_bdat(world: World) -> None:
    """CHUNKING: chunks of exact sizes, binary-safe, LAST stores the message."""
    s = world.session()
    envelope(s)
    body1 = b"Subject: b\r\n\r\n.leading dot\r\n"
    body2 = b"\r\n.\r\nnot an end\r\n"
    out = s.send(b"BDAT %d\r\n" % len(body1) + body1 + b"BDAT %d LAST\r\n" % len(body2) + body2 + b"NOOP\r\n")
    assert s.codes(out) == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    [stored] = world.inbox(ALICE)
    assert stored.endswith(body1 + body2)


def test_bdat_errors_consume_the_chunk(world: World) -> None:
    """BDAT without MAIL: 503, and the chunk's bytes are not taken as commands; DATA after BDAT 503."""
    s = world.session()
    s.cmd("EHLO c")
    out = s.send(b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert s.codes(out) == ["503 5.5.1", "250 2.0.0"]
    envelope(s)
    s.send(b"BDAT 3\r\nabc")
    assert s.codes(s.cmd("DATA")) == ["503 5.5.1"]
    assert s.codes(s.cmd("BDAT 0 LAST")) == ["250 2.0.0"]
    assert world.inbox(ALICE)[0].endswith(b"-0000\r\nabc")


def test_bdat_bare_lf_and_size_limit(tmp_path: Path) -> None:
    """BDAT with a bare LF is refused (550 5.6.11); past the size limit 552 5.3.4 and nothing stored."""
    world = World(tmp_path, limits={"message_size": 1000})
    s = world.session()
    envelope(s)
    assert s.codes(s.send(b"BDAT 4 LAST\r\na\nb\n")) == ["550 5.6.11"]
    assert s.codes(s.cmd("MAIL FROM:<a@remote.test> SIZE=1001")) == ["552 5.3.4"]
    s.cmd("MAIL FROM:<a@remote.test>")
    s.cmd(f"RCPT TO:<{ALICE}>")
    out = s.send(b"BDAT 800\r\n" + b"x" * 800 + b"BDAT 800\r\n" + b"y" * 800 + b"BDAT 10 LAST\r\n" + b"z" * 10 + b"NOOP\r\n")
    assert s.codes(out) == ["250 2.0.0", "552 5.3.4", "552 5.3.4", "250 2.0.0"]
    assert world.inbox(ALICE) == []


def test_data_size_limit(tmp_path: Path) -> None:
    """DATA past message_size: 552 5.3.4 after the end marker, nothing stored, session goes on."""
    world = World(tmp_path, limits={"message_size": 1000})
    s = world.session()
    envelope(s)
    s.cmd("DATA")
    for _ in range(20):
        assert s.send(b"y" * 998 + b"\r\n") == b""
    assert s.codes(s.send(b".\r\nNOOP\r\n")) == ["552 5.3.4", "250 2.0.0"]
    assert world.inbox(ALICE) == []


def test_recipient_limit(tmp_path: Path) -> None:
    """More than limits.recipients RCPTs: 452 4.5.3."""
    world = World(tmp_path, limits={"recipients": 2})
    s = world.session()
    out = envelope(s, rcpts=(ALICE, BOB, ALICE))
    assert s.codes(out)[-1] == "452 4.5.3"


def test_line_length_limit(world: World) -> None:
    """A command line longer than smtp_line_length: 500 5.5.2, and the session continues."""
    s = world.session()
    assert s.codes(s.send(b"NOOP " + b"x" * 3000)) == []
    assert s.codes(s.send(b"x" * 3000 + b"\r\nNOOP\r\n")) == ["500 5.5.2", "250 2.0.0"]


def test_quota_at_rcpt_and_at_data(world: World) -> None:
    """A full mailbox is refused at RCPT (552 5.2.2); a quota filled meanwhile fails DATA with 452 and no copy anywhere."""
    world.directory.set_quota(BOB, 5000, None)
    s = world.session()
    assert s.codes(envelope(s, rcpts=(ALICE, BOB)) )[-1] == "250 2.1.5"
    s.cmd("DATA")
    assert s.codes(s.send(b"x" * 6000 + b"\r\n.\r\n")) == ["452 4.2.2"]
    assert world.inbox(ALICE) == [] and world.inbox(BOB) == []
    s.cmd("MAIL FROM:<a@remote.test> SIZE=6000")
    assert s.codes(s.cmd(f"RCPT TO:<{BOB}>")) == ["552 5.2.2"]
    s.cmd("RSET")
    s.cmd("MAIL FROM:<a@remote.test>")
    s.cmd(f"RCPT TO:<{BOB}>")
    s.cmd("DATA")  # a single target: the store's own check refuses it
    assert s.codes(s.send(b"x" * 6000 + b"\r\n.\r\n")) == ["452 4.2.2"]
    assert world.inbox(BOB) == []


def test_queue_failure_is_temporary(world: World) -> None:
    """If the queue cannot take the message, the client hears 451, never 250."""
    world.queue.fail_with = TemporaryFailure("spool full")
    s = world.session("submissions")
    s.cmd("EHLO c")
    s.login()
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd("RCPT TO:<x@remote.test>")
    s.cmd("DATA")
    assert s.codes(s.send(b"a\r\n.\r\n")) == ["451 4.3.0"]


def test_queue_disk_full_is_mail_system_full(world: World) -> None:
    """A spool that hits ENOSPC gives 452 4.3.1 (RFC 3463: mail system full), not 451 4.3.0."""
    import errno

    world.queue.fail_with = OSError(errno.ENOSPC, "No space left on device")
    s = world.session("submissions")
    s.cmd("EHLO c")
    s.login()
    s.cmd(f"MAIL FROM:<{ALICE}>")
    s.cmd("RCPT TO:<x@remote.test>")
    s.cmd("DATA")
    assert s.codes(s.send(b"a\r\n.\r\n")) == ["452 4.3.1"]


def test_smtputf8_addresses(world: World) -> None:
    """A UTF-8 sender needs SMTPUTF8 (553 5.6.7 without); with it the message is delivered and marked UTF8SMTP."""
    s = world.session()
    s.cmd("EHLO c")
    assert s.codes(s.cmd("MAIL FROM:<jöran@bücher.example>")) == ["553 5.6.7"]
    assert s.codes(s.cmd("MAIL FROM:<jöran@bücher.example> SMTPUTF8")) == ["250 2.1.0"]
    s.cmd(f"RCPT TO:<{ALICE}>")
    s.cmd("DATA")
    assert s.codes(s.send("Subject: grüße\r\n\r\nö\r\n.\r\n".encode())) == ["250 2.0.0"]
    [stored] = world.inbox(ALICE)
    assert "Return-Path: <jöran@bücher.example>".encode() in stored and b"with UTF8SMTP id" in stored


def test_simple_commands(world: World) -> None:
    """VRFY 252, EXPN 502, HELP 214, RSET/NOOP 250, unknown 500, QUIT 221 and close."""
    s = world.session()
    assert s.codes(s.cmd("VRFY alice")) == ["252 2.5.0"]
    assert s.codes(s.cmd("EXPN list")) == ["502 5.5.1"]
    assert s.codes(s.cmd("HELP")) == ["214 2.0.0"]
    assert s.codes(s.cmd("RSET") + s.cmd("NOOP")) == ["250 2.0.0", "250 2.0.0"]
    assert s.codes(s.cmd("FOO")) == ["500 5.5.2"]
    assert s.codes(s.cmd("MAIL FROM:<a@b.test>")) == ["503 5.5.1"]
    s.cmd("HELO c")
    assert s.codes(s.cmd("RCPT TO:<alice@example.test>")) == ["503 5.5.1"]
    assert s.codes(s.cmd("MAIL FROM:<a@b.test> FOO=1")) == ["555 5.5.4"]
    assert s.codes(s.cmd("QUIT")) == ["221 2.0.0"] and s.closed


def test_too_many_errors_closes(tmp_path: Path) -> None:
    """smtp_max_errors error replies end the session with 421 4.7.0."""
    world = World(tmp_path, limits={"smtp_max_errors": 3})
    s = world.session()
    out = s.send(b"X\r\nY\r\nZ\r\nNOOP\r\n")
    assert s.codes(out) == ["500 5.5.2", "500 5.5.2", "500 5.5.2", "421 4.7.0"] and s.closed


def test_timeouts(tmp_path: Path) -> None:
    """Idle past smtp_timeout: 421 4.4.2; inside DATA smtp_data_timeout applies."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0, "smtp_data_timeout": 100.0})
    s = world.session()
    world.clock.advance(29)
    s.cmd("EHLO c")
    world.clock.advance(29)
    assert not s.closed
    world.clock.advance(2)
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed
    s = world.session()
    envelope(s)
    s.cmd("DATA")
    world.clock.advance(60)
    assert not s.closed
    world.clock.advance(41)
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed
    # after a message the command timeout applies again, not the longer DATA one
    s = world.session()
    envelope(s)
    s.cmd("DATA")
    world.clock.advance(90)
    assert s.codes(s.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")) == ["250 2.0.0"]
    world.clock.advance(29)
    assert not s.closed
    world.clock.advance(2)
    assert s.codes(s.take()) == ["421 4.4.2"] and s.closed


def test_unexpected_error_is_logged_and_answered_451(world: World) -> None:
    """A bug below the protocol gives 451 4.3.0 and a logged traceback, and the session goes on."""
    from twisted.logger import capturedLogs

    def broken(address: str) -> None:
        raise RuntimeError("boom")

    world.directory.resolve = broken  # type: ignore[method-assign]
    with capturedLogs() as events:
        s = world.session()
        out = envelope(s)
    assert s.codes(out) == ["250 2.1.0", "451 4.3.0"] and b"boom" not in out
    assert any(e.get("log_failure") is not None for e in events)
    assert s.codes(s.cmd("NOOP")) == ["250 2.0.0"]


def test_fault_plan(world: World) -> None:
    """Faults from the test fixture's plan replace a reply, delay it, or drop the connection."""
    from mailsuite.testing.faults import Fault, FaultPlan

    world.context.faults = FaultPlan()
    world.context.faults.add(Fault("RCPT", code=451, text="try later"))
    world.context.faults.add(Fault("DATA", code=554, text="no"))
    s = world.session()
    out = envelope(s, rcpts=(ALICE, ALICE))
    assert out.endswith(b"451 try later\r\n250 2.1.5 Recipient OK\r\n")
    s.cmd("DATA")
    assert s.send(b"x\r\n.\r\n") == b"554 no\r\n"
    assert world.inbox(ALICE) == []
    world.context.faults.add(Fault("MAIL", delay=5.0))
    assert s.cmd("MAIL FROM:<a@remote.test>") == b""
    world.clock.advance(5)
    assert s.codes(s.take()) == ["250 2.1.0"]
    world.context.faults.add(Fault("RSET", drop=True))
    s.cmd("RSET")
    assert s.transport.aborted


def test_helo_names(world: World) -> None:
    """Odd but harmless HELO names are accepted; ones that could forge trace text are refused (501)."""
    s = world.session()
    for good in ("client.example", "[192.0.2.1]", "[IPv6:2001:db8::1]", "my_host"):
        assert s.codes(s.cmd(f"EHLO {good}"))[0] == "250", good
    for bad in ("", "a b", "x(y)", "name;"):
        assert s.codes(s.cmd(f"HELO {bad}")) == ["501"], bad


def test_smtputf8_local_recipient(world: World) -> None:
    """A UTF-8 local part is a recipient only in an SMTPUTF8 transaction; then it is stored."""
    from .harness import _HASH

    world.directory.add_user("jöran@example.test", password_hash=_HASH)
    s = world.session()
    s.cmd("EHLO c")
    s.cmd("MAIL FROM:<a@remote.test>")
    assert s.codes(s.cmd("RCPT TO:<jöran@example.test>")) == ["553 5.6.7"]
    s.cmd("RSET")
    s.cmd("MAIL FROM:<a@remote.test> SMTPUTF8")
    assert s.codes(s.cmd("RCPT TO:<jöran@example.test>")) == ["250 2.1.5"]
    s.cmd("DATA")
    assert s.codes(s.send(b"Subject: u\r\n\r\nx\r\n.\r\n")) == ["250 2.0.0"]
    from twisted.internet import defer

    status: list = []
    defer.ensureDeferred(_status(world, "jöran@example.test")).addBoth(status.append)
    assert status[0].messages == 1


async def _status(world: World, address: str):
    return await world.store.user_mailbox(address).status("INBOX")


COMMANDS = ["EHLO c", "HELO c", "MAIL FROM:<a@remote.test>", "MAIL FROM:<>", "RCPT TO:<alice@example.test>", "RCPT TO:<x@remote.test>",
            "DATA", "BDAT 3", "BDAT 0 LAST", "RSET", "NOOP", "VRFY x", "EXPN x", "HELP", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "*",
            "MAIL FROM:<a@remote.test> SIZE=10", "RCPT TO:<Postmaster>", ".", "..", "x", ""]


@pytest.mark.slow
def test_fuzzed_sessions_never_hit_a_server_bug(tmp_path: Path) -> None:
    """Random command sequences and byte noise: always answered, never an internal error or an exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from twisted.logger import capturedLogs

    world = World(tmp_path)
    items = st.one_of(st.sampled_from(COMMANDS).map(lambda c: c.encode() + b"\r\n"), st.binary(max_size=30))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(items, max_size=25))
    def run(stream: list[bytes]) -> None:
        with capturedLogs() as events:
            s = world.session()
            out = b""
            for piece in stream:
                out += s.send(piece)
        assert b"Internal error" not in out
        assert not [e for e in events if e.get("log_failure") is not None]

    run()


def test_partial_delivery_failure_is_temporary_and_logged(world: World) -> None:
    """A quota filled between the checks and the write (a race): 452 to the client, and the log names who got a copy."""
    from twisted.internet import defer
    from twisted.logger import capturedLogs, formatEvent

    world.directory.set_quota(BOB, 100, None)
    world.store.check_quota = lambda address, size: defer.succeed(None)  # type: ignore[method-assign]  # the race: checks pass
    with capturedLogs() as events:
        s = world.session()
        envelope(s, rcpts=(ALICE, BOB))
        s.cmd("DATA")
        assert s.codes(s.send(b"x" * 500 + b"\r\n.\r\n")) == ["452 4.2.2"]
    assert len(world.inbox(ALICE)) == 1 and world.inbox(BOB) == []
    text = "\n".join(formatEvent(e) for e in events)
    assert "copies were stored for alice@example.test" in text


def test_greeting_faults(world: World) -> None:
    """A CONNECT fault can delay the greeting, replace it, or refuse the connection."""
    from mailsuite.testing.faults import Fault, FaultPlan

    world.context.faults = FaultPlan()
    world.context.faults.add(Fault("CONNECT", delay=2.0))
    s = world.session()
    assert s.greeting == b""
    world.clock.advance(2)
    assert s.take().startswith(b"220 ")
    world.context.faults.add(Fault("CONNECT", code=220, text="slow greeting"))
    assert world.session().greeting == b"220 slow greeting\r\n"
    world.context.faults.add(Fault("CONNECT", code=554, text="go away"))
    s = world.session()
    assert s.greeting == b"554 go away\r\n" and s.closed


def test_client_not_reading_replies_stops_the_session(world: World) -> None:
    """While the transport says its buffer is full, commands wait; past MAX_BUFFERED reading stops; resume catches up."""
    from mailsuite.smtp.server import MAX_BUFFERED

    s = world.session()
    assert s.transport.producer is s.protocol
    s.protocol.pauseProducing()  # what the transport does when the client does not read
    assert s.send(b"NOOP\r\n" * 10) == b""
    s.send(b"NOOP\r\n" * (MAX_BUFFERED // 6 + 1))
    assert s.transport.producerState == "paused"  # no more socket reads
    s.protocol.resumeProducing()
    out = s.take()
    assert out.count(b"250 2.0.0 OK\r\n") == 10 + MAX_BUFFERED // 6 + 1
    assert s.transport.producerState == "producing"


def test_client_not_reading_replies_times_out(tmp_path: Path) -> None:
    """A client that neither reads nor sends is dropped at the timeout."""
    world = World(tmp_path, limits={"smtp_timeout": 30.0})
    s = world.session()
    s.protocol.pauseProducing()
    s.send(b"NOOP\r\n")
    world.clock.advance(31)
    assert s.transport.aborted
