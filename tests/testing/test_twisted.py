"""MailServer inside a Twisted test (pytest-twisted): the in-reactor mode with the *_async methods."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, reactor, ssl
from twisted.mail.smtp import ESMTPSenderFactory

from mailsuite.testing import MailServer


def send_with_twisted(server: MailServer, message: bytes) -> defer.Deferred:
    """Twisted's own ESMTP client, trusting the fixture's certificate for STARTTLS."""
    trust = ssl.Certificate.loadPEM(Path(server.ca_file).read_bytes())
    tls = ssl.optionsForClientTLS(server.hostname, trustRoot=trust)
    sent: defer.Deferred = defer.Deferred()
    factory = ESMTPSenderFactory(
        None, None, "app@sender.example", ["zoe@example.test"], BytesIO(message), sent,
        contextFactory=tls, requireAuthentication=False, requireTransportSecurity=True,
    )
    reactor.connectTCP(server.host, server.smtp_port, factory)
    return sent


@pytest_twisted.inlineCallbacks
def test_send_and_read_back_in_the_test_reactor():
    """The server runs in the test's reactor; Twisted's client sends over STARTTLS; the async API reads."""
    server = MailServer()
    yield server.start_async()
    try:
        # Twisted's client turns "\n" into CRLF on the wire itself.
        yield send_with_twisted(server, b"From: app@sender.example\nTo: zoe@example.test\nSubject: from twisted\n\nhi\n")
        [message] = yield server.wait_for_messages_async(1, timeout=10, to="zoe@example.test")
        assert message.subject == "from twisted"
        assert message.sender == "app@sender.example"
        assert "ESMTPS" in str(message.message["Received"])
        removed = yield server.purge_async()
        assert removed == 1
        assert (yield server.messages_async()) == []
    finally:
        yield server.stop_async()
