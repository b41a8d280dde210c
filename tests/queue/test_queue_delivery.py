"""Relaying through the in-process queue to real SMTP sinks over loopback, routed by a real DNS server."""

from __future__ import annotations

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
