"""Two real servers: alice@a.test submits on A, A relays to B by MX, B records dkim=pass spf=pass dmarc=pass.

The SMTP server calls mailsuite.mailauth.smtp_hook at the end of each message.
"""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from tests.mailauth.test_mailauth_cli import printed_record

USERS = {"bob@b.test": "bob-secret-1"}


@pytest.fixture(scope="module")
def server_b(mailsuite_module_server, dns):
    """B: mail.b.test with inbound checks on, shared by this module's tests (each finds its message by Subject)."""
    return mailsuite_module_server({"hostname": "mail.b.test", "domains": ["b.test"], "queue.resolver": dns.address,
                                    "mailauth.verify_inbound": True}, users=USERS)


def wait_for_mail(server, address, subject, folder="new", timeout=20.0):
    """The stored message with this Subject, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = server.mail_dir(address) / folder
        for path in sorted(new.iterdir()) if new.is_dir() else []:
            data = path.read_bytes()
            if f"\r\nSubject: {subject}\r\n".encode() in data:
                return data
        time.sleep(0.1)
    raise AssertionError(f"no mail for {address} within {timeout}s:\n{server.log()[-3000:]}")


def authentication_results(data: bytes) -> str:
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    match = re.search(r"^Authentication-Results: mail\.b\.test;(.*?)(?=\r\n\S)", header, re.S | re.M)
    assert match, header
    return re.sub(r"\s+", " ", match.group(1))


def test_a_to_b_passes_dkim_spf_dmarc(mailsuite_server, server_b, dns):
    """Submitted on A (signed with the keygen key), relayed by MX to B: B adds dkim=pass spf=pass dmarc=pass."""
    base = {"a.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}, "_dmarc.a.test": {"TXT": ["v=DMARC1; p=reject"]},
            "b.test": {"MX": [[10, "mx.b.test"]]}, "mx.b.test": {"A": ["127.0.0.1"]}}
    dns.set_records(base)
    b = server_b
    a = mailsuite_server({"hostname": "mail.a.test", "domains": ["a.test"], "queue.resolver": dns.address,
                          "queue.outbound_port": b.ports["smtp"]}, users={"alice@a.test": "alice-secret-1"})
    made = a.cli("dkim", "keygen", "a.test", "--selector", "e2e")
    owner, strings = printed_record(made.stdout)
    dns.set_records({**base, owner: {"TXT": [strings]}})

    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as client:
        client.starttls(context=a.client_tls())
        client.login("alice@a.test", "alice-secret-1")
        client.sendmail("alice@a.test", ["bob@b.test"],
                        b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: signed\r\n\r\nHello Bob\r\n")
    data = wait_for_mail(b, "bob@b.test", "signed")
    results = authentication_results(data)
    assert "dkim=pass" in results and "header.d=a.test" in results and "header.s=e2e" in results
    assert "spf=pass" in results and "smtp.mailfrom=alice@a.test" in results
    assert "dmarc=pass" in results and "header.from=a.test" in results
    assert data.count(b"Authentication-Results:") == 1


def test_forged_sender_rejected_and_forged_results_stripped(server_b, dns):
    """Port 25: a p=reject domain whose SPF excludes us gets 550 5.7.1; a forged header claiming B is removed."""
    dns.set_records({"c.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}, "_dmarc.c.test": {"TXT": ["v=DMARC1; p=reject"]},
                     "d.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}})
    b = server_b
    with smtplib.SMTP("127.0.0.1", b.ports["smtp"], timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("ceo@c.test", ["bob@b.test"], b"From: ceo@c.test\r\nSubject: pay\r\n\r\nwire it\r\n")
        assert refused.value.smtp_code == 550 and b"5.7.1" in refused.value.smtp_error
        client.sendmail("x@d.test", ["bob@b.test"],
                        b"Authentication-Results: mail.b.test; dkim=pass header.d=bank.test\r\n"
                        b"From: x@d.test\r\nSubject: ok\r\n\r\nhello\r\n")
    data = wait_for_mail(b, "bob@b.test", "ok")
    assert data.count(b"Authentication-Results:") == 1
    assert "spf=pass" in authentication_results(data) and b"bank.test" not in data


def test_p_quarantine_failure_lands_in_junk(server_b, dns):
    """Port 25, a p=quarantine domain failing SPF and DKIM: 250, and the copy is in the recipient's Junk folder."""
    from mailsuite.store.names import folder_dirname

    dns.set_records({"q.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}, "_dmarc.q.test": {"TXT": ["v=DMARC1; p=quarantine"]}})
    b = server_b
    with smtplib.SMTP("127.0.0.1", b.ports["smtp"], timeout=30) as client:
        client.sendmail("x@q.test", ["bob@b.test"], b"From: x@q.test\r\nSubject: maybe spam\r\n\r\nhi\r\n")
    stored = wait_for_mail(b, "bob@b.test", "maybe spam", folder=f"{folder_dirname('Junk')}/new")
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=q.test" in stored
    inbox = b.mail_dir("bob@b.test") / "new"
    assert not any(b"Subject: maybe spam" in p.read_bytes() for p in inbox.iterdir()) if inbox.is_dir() else True
