"""End to end across two domains, as two real mail hosts on one machine.

Instance A serves a.test on 127.0.0.2, instance B serves b.test on 127.0.0.3;
both take inbound SMTP on the same port number (the one their queues dial),
and a real DNS server on loopback answers MX and A records.  Alice (a.test)
submits over 587 (STARTTLS) and 465 (implicit TLS); A's queue finds B's MX and
relays; Bob reads with imaplib, poplib, curl and mbsync; Bob replies the same
way back; a message to an unknown b.test user comes back to Alice as a DSN.
"""

from __future__ import annotations

import email
import imaplib
import poplib
import re
import smtplib
import socket
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.dnsserver import DNSServer

ALICE, ALICE_PW = "alice@a.test", "alice-pass-123"
BOB, BOB_PW = "bob@b.test", "bob-pass-456"


def free_port_on(*hosts: str) -> int:
    """A port number free on every given loopback address."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


@pytest.fixture(scope="module")
def hosts(mailsuite_module_server: Any) -> Any:
    port = free_port_on("127.0.0.2", "127.0.0.3")
    records = {
        "a.test": {"MX": [[10, "mx.a.test"]]},
        "mx.a.test": {"A": ["127.0.0.2"]},
        "b.test": {"MX": [[10, "mx.b.test"]]},
        "mx.b.test": {"A": ["127.0.0.3"]},
    }
    with DNSServer(records) as dns:
        common = {"queue.resolver": dns.address, "queue.outbound_port": port, "queue.retry_schedule": [0.5, 1.0], "smtp.port": port}
        a = mailsuite_module_server({**common, "hostname": "mx.a.test", "domains": ["a.test"], "smtp.address": "127.0.0.2"}, users={ALICE: ALICE_PW})
        b = mailsuite_module_server({**common, "hostname": "mx.b.test", "domains": ["b.test"], "smtp.address": "127.0.0.3"}, users={BOB: BOB_PW})
        yield a, b


def submit(server: Any, user: str, password: str, to: str, subject: str, implicit_tls: bool = False, reply_to: str | None = None) -> str:
    message = EmailMessage()
    message["From"] = user
    message["To"] = to
    message["Subject"] = subject
    if reply_to:
        message["In-Reply-To"] = reply_to
    message.set_content(f"Body of {subject}\n")
    if implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=server.client_tls(), timeout=20)
    else:
        client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20)
        client.starttls(context=server.client_tls())
    with client:
        client.login(user, password)
        client.send_message(message)
    return subject


def imap_wait(server: Any, user: str, password: str, *criteria: str, timeout: float = 30.0) -> bytes:
    """Poll the user's INBOX over IMAP (STARTTLS) until a message matches the SEARCH criteria; return the newest."""
    deadline = time.monotonic() + timeout
    while True:
        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        imap.starttls(ssl_context=server.client_tls())
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, found = imap.uid("SEARCH", *criteria)
        if found[0]:
            _, data = imap.uid("FETCH", found[0].split()[-1], "(BODY.PEEK[])")
            imap.logout()
            return data[0][1]
        imap.logout()
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing matching {criteria} reached {user} in {timeout}s:\n{server.log()[-3000:]}")
        time.sleep(0.3)


def test_submit_relay_read_reply_and_bounce(hosts: Any, tmp_path: Path) -> None:
    a, b = hosts
    submit(a, ALICE, ALICE_PW, BOB, "over 587")
    submit(a, ALICE, ALICE_PW, BOB, "over 465", implicit_tls=True)

    # B stores both; Bob reads them with IMAP...
    first = imap_wait(b, BOB, BOB_PW, "SUBJECT", '"over 587"')
    imap_wait(b, BOB, BOB_PW, "SUBJECT", '"over 465"')
    parsed = email.message_from_bytes(first)
    assert parsed["Return-Path"] == f"<{ALICE}>"
    assert parsed["Delivered-To"] == BOB
    assert parsed["Message-ID"] and parsed["Date"]  # added at submission
    received = parsed.get_all("Received")
    assert any("mx.b.test" in r and "ESMTPS" in r for r in received), received  # A -> B over STARTTLS
    assert any("ESMTPSA" in r for r in received), received  # Alice's authenticated submission

    # ...with POP3 (STLS)...
    pop = poplib.POP3("127.0.0.1", b.ports["pop3"])
    pop.stls(context=b.client_tls())
    pop.user(BOB)
    pop.pass_(BOB_PW)
    assert pop.stat()[0] == 2
    retrieved = b"".join(b"\r\n".join(pop.retr(n)[1]) for n in (1, 2))
    assert b"Subject: over 587" in retrieved and b"Subject: over 465" in retrieved
    pop.quit()

    # ...with curl over IMAP with STARTTLS...
    curl = subprocess.run(
        ["curl", "-s", "--ssl-reqd", "--cacert", str(b.certificate), "-u", f"{BOB}:{BOB_PW}",
         f"imap://127.0.0.1:{b.ports['imap']}/INBOX;UID=1"],
        capture_output=True, timeout=30,
    )
    assert curl.returncode == 0, curl.stderr
    assert b"Subject: over 587" in curl.stdout

    # ...and with mbsync, into a local Maildir.
    local = tmp_path / "bob-local"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount b\nHost localhost\nPort {b.ports['imaps']}\nUser {BOB}\nPass {BOB_PW}\nSSLType IMAPS\n"
        f"CertificateFile {b.certificate}\n\nIMAPStore remote\nAccount b\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\n\n"
        "Channel inbox\nFar :remote:INBOX\nNear :local:INBOX\nCreate Near\nSync Pull\nSyncState *\n"
    )
    sync = subprocess.run(["mbsync", "-c", str(rc), "inbox"], capture_output=True, timeout=60, text=True)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    pulled = [p.read_bytes() for p in (local / "INBOX").glob("*/*") if p.is_file()]
    assert len(pulled) == 2 and any(b"over 587" in m for m in pulled)

    # Bob replies; B relays to A; Alice reads it.
    submit(b, BOB, BOB_PW, ALICE, "Re: over 587", reply_to=parsed["Message-ID"])
    reply = email.message_from_bytes(imap_wait(a, ALICE, ALICE_PW, "SUBJECT", '"Re: over 587"'))
    assert reply["In-Reply-To"] == parsed["Message-ID"]

    # A message to an unknown b.test user: B refuses at RCPT, A bounces a DSN to Alice.
    submit(a, ALICE, ALICE_PW, "nobody@b.test", "to nobody")
    # The DSN's subject is the queue's own: find it by its content type.
    bounce = email.message_from_bytes(imap_wait(a, ALICE, ALICE_PW, "HEADER", "Content-Type", "multipart/report"))
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    report = bounce.as_string()
    assert "nobody@b.test" in report and re.search(r"5\.1\.1", report)
    assert bounce["Return-Path"] in ("<>", None)

