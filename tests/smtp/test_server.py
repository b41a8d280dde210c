"""The SMTP listeners of a real `twistd -n mailsuite` over loopback TCP, with real clients.

smtplib (plain, STARTTLS, implicit TLS), swaks and curl, plus raw sockets
for pipelining, BDAT, smuggling and STARTTLS injection.  Users are made with
the real admin CLI; messages are read from the real Maildir and queue spool.
"""

from __future__ import annotations

import base64
import json
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
PASSWORD = "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def server(mailsuite_module_server: Any) -> Any:
    # mailauth's SPF/DKIM/DMARC checks would ask DNS about the test senders' domains; tests/mailauth covers them
    srv = mailsuite_module_server({"limits.message_size": 100_000, "limits.recipients": 20, "queue.resolver": "127.0.0.1:9",
                                   "mailauth.verify_inbound": False},
                                  users={ALICE: PASSWORD, BOB: PASSWORD, CAROL: PASSWORD})
    srv.cli("alias", "add", "team@example.test", BOB, CAROL, "ext@remote.test")
    return srv


def messages(server: Any, address: str) -> list[bytes]:
    new = server.mail_dir(address) / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def queued(server: Any) -> list[dict[str, Any]]:
    folder = server.data_root / "queue" / "envelopes"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


class Raw:
    """A line-oriented raw client: send bytes, read whole replies."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.sock: Any = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self.buf = b""
        self.greeting = self.replies(1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int) -> list[str]:
        """The next n complete replies, as their last lines ("250 2.0.0 Ok...")."""
        out: list[str] = []
        while len(out) < n:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {out!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                out.append(line.decode())
        return out

    def codes(self, n: int) -> list[str]:
        return [r[:3] for r in self.replies(n)]

    def close(self) -> None:
        self.sock.close()


def test_smtplib_plain_inbound_to_alias_and_users(server: Any) -> None:
    """Port 25: local users and an alias (local targets stored, the remote one queued); 250 after all are on disk."""
    before = len(queued(server))
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        refused = c.sendmail("sender@remote.test", [ALICE, "team@example.test"], b"Subject: inbound\r\n\r\nhello\r\n")
        assert refused == {}
    for user in (ALICE, BOB, CAROL):
        assert any(b"Subject: inbound" in m and f"Delivered-To: {user}".encode() in m for m in messages(server, user)), user
    assert len(queued(server)) == before + 1
    assert any("ext@remote.test" in json.dumps(e["recipients"]) for e in queued(server))


def test_unknown_user_and_relay_refused(server: Any) -> None:
    """550 5.1.1 for an unknown user, 554 5.7.1 for relaying, over real TCP."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        c.ehlo()
        c.mail("x@remote.test")
        assert c.rcpt("nobody@example.test") == (550, b"5.1.1 No such user here")
        assert c.rcpt("someone@other.test") == (554, b"5.7.1 Relaying denied")


def test_message_on_disk_in_every_mailbox_when_250_arrives(server: Any) -> None:
    """Read the Maildirs the instant 250 arrives: every copy is already there."""
    c = Raw(server.ports["smtp"])
    c.send(b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert c.codes(5) == ["250", "250", "250", "250", "354"]
    marker = f"disk-check-{time.time_ns()}".encode()
    c.send(b"Subject: " + marker + b"\r\n\r\nbody\r\n.\r\n")
    assert c.codes(1) == ["250"]
    for user in (ALICE, BOB):
        assert any(marker in m for m in messages(server, user)), user
    c.close()


def test_submission_starttls_auth_and_policy(server: Any) -> None:
    """587: AUTH refused before TLS (538), MAIL before AUTH 530, foreign sender 553, remote queued and local stored."""
    c = Raw(server.ports["submission"])
    c.send(b"EHLO c\r\n")
    c.replies(1)
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    c.send(b"AUTH PLAIN " + token + b"\r\nMAIL FROM:<alice@example.test>\r\n")
    assert c.replies(2)[0].startswith("538 5.7.11") and c.buf == b""
    c.close()
    with smtplib.SMTP("127.0.0.1", server.ports["submission"]) as s:
        s.starttls(context=server.client_tls())
        s.ehlo()
        assert s.mail(ALICE)[0] == 530
        s.rset()
        s.login(ALICE, PASSWORD)
        assert s.mail(BOB)[0] == 553
        s.rset()
        before = len(queued(server))
        assert s.sendmail(ALICE, [BOB, "friend@remote.test"], b"Subject: sub\r\n\r\nhi\r\n") == {}
        assert len(queued(server)) == before + 1
    stored = [m for m in messages(server, BOB) if b"Subject: sub" in m][-1]
    assert b"with ESMTPSA id" in stored and b"(using TLSv1." in stored
    assert b"Message-ID: <" in stored and b"\r\nDate: " in stored


def test_implicit_tls_submission(server: Any) -> None:
    """465 with smtplib.SMTP_SSL: no STARTTLS offered, AUTH LOGIN works, message delivered."""
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=server.client_tls()) as s:
        s.ehlo()
        assert not s.has_extn("starttls") and "LOGIN" in s.esmtp_features["auth"]
        s.user, s.password = ALICE, PASSWORD
        s.auth("LOGIN", s.auth_login)
        assert s.sendmail(ALICE, [CAROL], b"Subject: implicit\r\n\r\nhi\r\n") == {}
    [stored] = [m for m in messages(server, CAROL) if b"Subject: implicit" in m]
    assert b"with ESMTPSA id" in stored and b"(using TLSv1." in stored


def test_wrong_password_535(server: Any) -> None:
    """535 5.7.8 for a wrong password over TLS."""
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=server.client_tls()) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.login(BOB, "wrong")
        assert info.value.smtp_code == 535


def test_smtputf8(server: Any) -> None:
    """SMTPUTF8 sender and body through smtplib; without SMTPUTF8 553 5.6.7."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        c.ehlo()
        assert c.has_extn("smtputf8")
        msg = "From: jöran@bücher.example\r\nSubject: grüße\r\n\r\nÖ\r\n".encode()
        assert c.sendmail("jöran@bücher.example", [ALICE], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    assert any("grüße".encode() in m and b"with UTF8SMTP id" in m for m in messages(server, ALICE))
    raw = Raw(server.ports["smtp"])
    raw.send("EHLO c\r\nMAIL FROM:<jöran@bücher.example>\r\n".encode())
    assert raw.replies(2)[1].startswith("553 5.6.7")
    raw.close()


def test_pipelined_batch_order(server: Any) -> None:
    """A whole pipelined batch in one write: every reply, in command order."""
    c = Raw(server.ports["smtp"])
    c.send(b"EHLO c\r\nMAIL FROM:<p@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<x@other.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    replies = c.replies(7)
    assert [r[:9] for r in replies[1:]] == ["250 2.1.0", "550 5.1.1", "250 2.1.5", "554 5.7.1", "250 2.1.5", "354 End d"]
    c.send(b"Subject: piped\r\n\r\nx\r\n.\r\nMAIL FROM:<q@remote.test>\r\nRCPT TO:<carol@example.test>\r\nVRFY bob\r\n"
           b"EXPN team\r\nHELP\r\nNOOP\r\nRSET\r\nQUIT\r\n")
    assert [r[:9] for r in c.replies(9)] == ["250 2.0.0", "250 2.1.0", "250 2.1.5", "252 2.5.0", "502 5.5.1", "214 2.0.0",
                                            "250 2.0.0", "250 2.0.0", "221 2.0.0"]
    c.close()


def test_bdat_raw(server: Any) -> None:
    """CHUNKING over TCP: pipelined BDAT chunks with binary-looking content, then LAST."""
    c = Raw(server.ports["smtp"])
    one = b"Subject: chunked\r\n\r\n.\r\n"
    two = b"after a dot line\r\n"
    c.send(b"EHLO c\r\nMAIL FROM:<b@remote.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT %d\r\n%sBDAT %d LAST\r\n%sQUIT\r\n" % (len(one), one, len(two), two))
    assert [r[:9] for r in c.replies(6)][1:] == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0", "221 2.0.0"]
    assert any(m.endswith(one + two) for m in messages(server, ALICE))


@pytest.mark.parametrize("seq", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"], ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR"])
def test_smuggling_over_tcp(server: Any, seq: bytes) -> None:
    """A smuggled second message after a lax end marker is never delivered; the first is refused 550."""
    marker = f"smuggled-{time.time_ns()}".encode()
    c = Raw(server.ports["smtp"])
    c.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert c.codes(4) == ["250", "250", "250", "354"]  # EHLO's multi-line reply counts once
    c.send(b"Subject: first\r\n\r\nx" + seq + b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: " + marker + b"\r\n\r\n.\r\n")
    reply = c.replies(1)[0]
    assert reply.startswith("550 5.6.11")
    c.send(b"NOOP\r\n")
    assert c.codes(1) == ["250"]
    c.close()
    assert not any(marker in m for m in messages(server, BOB) + messages(server, ALICE))


def test_starttls_injection(server: Any) -> None:
    """Commands pipelined after STARTTLS in the same packet are discarded, not run after the handshake."""
    c = Raw(server.ports["smtp"])
    c.send(b"EHLO c\r\n")
    c.replies(1)
    c.send(b"STARTTLS\r\nMAIL FROM:<inject@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    assert c.replies(1)[0].startswith("220 2.0.0")
    assert c.buf == b""
    c.sock = server.client_tls().wrap_socket(c.sock)
    c.send(b"RCPT TO:<alice@example.test>\r\n")
    assert c.replies(1)[0].startswith("503 5.5.1")  # neither EHLO nor MAIL survived the handshake
    c.send(b"EHLO c\r\n")
    c.replies(1)
    c.send(b"RCPT TO:<alice@example.test>\r\n")
    assert c.replies(1)[0].startswith("503 5.5.1")
    c.close()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)")
def test_swaks_plain_and_submission(server: Any) -> None:
    """swaks delivers inbound in clear and submits with STARTTLS + AUTH PLAIN."""
    subprocess.run(["swaks", "--server", f"127.0.0.1:{server.ports['smtp']}", "--from", "s@remote.test", "--to", ALICE,
                    "--header", "Subject: swaks-inbound"], check=True, capture_output=True, timeout=30)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{server.ports['submission']}", "--tls", "--auth", "PLAIN",
                          "--auth-user", ALICE, "--auth-password", PASSWORD, "--from", ALICE, "--to", BOB,
                          "--header", "Subject: swaks-sub"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "235 2.7.0" in out.stdout
    piped = subprocess.run(["swaks", "--pipeline", "--server", f"127.0.0.1:{server.ports['smtp']}", "--from", "s@remote.test",
                            "--to", f"{CAROL},nobody@example.test", "--header", "Subject: swaks-piped"], capture_output=True, text=True, timeout=30)
    assert "550 5.1.1" in piped.stdout and "250 2.0.0 Ok: queued" in piped.stdout, piped.stdout
    assert any(b"swaks-piped" in m for m in messages(server, CAROL))
    assert any(b"swaks-inbound" in m for m in messages(server, ALICE))
    assert any(b"swaks-sub" in m and b"ESMTPSA" in m for m in messages(server, BOB))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_smtp(server: Any, tmp_path: Path) -> None:
    """curl smtp:// in clear to port 25, and with --ssl-reqd + login to 587."""
    mail = tmp_path / "mail.txt"
    mail.write_bytes(b"Subject: curl-mail\r\n\r\nfrom curl\r\n")
    subprocess.run(["curl", "-sS", f"smtp://127.0.0.1:{server.ports['smtp']}", "--mail-from", "c@remote.test", "--mail-rcpt", CAROL,
                    "--upload-file", str(mail)], check=True, capture_output=True, timeout=30)
    out = subprocess.run(["curl", "-sS", "--ssl-reqd", "-k", f"smtp://127.0.0.1:{server.ports['submission']}", "--user", f"{CAROL}:{PASSWORD}",
                          "--mail-from", CAROL, "--mail-rcpt", ALICE, "--upload-file", str(mail)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sum(b"curl-mail" in m for m in messages(server, CAROL)) == 1
    assert any(b"curl-mail" in m and b"ESMTPSA" in m for m in messages(server, ALICE))


def test_size_limit_over_tcp(server: Any) -> None:
    """SIZE advertised; a too big SIZE= gets 552 at MAIL, a too big DATA 552 after its end."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        c.ehlo()
        assert c.esmtp_features["size"] == "100000"
        assert c.mail("a@remote.test", ["SIZE=200000"]) == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    raw = Raw(server.ports["smtp"])
    raw.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert raw.codes(4) == ["250", "250", "250", "354"]
    raw.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 150 + b".\r\nNOOP\r\n")
    assert [r[:9] for r in raw.replies(2)] == ["552 5.3.4", "250 2.0.0"]
    raw.close()
    assert not any(b"Subject: big" in m for m in messages(server, ALICE))


def test_flooding_client_that_never_reads_is_held_back(server: Any) -> None:
    """Pipelining megabytes of commands without reading replies: the server stops reading (our send blocks), stays up."""
    flood = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.settimeout(1.5)
    sent = 0
    chunk = b"NOOP\r\n" * 10000
    with pytest.raises(socket.timeout):
        while sent < 200_000_000:
            sent += flood.send(chunk)
    assert sent < 50_000_000  # held back long before the client could push everything
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as other:
        assert other.noop()[0] == 250
    flood.close()


@pytest.mark.parametrize("listener", ["smtp", "submissions"])
def test_server_closes_after_quit_and_errors(server: Any, listener: str) -> None:
    """After QUIT, and after too many errors, the server itself closes the connection (plain and TLS)."""
    tls = server.client_tls() if listener == "submissions" else None
    for commands, last in ((b"QUIT\r\n", "221"), (b"BOGUS\r\n" * 10, "421")):
        c = Raw(server.ports[listener], tls=tls)
        c.send(commands)
        replies = c.replies(commands.count(b"\r\n") if last == "221" else 11)
        assert replies[-1].startswith(last)
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b""  # EOF from the server, not a hang
        c.close()


def test_domain_added_at_runtime_is_local(server: Any) -> None:
    """A domain added with the CLI while the server runs accepts mail for its users at once."""
    server.add_domain("extra.test")
    server.add_user("dan@extra.test", PASSWORD)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        assert c.sendmail("s@remote.test", ["dan@extra.test"], b"Subject: extra\r\n\r\nx\r\n") == {}
    assert any(b"Subject: extra" in m for m in messages(server, "dan@extra.test"))


def test_limit_replies_over_tcp(server: Any) -> None:
    """452 4.5.3 past the recipient limit, 500 5.5.2 for an over-long line, 552 5.2.2 for a full mailbox at RCPT."""
    server.cli("user", "quota", CAROL, "--quota", "1")
    try:
        c = Raw(server.ports["smtp"])
        c.send(b"EHLO c\r\nMAIL FROM:<l@remote.test>\r\n" + b"RCPT TO:<alice@example.test>\r\n" * 21 + b"NOOP " + b"x" * 3000 + b"\r\n"
               + b"RSET\r\nMAIL FROM:<l@remote.test> SIZE=1000\r\nRCPT TO:<carol@example.test>\r\nQUIT\r\n")
        replies = [r[:9] for r in c.replies(28)]
        assert replies[2:22] == ["250 2.1.5"] * 20
        assert replies[22:] == ["452 4.5.3", "500 5.5.2", "250 2.0.0", "250 2.1.0", "552 5.2.2", "221 2.0.0"]
        c.close()
    finally:
        server.cli("user", "quota", CAROL, "--quota", "0")


def test_quota_change_applies_to_the_next_message(server: Any) -> None:
    """A quota set or lifted with the CLI while the server runs decides the very next RCPT."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as c:
        c.ehlo("c")

        def rcpt() -> int:
            c.rset()
            c.mail("l@remote.test", ["SIZE=1000"])
            return c.rcpt(CAROL)[0]

        assert rcpt() == 250
        server.cli("user", "quota", CAROL, "--quota", "1")
        try:
            assert rcpt() == 552
        finally:
            server.cli("user", "quota", CAROL, "--quota", "0")
        assert rcpt() == 250


def test_connection_cap_timeout_and_throttle_over_tcp(mailsuite_server: Any) -> None:
    """Over connections_per_ip: 421 4.7.0; an idle client hears 421 4.4.2; repeated bad passwords end with 454 4.7.0 and a close."""
    srv = mailsuite_server({"limits.connections_per_ip": 2, "limits.smtp_timeout": 2.0, "auth.free_failures": 1, "auth.max_failures": 2,
                            "auth.max_delay": 0.0}, users={ALICE: PASSWORD})
    a, b = Raw(srv.ports["smtp"]), Raw(srv.ports["submission"])
    c = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = c.recv(1024)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"421 4.7.0")
    assert c.recv(1024) == b""
    c.close()
    for idle in (a, b):
        assert idle.replies(1)[0].startswith("421 4.4.2")  # the 2 s idle timeout
        idle.close()
    time.sleep(0.2)  # let the server count the closed connections out
    c = Raw(srv.ports["submissions"], tls=srv.client_tls())
    c.send(b"EHLO c\r\n")
    c.replies(1)
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode())
    codes = []
    for _ in range(4):
        c.send(b"AUTH PLAIN " + bad + b"\r\n")
        codes.append(c.replies(1)[0][:9])
        if codes[-1].startswith("454"):
            break
    assert codes[0] == "535 5.7.8" and codes[-1] == "454 4.7.0"
    c.sock.settimeout(5)
    assert c.sock.recv(100) == b""
    c.close()
