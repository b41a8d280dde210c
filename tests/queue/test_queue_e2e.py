"""Two mailsuite servers, two domains, one loopback DNS server: submit on A, relay by MX to B, read on B."""

from __future__ import annotations

import imaplib
import smtplib
import time
from email.message import EmailMessage

from tests.conftest import ServerProcess

ALICE, BOB = "alice@example.test", "bob@other.test"


def _start(tmp_path, name: str, overrides: dict, users: dict[str, str]) -> ServerProcess:
    (tmp_path / name).mkdir()
    server = ServerProcess(tmp_path / name, overrides)
    for address, password in users.items():
        server.add_user(address, password)
    return server.start()


def test_submission_on_a_is_relayed_by_mx_to_b_and_read_over_imap(tmp_path, dns):
    """alice@example.test (server A) writes to bob@other.test (server B); B's MX in DNS points at B's port 25 listener."""
    b = _start(tmp_path, "b", {"hostname": "mail.other.test", "domains": ["other.test"]}, {BOB: "bob-password-1"})
    a = None
    try:
        dns.set_records({"other.test": {"MX": [[10, "mail.other.test"]]}, "mail.other.test": {"A": ["127.0.0.1"]}})
        a = _start(tmp_path, "a", {"queue.resolver": dns.address, "queue.outbound_port": b.ports["smtp"], "queue.retry_schedule": [0.5, 1.0],
                                   "queue.delay_warning": 0.0}, {ALICE: "alice-password-1"})
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "across domains"
        msg.set_content("Hello Bob, this went through A's queue.\n")
        with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=10) as s:
            s.starttls(context=a.client_tls())
            s.login(ALICE, "alice-password-1")
            s.send_message(msg)

        deadline = time.monotonic() + 20
        found = None
        while time.monotonic() < deadline and found is None:
            imap = imaplib.IMAP4("127.0.0.1", b.ports["imap"], timeout=10)
            try:
                imap.starttls(ssl_context=b.client_tls())
                imap.login(BOB, "bob-password-1")
                imap.select("INBOX")
                _, ids = imap.search(None, "ALL")
                if ids[0]:
                    _, data = imap.fetch(ids[0].split()[0], "(RFC822)")
                    found = data[0][1]
                imap.logout()
            finally:
                try:
                    imap.shutdown()
                except OSError:
                    pass
            if found is None:
                time.sleep(0.2)
        assert found is not None, f"nothing arrived at B\nA log:\n{a.log()[-3000:]}\nB log:\n{b.log()[-3000:]}"
        assert b"Subject: across domains" in found and b"this went through A's queue" in found
        assert found.count(b"Received:") >= 2  # A's submission hop and B's MX hop
        assert b"mail.other.test" in found
    finally:
        if a is not None:
            a.stop()
        b.stop()
