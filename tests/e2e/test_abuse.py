"""Abuse: what spammers and attackers try against a public mail host, with real clients.

Open-relay tricks on port 25, STARTTLS command injection on every protocol,
password guessing, path traversal through user and folder names, and old TLS
versions and weak ciphers (checked with openssl s_client).
"""

from __future__ import annotations

import imaplib
import json
import os
import poplib
import smtplib
import socket
import ssl
import subprocess
from typing import Any

import pytest

USERS = {"alice@example.test": "alice-password-1", "bob@example.test": "bob-password-22"}


THROTTLE = {"auth.free_failures": 2, "auth.max_failures": 5, "auth.max_delay": 0.2}


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    return mailsuite_module_server(THROTTLE, users=USERS)


def queued(server: Any) -> list[Any]:
    """What the outbound queue holds (through the admin CLI)."""
    return json.loads(server.cli("queue", "list", "--json").stdout)


# RFC 5321 paths that try to make a local-looking address relay elsewhere.
RELAY_TRICKS = [
    "<bob%remote.example@example.test>",  # percent hack
    "<remote.example!bob@example.test>",  # bang path, local domain
    "<remote.example!bob>",  # bare bang path
    '<"bob@remote.example"@example.test>',  # quoted local part with @
    "<@example.test:bob@remote.example>",  # source route through us
    "<@example.test,@other.example:bob@remote.example>",
    "<bob@[127.0.0.1]>",  # IP literal
    "<bob@[IPv6:::1]>",
    "<bob@remote.example.>",  # trailing dot
    "<bob@example.test.>",
    "<bob@Remote.EXAMPLE>",  # case tricks
    "<bob@remote.example@example.test>",
    "<bob@example.test@remote.example>",
    "<bob@remote.example%example.test>",
    "<bob@localhost>",
]


@pytest.mark.parametrize("path", RELAY_TRICKS)
def test_no_open_relay(server: Any, path: str) -> None:
    """Port 25 without AUTH refuses every classic open-relay trick and queues nothing."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("spammer.example")
        assert client.mail("spam@spammer.example")[0] == 250
        code, reply = client.rcpt(path)
        assert 500 <= code < 600, f"{path} got {code} {reply!r}"
        with pytest.raises(smtplib.SMTPDataError):  # no valid recipient: DATA must fail
            client.data(b"Subject: relay?\r\n\r\nspam\r\n")
    assert queued(server) == []


def test_relay_tricks_deliver_nothing_remote_in_one_session(server: Any) -> None:
    """Even mixed with a valid local recipient, the tricks are refused and only the local copy is stored."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        refused = client.sendmail("spam@spammer.example", ["alice@example.test", "bob%remote.example@example.test", "bob@[127.0.0.1]"],
                                  b"Subject: mixed\r\n\r\nmixed\r\n")
    assert set(refused) == {"bob%remote.example@example.test", "bob@[127.0.0.1]"}
    assert queued(server) == []


def _injection(port: int, greeting_cmd: bytes, starttls: bytes, injected: bytes, ctx: ssl.SSLContext, read_reply: Any) -> bytes:
    """Send STARTTLS and an injected command in one packet; return what the server says after the handshake."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    read_reply(raw)
    if greeting_cmd:
        raw.sendall(greeting_cmd)
        read_reply(raw)
    raw.sendall(starttls + injected)
    read_reply(raw)
    tls = ctx.wrap_socket(raw, server_hostname="mail.example.test")
    tls.settimeout(1.0)
    try:
        data = tls.recv(4096)
    except (socket.timeout, TimeoutError):
        data = b""
    tls.close()
    return data


def _read_until(terminators: tuple[bytes, ...]) -> Any:
    def read(sock: socket.socket) -> bytes:
        data = b""
        while not any(data.endswith(t) or (t in data and data.endswith(b"\r\n")) for t in terminators):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
    return read


def test_starttls_injection_smtp_pop3_imap(server: Any) -> None:
    """Bytes pipelined after STARTTLS/STLS are discarded: nothing answers them once TLS is up."""
    ctx = server.client_tls()

    def smtp_read(sock: socket.socket) -> bytes:
        data = b""
        while True:
            data += sock.recv(4096)
            lines = data.split(b"\r\n")
            if len(lines) > 1 and lines[-2][3:4] == b" ":
                return data

    assert _injection(server.ports["submission"], b"EHLO x\r\n", b"STARTTLS\r\n", b"MAIL FROM:<alice@example.test>\r\n", ctx, smtp_read) == b""
    assert _injection(server.ports["pop3"], b"", b"STLS\r\n", b"USER alice@example.test\r\n", ctx, _read_until((b"\r\n",))) == b""
    assert _injection(server.ports["imap"], b"", b"a STARTTLS\r\n", b"b CAPABILITY\r\n", ctx, _read_until((b"\r\n",))) == b""


def test_password_guessing_is_throttled_then_refused(mailsuite_server: Any) -> None:
    """Repeated wrong passwords slow down, then even the right password is refused for a while."""
    server = mailsuite_server(THROTTLE, users=USERS)  # its own server: the block would spill into other tests
    codes = []
    for attempt in range(8):
        try:
            with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=server.client_tls(), timeout=20) as client:
                client.login("bob@example.test", USERS["bob@example.test"] if attempt == 7 else f"guess-{attempt}")
                codes.append(235)
        except smtplib.SMTPAuthenticationError as e:
            codes.append(e.smtp_code)
        except smtplib.SMTPServerDisconnected:
            codes.append(421)
    assert codes[0] == 535
    assert codes[-1] != 235
    assert any(code in (454, 421) for code in codes), codes
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls())
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("bob@example.test", USERS["bob@example.test"])  # same source IP is still blocked


@pytest.mark.parametrize("name", ["../../../etc", "a/../../b", "/absolute", "..", "x\x00y", "../INBOX", "a" * 300])
def test_folder_names_cannot_escape(server: Any, name: str) -> None:
    """IMAP CREATE/SELECT/RENAME with traversal names is refused and nothing appears outside the tree."""
    before = set(os.listdir(server.data_root))
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls())
    imap.login("alice@example.test", USERS["alice@example.test"])
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    for command in (lambda: imap.create(quoted), lambda: imap.select(quoted), lambda: imap.rename("INBOX", quoted)):
        try:
            status = command()[0]
        except imaplib.IMAP4.error:
            status = "BAD"
        assert status != "OK"
    imap.logout()
    assert set(os.listdir(server.data_root)) == before
    assert not (server.data_root.parent / "etc").exists()


@pytest.mark.parametrize("address", ["../../etc/passwd@example.test", "..@example.test", "a/b@example.test", "x@../../etc", "x@example.test/../.."])
def test_user_names_cannot_escape(server: Any, address: str) -> None:
    """Traversal in SMTP recipients and login names is refused; no directory is made for it."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("x")
        client.mail("a@sender.example")
        code, _ = client.rcpt(f"<{address}>")
        assert 500 <= code < 600
    pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=server.client_tls())
    with pytest.raises(poplib.error_proto):
        pop.user(address)
        pop.pass_("x")
    pop.close()
    mail_root = server.data_root / "mail"
    for path in mail_root.rglob("*"):
        assert ".." not in path.name
    assert not (server.data_root / "etc").exists()


@pytest.mark.parametrize("listener", ["submissions", "pop3s", "imaps"])
@pytest.mark.parametrize("flags", [["-tls1"], ["-tls1_1"], ["-tls1_2", "-cipher", "RC4-SHA:DES-CBC3-SHA:NULL-SHA:EXP-RC4-MD5"], ["-tls1_2", "-cipher", "AES128-SHA"]])
def test_old_tls_and_weak_ciphers_refused_by_openssl(server: Any, listener: str, flags: list[str]) -> None:
    """openssl s_client cannot connect with TLS 1.0/1.1, export/RC4/3DES/NULL, or CBC-without-forward-secrecy."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.ports[listener]}", *_with_seclevel0(flags)],
        input=b"", capture_output=True, timeout=20,
    )
    out = result.stdout + result.stderr
    # s_client prints "New, <protocol>, Cipher is <name>" for a finished handshake, "(NONE)" for a refused one.
    assert b"Cipher is (NONE)" in out or b"New, " not in out, out.decode(errors="replace")[-800:]


def _with_seclevel0(flags: list[str]) -> list[str]:
    """Let the client offer old protocols and ciphers, so that only the server's refusal stops them."""
    if "-cipher" in flags:
        i = flags.index("-cipher")
        return flags[:i] + ["-cipher", flags[i + 1] + ":@SECLEVEL=0"] + flags[i + 2:]
    return flags + ["-cipher", "DEFAULT:@SECLEVEL=0"]


def test_modern_tls_accepted_by_openssl(server: Any) -> None:
    """The same client with TLS 1.2+ and modern ciphers gets through (so the refusals above mean something)."""
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.ports['imaps']}", "-tls1_2"], input=b"", capture_output=True, timeout=20)
    assert b"* OK" in result.stdout
    assert b"TLSv1.2" in result.stdout + result.stderr
