"""The SMTP client conversation as a state machine: bytes out, scripted replies in, a Clock for timeouts."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from mailsuite.queue.client import ConnectFailed, ProtocolFailure, SMTPClientProtocol, Transaction, run_transaction
from mailsuite.queue.routing import order_mx


def _setup(body: bytes = b"Subject: x\r\n\r\nhi\r\n", chunk: int = 4096, **kw):
    clock = task.Clock()
    proto = SMTPClientProtocol(clock, command_timeout=30.0, conn_id="t")
    transport = StringTransport()
    proto.makeConnection(transport)
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] + [b""]

    async def read_chunk() -> bytes:
        return chunks.pop(0)

    t = Transaction(sender="a@x.test", recipients=kw.pop("recipients", ["b@y.test", "c@y.test"]), size=len(body), read_chunk=read_chunk,
                    helo_name="mail.x.test", tls="none", **kw)
    d = defer.Deferred.fromCoroutine(run_transaction(proto, t, "mx.y.test"))
    return clock, proto, transport, d


def _reply(proto, transport, data: bytes) -> bytes:
    transport.clear()
    proto.dataReceived(data)
    return transport.value()


def test_pipelined_batch_and_per_recipient_results():
    """With PIPELINING, MAIL + RCPTs + DATA go in one write; a 550 RCPT fails only that recipient."""
    clock, proto, transport, d = _setup()
    assert _reply(proto, transport, b"220 hi\r\n") == b"EHLO mail.x.test\r\n"
    sent = _reply(proto, transport, b"250-mx hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n")
    assert sent == b"MAIL FROM:<a@x.test> SIZE=%d\r\n" % len(b"Subject: x\r\n\r\nhi\r\n") + b"RCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    body = _reply(proto, transport, b"250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n354 go\r\n")
    assert body == b"Subject: x\r\n\r\nhi\r\n.\r\n"
    _reply(proto, transport, b"250 2.0.0 queued as 1\r\n")
    clock.advance(0)
    results = {r.address: r for r in d.result}
    assert results["b@y.test"].delivered and results["b@y.test"].text == "250 2.0.0 queued as 1"
    assert results["c@y.test"].permanent and results["c@y.test"].enhanced == "5.1.1" and results["c@y.test"].stage == "RCPT TO"


def test_without_pipelining_commands_wait_for_replies_and_helo_fallback():
    """EHLO refused -> HELO; then one command per reply; a 4xx final reply is temporary for all."""
    clock, proto, transport, d = _setup(recipients=["b@y.test"])
    _reply(proto, transport, b"220 old server\r\n")
    assert _reply(proto, transport, b"502 what\r\n") == b"HELO mail.x.test\r\n"
    assert _reply(proto, transport, b"250 hi\r\n") == b"MAIL FROM:<a@x.test>\r\n"
    assert _reply(proto, transport, b"250 ok\r\n") == b"RCPT TO:<b@y.test>\r\n"
    assert _reply(proto, transport, b"250 ok\r\n") == b"DATA\r\n"
    _reply(proto, transport, b"354 go\r\n")
    _reply(proto, transport, b"451 4.3.0 later\r\n")
    (r,) = d.result
    assert r.code == 451 and not r.delivered and not r.permanent


def test_8bit_message_to_a_server_without_8bitmime_fails_permanently():
    """RFC 6152: no 8BITMIME offered and an 8-bit body: nothing is sent, 5.6.3 for every recipient."""
    clock, proto, transport, d = _setup(recipients=["b@y.test"], body_8bit=True)
    _reply(proto, transport, b"220 hi\r\n")
    sent = _reply(proto, transport, b"250-mx\r\n250 PIPELINING\r\n")
    assert sent == b"QUIT\r\n"
    clock.advance(0)
    (r,) = d.result
    assert r.permanent and r.enhanced == "5.6.3"


def test_silent_server_times_out_and_aborts():
    """No greeting within the command timeout: the connection is aborted and counts as failed (next MX)."""
    clock, proto, transport, d = _setup()
    clock.advance(31)
    assert transport.disconnecting or getattr(transport, "disconnected", False)
    proto.connectionLost(None)
    assert isinstance(d.result.value, ConnectFailed)
    d.addErrback(lambda f: None)


def test_timeout_after_the_greeting_is_a_broken_transaction():
    """A server that stops answering after EHLO: ProtocolFailure (temporary for every recipient)."""
    clock, proto, transport, d = _setup()
    _reply(proto, transport, b"220 hi\r\n")
    clock.advance(31)
    proto.connectionLost(None)
    assert isinstance(d.result.value, ProtocolFailure)
    d.addErrback(lambda f: None)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.sampled_from([b".", b"..", b".x", b"x.", b"", b"a.b", b". "]), min_size=1, max_size=12), chunk=st.integers(1, 7))
def test_dot_stuffing_across_any_chunk_boundary(lines, chunk):
    """Whatever the chunk size, every line starting with '.' gets one more, and the terminator follows."""
    body = b"".join(line + b"\r\n" for line in lines)
    clock, proto, transport, d = _setup(body=body, chunk=chunk, recipients=["b@y.test"])
    _reply(proto, transport, b"220 hi\r\n")
    _reply(proto, transport, b"250 hi\r\n")
    _reply(proto, transport, b"250 ok\r\n")
    _reply(proto, transport, b"250 ok\r\n")
    sent = _reply(proto, transport, b"354 go\r\n")
    expected = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"
    assert sent == expected
    d.addErrback(lambda f: None)


def test_equal_preferences_are_shuffled_lower_first():
    """RFC 5321 5.1: lower preference first; equal preferences in random order (both orders occur)."""
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(40)}
    assert orders == {("a", "b", "c", "d"), ("b", "a", "c", "d")}
