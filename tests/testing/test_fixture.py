"""mailsuite.testing.MailServer from plain synchronous tests, as another project would use it."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
from email.message import EmailMessage

import pytest

from mailsuite.testing import MailServer


def _message(to: str, subject: str, sender: str = "app@sender.example", body: str = "Hello from the app\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def test_send_then_read_back_over_imap_and_pop3() -> None:
    """Capture mode: any recipient is stored; the same address reads it with any password."""
    with MailServer() as server:
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            client.send_message(_message("bob@example.test", "Invoice 42"))
        [captured] = server.wait_for_messages(1, timeout=10, to="bob@example.test")
        assert captured.subject == "Invoice 42"
        assert captured.sender == "app@sender.example"
        assert captured.mailbox == "bob@example.test"
        assert captured.message.get_content() == "Hello from the app\n"

        imap = imaplib.IMAP4(server.host, server.imap_port)
        imap.login("bob@example.test", "anything")
        imap.select("INBOX")
        _, data = imap.search(None, "ALL")
        assert data[0].split() == [b"1"]
        _, fetched = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Invoice 42" in fetched[0][1]
        imap.logout()

        pop = poplib.POP3(server.host, server.pop3_port)
        pop.user("bob@example.test")
        pop.pass_("whatever")
        count, _ = pop.stat()
        assert count == 1
        assert b"Subject: Invoice 42" in b"\r\n".join(pop.retr(1)[1])
        pop.quit()


def test_filters_and_purge() -> None:
    """messages() filters by recipient, sender and subject; purge() empties every mailbox."""
    with MailServer() as server:
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            client.send_message(_message("a@example.test", "alpha"))
            client.send_message(_message("b@other.test", "beta", sender="x@y.example"))
        server.wait_for_messages(2, timeout=10)
        assert [m.subject for m in server.messages(to="b@other.test")] == ["beta"]
        assert [m.subject for m in server.messages(from_="x@y.example")] == ["beta"]
        assert [m.subject for m in server.messages(subject="ALP")] == ["alpha"]
        server.purge()
        assert server.messages() == []


def test_two_servers_share_neither_ports_nor_mail() -> None:
    """Two fixtures in one process are fully separate."""
    with MailServer() as first, MailServer() as second:
        assert set(first.ports.values()).isdisjoint(second.ports.values())
        with smtplib.SMTP(first.host, first.smtp_port) as client:
            client.send_message(_message("only@example.test", "first only"))
        first.wait_for_messages(1, timeout=10)
        assert second.messages() == []


def test_wait_for_messages_times_out_with_a_clear_error() -> None:
    """A test waiting for mail that never comes fails with an AssertionError naming the filter."""
    with MailServer() as server:
        with pytest.raises(AssertionError, match="nobody"):
            server.wait_for_messages(1, timeout=0.3, to="nobody@example.test")


def test_tls_ports_trust_the_given_certificate() -> None:
    """The fixture's certificate lets a client verify implicit TLS on the submission port."""
    with MailServer() as server:
        with smtplib.SMTP_SSL(server.host, server.submissions_port, context=server.ssl_context()) as client:
            client.login("carol@example.test", "any")
            client.send_message(_message("dave@example.test", "over tls", sender="carol@example.test"))
        assert server.wait_for_messages(1, timeout=10, to="dave@")[0].subject == "over tls"


class TestFaults:
    """Fault injection as a client library under test sees it."""

    def test_rcpt_failure(self) -> None:
        with MailServer() as server:
            server.fail_next("RCPT", 451, "try later")
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
                    client.send_message(_message("a@example.test", "x"))
                assert caught.value.recipients["a@example.test"][0] == 451
                client.send_message(_message("a@example.test", "second try"))
            assert [m.subject for m in server.wait_for_messages(1, timeout=10)] == ["second try"]

    def test_connect_mail_and_data_failures(self) -> None:
        with MailServer() as server:
            server.fail_next("CONNECT", 421, "busy")
            with pytest.raises(smtplib.SMTPConnectError):
                smtplib.SMTP(server.host, server.smtp_port)
            server.fail_next("MAIL", 550, "sender blocked")
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                with pytest.raises(smtplib.SMTPSenderRefused):
                    client.send_message(_message("a@example.test", "x"))
            server.fail_next("DATA", 554, "rejected content")
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                with pytest.raises(smtplib.SMTPDataError) as caught:
                    client.send_message(_message("a@example.test", "x"))
                assert caught.value.smtp_code == 554
            assert server.messages() == []

    def test_drop_and_delay(self) -> None:
        with MailServer() as server:
            server.drop_next("MAIL")
            client = smtplib.SMTP(server.host, server.smtp_port)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.send_message(_message("a@example.test", "x"))
            server.delay_next("RCPT", 0.5)
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                started = time.monotonic()
                client.send_message(_message("a@example.test", "late"))
                assert time.monotonic() - started >= 0.5
            assert [m.subject for m in server.wait_for_messages(1, timeout=10)] == ["late"]


def test_strict_mode_applies_real_policies() -> None:
    """Strict mode: unknown users are refused, logins need the right password and TLS."""
    with MailServer(strict=True) as server:
        server.add_user("erin@example.test", "s3cret-pass")
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
                client.send_message(_message("nobody@example.test", "x"))
            assert caught.value.recipients["nobody@example.test"][0] == 550
            client.send_message(_message("erin@example.test", "known user"))
        with smtplib.SMTP_SSL(server.host, server.submissions_port, context=server.ssl_context()) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("erin@example.test", "wrong")
        imap = imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=server.ssl_context())
        imap.login("erin@example.test", "s3cret-pass")
        assert imap.select("INBOX")[1] == [b"1"]
        imap.logout()
