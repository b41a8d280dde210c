"""STARTTLS on 143 and implicit TLS on 993 with imaplib; LOGINDISABLED before TLS (RFC 3501 6.2.1, 6.2.3, 11.1)."""

from __future__ import annotations

import imaplib
import socket
from typing import Any

import pytest

from tests.imap.conftest import sample, start_server


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with the default policy: no plaintext logins (capture mode for the passwords)."""
    server = start_server(tmp_path_factory.mktemp("imaptls") / "server", {"capture.enabled": True})
    yield server
    server.stop()


def test_plaintext_port_disables_login_until_starttls(tls_server):
    c = imaplib.IMAP4("127.0.0.1", tls_server.ports["imap"], timeout=10)
    try:
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        assert not any(cap.startswith("AUTH=") for cap in c.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login("tls@example.test", "secret")
        c.starttls(ssl_context=tls_server.client_tls())
        assert "LOGINDISABLED" not in c.capabilities and "STARTTLS" not in c.capabilities
        assert "AUTH=PLAIN" in c.capabilities
        typ, data = c.login("tls@example.test", "secret")
        assert typ == "OK"
        c.append("INBOX", None, None, sample(1))
        c.select("INBOX")
        assert c.fetch("1", "(BODY.PEEK[])")[1][0][1] == sample(1)
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("STARTTLS")  # not valid once logged in
    finally:
        c.logout()


def test_implicit_tls_port(tls_server):
    c = imaplib.IMAP4_SSL("127.0.0.1", tls_server.ports["imaps"], ssl_context=tls_server.client_tls(), timeout=10)
    try:
        assert "STARTTLS" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
        assert c.login("tls@example.test", "secret")[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
    finally:
        c.logout()


def test_authenticate_plain_over_tls(tls_server):
    c = imaplib.IMAP4_SSL("127.0.0.1", tls_server.ports["imaps"], ssl_context=tls_server.client_tls(), timeout=10)
    try:
        typ, _ = c.authenticate("PLAIN", lambda _: b"\0tls@example.test\0secret")
        assert typ == "OK"
    finally:
        c.logout()


def test_starttls_discards_pipelined_plaintext(tls_server):
    """Commands sent after STARTTLS in the same packet must not run inside TLS (CVE-2011-0411 class)."""
    sock = socket.create_connection(("127.0.0.1", tls_server.ports["imap"]), timeout=10)
    try:
        assert sock.recv(4096).startswith(b"* OK")
        sock.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        data = b""
        while b"a OK" not in data:
            data += sock.recv(4096)
        assert b"b OK" not in data
        tls = tls_server.client_tls().wrap_socket(sock)
        tls.sendall(b"c NOOP\r\n")
        reply = tls.recv(4096)
        assert reply == b"c OK NOOP completed.\r\n"  # no answer to the injected "b CAPABILITY"
        tls.close()
    finally:
        sock.close()
