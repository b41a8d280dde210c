"""Smarthost mode: everything goes to one host with STARTTLS or implicit TLS and AUTH, no MX lookups."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import pytest_twisted

from mailsuite.tls import generate_self_signed
from tests.queue.helpers import message
from tests.support.smtpsink import SMTPSink


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    d: Path = tmp_path_factory.mktemp("smarthost-tls")
    generate_self_signed(d / "cert.pem", d / "key.pem", "smarthost.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    return context


def _smarthost(sink: SMTPSink, tls: str) -> dict:
    return {"queue.smarthost.enabled": True, "queue.smarthost.host": sink.host, "queue.smarthost.port": sink.port,
            "queue.smarthost.tls": tls, "queue.smarthost.username": "relayuser", "queue.smarthost.password": "s3cret pass",
            "queue.smarthost.verify_certificate": False}


@pytest_twisted.ensureDeferred
async def test_smarthost_with_starttls_and_auth(make_queue, dns, server_tls):
    """Mail for two unrelated domains (not even in DNS) goes through the smarthost, after STARTTLS and AUTH."""
    dns.set_records({})
    sink = SMTPSink(ssl_context=server_tls, users={"relayuser": "s3cret pass"}, require_auth=True).start()
    try:
        h = make_queue(_smarthost(sink, "starttls"))
        await h.enqueue(["bob@first.test", "carol@second.test"], message())
        await h.settle()
        got = sink.wait_for(2)
        assert sorted(r for m in got for r in m.rcpt_to) == ["bob@first.test", "carol@second.test"]
        assert all(m.tls and m.auth_user == "relayuser" for m in got)
        assert "AUTH ***" in sink.state.commands and not any("s3cret" in c for c in sink.state.commands)
    finally:
        sink.stop()


@pytest_twisted.ensureDeferred
async def test_smarthost_with_implicit_tls(make_queue, dns, server_tls):
    """tls = "implicit": TLS from the first byte (a provider's port 465)."""
    sink = SMTPSink(ssl_context=server_tls, implicit_tls=True, users={"relayuser": "s3cret pass"}, require_auth=True).start()
    try:
        h = make_queue(_smarthost(sink, "implicit"))
        await h.enqueue(["bob@first.test"], message())
        await h.settle()
        (got,) = sink.wait_for(1)
        assert got.tls and got.auth_user == "relayuser"
    finally:
        sink.stop()


@pytest_twisted.ensureDeferred
async def test_smarthost_without_starttls_keeps_mail_queued(make_queue, dns):
    """STARTTLS mode but the server offers none: no credentials are sent, the message waits (4.7.4)."""
    sink = SMTPSink(users={"relayuser": "s3cret pass"}).start()
    try:
        h = make_queue(_smarthost(sink, "starttls"))
        qid = await h.enqueue(["bob@first.test"], message())
        await h.wait(lambda: qid in h.finished)
        entry = h.spool.load(qid)
        assert entry is not None and entry.recipients[0].status == "pending" and "4.7.4" in entry.last_error
        assert not any(c.startswith("AUTH") for c in sink.state.commands) and sink.messages == []
    finally:
        sink.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_smarthost_password_defers(make_queue, dns, server_tls):
    """535 from the smarthost is our configuration's fault: the message is kept for retry, not bounced."""
    sink = SMTPSink(ssl_context=server_tls, users={"relayuser": "other"}, require_auth=True).start()
    try:
        h = make_queue(_smarthost(sink, "starttls"))
        qid = await h.enqueue(["bob@first.test"], message())
        await h.wait(lambda: qid in h.finished)
        entry = h.spool.load(qid)
        assert entry is not None and entry.recipients[0].status == "pending" and "535" in entry.last_error
        assert h.inbox("alice@example.test") == []
    finally:
        sink.stop()
