"""The rich captured message and the exact-count wait, as a test of an application uses them."""

from __future__ import annotations

import imaplib
import re
import smtplib
import threading
from email.message import EmailMessage
from typing import Iterator

import pytest

from mailsuite.testing import MailServer


@pytest.fixture(scope="module")
def server() -> Iterator[MailServer]:
    with MailServer() as running:
        yield running


@pytest.fixture(autouse=True)
def empty(server: MailServer) -> None:
    server.purge()


def welcome() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Shop <noreply@shop.example>"
    message["To"] = "Ann <ann@example.test>"
    message["Subject"] = "Bienvenue, Ann"
    message["X-Campaign"] = "one"
    message["X-Campaign"] = "two"
    message.set_content("Confirm: https://shop.example/confirm?token=AB12CD\n")
    message.add_alternative('<p><a href="https://shop.example/confirm?token=AB12CD">Confirm</a> <img src="cid:logo"></p>', subtype="html")
    message.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n...", maintype="image", subtype="png", cid="<logo>")
    message.add_attachment(b"%PDF-1.4\x00\xff binary", maintype="application", subtype="pdf", filename="terms.pdf")
    return message


def test_text_html_attachments_headers_links_search(server: MailServer) -> None:
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.send_message(welcome(), to_addrs=["ann@example.test", "audit@example.test"])  # audit: a Bcc
    [copy] = server.expect_messages(1, timeout=10, mailbox="ann@example.test")
    assert copy.text == "Confirm: https://shop.example/confirm?token=AB12CD\n"
    assert copy.html is not None and '<a href="https://shop.example/confirm?token=AB12CD">' in copy.html
    assert copy.links() == ["https://shop.example/confirm?token=AB12CD"]
    match = copy.search(r"token=(\w+)")
    assert match is not None and match.group(1) == "AB12CD"
    assert copy.search(re.compile("no such thing")) is None
    assert copy.search("Campaign: two") is not None  # header fields are searched too
    assert copy.headers["subject"] == "Bienvenue, Ann"
    assert copy.headers.get_all("X-Campaign") == ["one", "two"]
    assert "Received" in copy.headers and copy.headers.get("X-Missing") is None
    by_type = {a.content_type: a for a in copy.attachments}
    assert by_type["application/pdf"].filename == "terms.pdf"
    assert by_type["application/pdf"].data == b"%PDF-1.4\x00\xff binary"
    assert by_type["image/png"].content_id == "logo" and by_type["image/png"].inline
    assert copy.recipients == ["ann@example.test", "audit@example.test"]  # the exact envelope, Bcc included
    assert copy.sender == "noreply@shop.example"


def test_mailbox_filter_is_exact_and_to_is_a_substring(server: MailServer) -> None:
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.sendmail("s@sender.example", ["bob@example.test"], b"Subject: one\r\n\r\nx\r\n")
        client.sendmail("s@sender.example", ["bobby@example.test"], b"Subject: two\r\n\r\nx\r\n")
    server.expect_messages(2, timeout=10)
    assert [m.subject for m in server.messages(to="bob")] == ["one", "two"]
    assert [m.subject for m in server.messages(mailbox="bob@example.test")] == ["one"]
    assert [m.subject for m in server.messages(mailbox="BOB@example.test")] == ["one"]
    assert server.messages(mailbox="bo@example.test") == []


def test_messages_appended_over_imap_have_no_envelope(server: MailServer) -> None:
    imap = imaplib.IMAP4(server.host, server.imap_port)
    imap.login("carl@example.test", "any")
    imap.append("Sent", None, None, b"Subject: draft\r\n\r\nhello\r\n")
    imap.logout()
    [sent] = server.expect_messages(1, timeout=10, mailbox="carl@example.test")
    assert (sent.folder, sent.subject, sent.recipients, sent.text) == ("Sent", "draft", [], "hello\n")


def test_expect_messages_counts_exactly(server: MailServer) -> None:
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        for n in range(2):
            client.sendmail("s@sender.example", ["dora@example.test"], f"Subject: n{n}\r\n\r\nx\r\n".encode())
    assert len(server.expect_messages(2, timeout=10)) == 2
    with pytest.raises(AssertionError) as caught:
        server.expect_messages(1, timeout=10)
    text = str(caught.value)
    assert "expected exactly 1" in text and "found 2" in text and "'n0'" in text and "'n1'" in text
    with pytest.raises(AssertionError, match=r"expected exactly 3 message\(s\) matching \{'to': 'dora'\} within 0.3s, found 2"):
        server.expect_messages(3, timeout=0.3, to="dora")


def test_expect_messages_fails_when_one_more_arrives_while_settling(server: MailServer) -> None:
    def send(subject: str) -> None:
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            client.sendmail("s@sender.example", ["eve@example.test"], f"Subject: {subject}\r\n\r\nx\r\n".encode())

    send("first")
    server.expect_messages(1, timeout=10)
    threading.Timer(0.2, send, args=("second",)).start()
    with pytest.raises(AssertionError, match="found 2"):
        server.expect_messages(1, timeout=10, settle=2.0)
