"""Relaying through the in-process queue to real SMTP sinks over loopback, routed by a real DNS server."""

from __future__ import annotations

import collections

import pytest_twisted

from tests.queue.helpers import SENDER, message, remote_records


@pytest_twisted.ensureDeferred
async def test_message_reaches_the_mx_with_all_recipients_in_one_transaction(make_queue, dns, sink):
    """Two recipients at one domain: one connection, one MAIL, two RCPTs, body intact; spool emptied."""
    dns.set_records(remote_records(sink))
    h = make_queue({"queue.outbound_port": sink.port})
    qid = await h.enqueue(["bob@remote.test", "carol@remote.test"])
    assert h.spool.load(qid) is not None
    await h.settle()
    (got,) = sink.wait_for(1)
    assert got.mail_from == SENDER
    assert got.rcpt_to == ["bob@remote.test", "carol@remote.test"]
    assert b"Subject: hello\r\n" in got.data
    assert sink.state.connections == 1
    assert h.spool.ids() == []


def _dsns(h, address=SENDER):
    return [m for m in h.inbox(address) if b"report-type=delivery-status" in m or b"report-type=global-delivery-status" in m]


@pytest_twisted.ensureDeferred
async def test_temporary_failure_is_retried_and_delivered_once(make_queue, dns, sink):
    """451 after DATA: the message stays queued with the reply recorded, the retry delivers it, exactly once."""
    dns.set_records(remote_records(sink))
    sink.state.data_replies.append("451 4.3.0 try again later")
    h = make_queue({"queue.outbound_port": sink.port})
    qid = await h.enqueue(["bob@remote.test"])
    await h.wait(lambda: qid in h.finished)
    entry = h.spool.load(qid)
    assert entry is not None and entry.attempts == 1
    assert "451" in entry.last_error and "try again later" in entry.last_error
    await h.settle()
    sink.wait_for(1)
    await h.wait(lambda: True, 0)
    assert len(sink.messages) == 1 and sink.state.connections == 2
    assert _dsns(h) == []


@pytest_twisted.ensureDeferred
async def test_permanent_failure_bounces_to_the_local_sender_inbox(make_queue, dns, sink):
    """550 for one recipient: the other is delivered; a RFC 3464 DSN quoting the remote reply lands in the sender's INBOX."""
    dns.set_records(remote_records(sink))
    sink.state.rcpt_replies["nobody@remote.test"] = collections.deque(["550 5.1.1 <nobody@remote.test>: no such user here"])
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@remote.test", "nobody@remote.test"], message(subject="report 42"))
    await h.settle()
    (got,) = sink.wait_for(1)
    assert got.rcpt_to == ["bob@remote.test"]
    (dsn,) = _dsns(h)
    assert dsn.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: message/delivery-status" in dsn
    assert b"Final-Recipient: rfc822; nobody@remote.test" in dsn
    assert b"Action: failed" in dsn and b"Status: 5.1.1" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>: no such user here\r\n" in dsn
    assert b"Remote-MTA: dns; mx.remote.test" in dsn
    headers_part = dsn.split(b"Content-Type: text/rfc822-headers\r\n", 1)[1]
    assert b"Subject: report 42" in headers_part
    assert b"bob@remote.test" not in dsn.split(b"message/delivery-status")[1].split(b"text/rfc822-headers")[0]


@pytest_twisted.ensureDeferred
async def test_null_mx_fails_at_once_without_connecting(make_queue, dns, sink):
    """RFC 7505: a null MX bounces immediately with 5.1.10; nothing connects anywhere."""
    dns.set_records({"nomail.test": {"MX": [[0, "."]]}})
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["x@nomail.test"])
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 5.1.10" in dsn and b"null MX" in dsn
    assert sink.state.connections == 0


@pytest_twisted.ensureDeferred
async def test_domain_without_mx_is_delivered_to_its_address_record(make_queue, dns, sink):
    """RFC 5321 5.1: no MX records -> the domain's own A record is the implicit MX."""
    dns.set_records({"plain.test": {"A": [sink.host]}})
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@plain.test"])
    await h.settle()
    (got,) = sink.wait_for(1)
    assert got.rcpt_to == ["bob@plain.test"]


@pytest_twisted.ensureDeferred
async def test_nonexistent_domain_bounces(make_queue, dns, sink):
    """NXDOMAIN for the recipient domain is permanent (5.1.2)."""
    dns.set_records({})
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@nowhere.test"])
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 5.1.2" in dsn


@pytest_twisted.ensureDeferred
async def test_unreachable_primary_mx_falls_back_to_the_next(make_queue, dns, sink):
    """Connection refused at the preferred MX (127.0.0.2): the next MX by preference gets the message."""
    dns.set_records({"remote.test": {"MX": [[5, "dead.remote.test"], [20, "mx.remote.test"]]},
                     "dead.remote.test": {"A": ["127.0.0.2"]}, "mx.remote.test": {"A": [sink.host]}})
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@remote.test"])
    await h.settle()
    assert len(sink.wait_for(1)) == 1


@pytest_twisted.ensureDeferred
async def test_4xx_greeting_sends_us_to_the_next_mx(make_queue, dns, sink):
    """A 421 greeting from the first MX: the second MX delivers (RFC 5321 5.1)."""
    from tests.support.smtpsink import SMTPSink

    busy = SMTPSink("127.0.0.2", sink.port, greetings=collections.deque(["421 4.3.2 busy"] * 5)).start()
    try:
        dns.set_records({"remote.test": {"MX": [[5, "busy.remote.test"], [20, "mx.remote.test"]]},
                         "busy.remote.test": {"A": ["127.0.0.2"]}, "mx.remote.test": {"A": [sink.host]}})
        h = make_queue({"queue.outbound_port": sink.port})
        await h.enqueue(["bob@remote.test"])
        await h.settle()
        assert len(sink.wait_for(1)) == 1
        assert busy.state.connections == 1 and busy.messages == []
    finally:
        busy.stop()


@pytest_twisted.ensureDeferred
async def test_all_mx_unreachable_retries_then_bounces_at_max_age(make_queue, dns, sink):
    """Nothing listening: deferred on the schedule, then a DSN with 4.4.7 when max_age passes."""
    from tests.support.smtpsink import free_port

    dns.set_records({"down.test": {"A": ["127.0.0.1"]}})
    h = make_queue({"queue.outbound_port": free_port(), "queue.max_age": 2.0})
    qid = await h.enqueue(["bob@down.test"])
    await h.wait(lambda: qid in h.finished)
    entry = h.spool.load(qid)
    assert entry is not None and entry.recipients[0].status == "pending" and "refused" in entry.last_error.lower()
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 4.4.7" in dsn and b"Action: failed" in dsn


@pytest_twisted.ensureDeferred
async def test_null_sender_is_never_bounced(make_queue, dns, sink):
    """A failing message with a null reverse-path is dropped with a log line, no DSN anywhere."""
    dns.set_records(remote_records(sink))
    sink.state.rcpt_replies["bob@remote.test"] = collections.deque(["550 5.1.1 no"])
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@remote.test"], sender="")
    await h.settle()
    assert _dsns(h, SENDER) == [] and sink.messages == []
    assert h.spool.ids() == []


@pytest_twisted.ensureDeferred
async def test_more_than_50_received_headers_bounce_as_a_loop(make_queue, dns, sink):
    """51 Received fields: 5.4.6 DSN, never sent."""
    dns.set_records(remote_records(sink))
    h = make_queue({"queue.outbound_port": sink.port})
    received = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; Mon, 23 Nov 2026 08:00:00 +0000\r\n" for i in range(51))
    await h.enqueue(["bob@remote.test"], message(extra_headers=received))
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 5.4.6" in dsn
    assert sink.state.connections == 0


@pytest_twisted.ensureDeferred
async def test_smtputf8_message_to_a_server_without_it_bounces_5_6_7(make_queue, dns, sink):
    """RFC 6531: a message needing SMTPUTF8 is not sent to a server that lacks it."""
    dns.set_records(remote_records(sink))
    sink.state.extensions = ["PIPELINING", "8BITMIME"]
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["jürgen@remote.test"], smtputf8=True)
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 5.6.7" in dsn and sink.messages == []
    # RFC 6533: the report on an internationalized message uses the global types
    assert b"report-type=global-delivery-status" in dsn
    assert b"Content-Type: message/global-delivery-status\r\n" in dsn and b"Content-Type: message/global-headers\r\n" in dsn
    assert b"Final-Recipient: utf-8; j\xc3\xbcrgen@remote.test" in dsn


@pytest_twisted.ensureDeferred
async def test_extensions_are_used_when_offered(make_queue, dns, sink):
    """SIZE, BODY=8BITMIME and SMTPUTF8 parameters appear on MAIL FROM; the pipelined batch arrives whole."""
    dns.set_records(remote_records(sink))
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["jürgen@remote.test", "bob@remote.test"], message(body="Grüße\r\n.leading dot\r\n"), smtputf8=True, body_8bit=True)
    await h.settle()
    (got,) = sink.wait_for(1)
    assert "SIZE=" in got.mail_params and "BODY=8BITMIME" in got.mail_params and "SMTPUTF8" in got.mail_params
    assert got.rcpt_to == ["jürgen@remote.test", "bob@remote.test"]
    assert got.data.endswith("Grüße\r\n.leading dot\r\n".encode())


@pytest_twisted.ensureDeferred
async def test_message_over_the_servers_size_limit_bounces(make_queue, dns, sink):
    """RFC 1870: SIZE 100 advertised, a bigger message is not sent and bounces with 5.3.4."""
    dns.set_records(remote_records(sink))
    sink.state.extensions = ["SIZE 100"]
    h = make_queue({"queue.outbound_port": sink.port})
    await h.enqueue(["bob@remote.test"], message(body="x" * 500 + "\r\n"))
    await h.settle()
    (dsn,) = _dsns(h)
    assert b"Status: 5.3.4" in dsn and sink.messages == []


@pytest_twisted.ensureDeferred
async def test_per_domain_concurrency_limit(make_queue, dns, sink):
    """max_connections_per_domain = 1: eight messages to one domain never overlap at the sink."""
    dns.set_records(remote_records(sink))
    h = make_queue({"queue.outbound_port": sink.port, "queue.max_connections_per_domain": 1})
    for i in range(8):
        await h.enqueue(["bob@remote.test"], message(subject=f"m{i}"))
    await h.settle()
    assert len(sink.wait_for(8)) == 8
    assert sink.state.max_active == 1


@pytest_twisted.ensureDeferred
async def test_delay_warning_is_sent_once(make_queue, dns, sink):
    """delay_warning passed while still retrying: one 'delayed' DSN, and the message stays queued."""
    dns.set_records(remote_records(sink))
    sink.state.data_replies.extend(["452 4.2.2 mailbox full"] * 4)
    h = make_queue({"queue.outbound_port": sink.port, "queue.delay_warning": 0.3})
    qid = await h.enqueue(["bob@remote.test"])
    await h.wait(lambda: h.finished.count(qid) >= 3)
    dsns = _dsns(h)
    assert len(dsns) == 1
    assert b"Action: delayed" in dsns[0] and b"Status: 4.2.2" in dsns[0] and b"Will-Retry-Until:" in dsns[0]
    assert h.spool.load(qid) is not None
    await h.settle()
    assert len(sink.wait_for(1)) == 1


@pytest_twisted.ensureDeferred
async def test_global_concurrency_limit(make_queue, dns, sink):
    """max_connections = 2: messages to four domains never hold more than two connections at once."""
    records = {}
    for d in ("a.test", "b.test", "c.test", "d.test"):
        records.update(remote_records(sink, d))
    dns.set_records(records)
    h = make_queue({"queue.outbound_port": sink.port, "queue.max_connections": 2})
    for i in range(8):
        await h.enqueue([f"u{i}@{'abcd'[i % 4]}.test"], message(subject=f"m{i}"))
    await h.settle()
    assert len(sink.wait_for(8)) == 8
    assert sink.state.max_active <= 2


@pytest_twisted.ensureDeferred
async def test_opportunistic_starttls_to_the_mx(make_queue, dns, tmp_path):
    """An MX offering STARTTLS gets the message over TLS (certificate not checked unless require_tls)."""
    import ssl

    from mailsuite.tls import generate_self_signed
    from tests.support.smtpsink import SMTPSink

    generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", "mx.remote.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    tls_sink = SMTPSink(ssl_context=context).start()
    try:
        dns.set_records(remote_records(tls_sink))
        h = make_queue({"queue.outbound_port": tls_sink.port})
        await h.enqueue(["bob@remote.test"])
        await h.settle()
        (got,) = tls_sink.wait_for(1)
        assert got.tls
    finally:
        tls_sink.stop()


@pytest_twisted.ensureDeferred
async def test_require_tls_keeps_mail_for_a_server_without_starttls(make_queue, dns, sink):
    """queue.require_tls: an MX without STARTTLS gets nothing; the message waits with 4.7.4."""
    dns.set_records(remote_records(sink))
    h = make_queue({"queue.outbound_port": sink.port, "queue.require_tls": True})
    qid = await h.enqueue(["bob@remote.test"])
    await h.wait(lambda: qid in h.finished)
    entry = h.spool.load(qid)
    assert entry is not None and "4.7.4" in entry.last_error and sink.messages == []
    assert not any(c.startswith("MAIL") for c in sink.state.commands)
