"""Faults in every protocol, as client code under test meets them (real clients, real server)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
from typing import Iterator

import pytest

from mailsuite.testing import Fault, FaultPlan, MailServer, MailServerError


@pytest.fixture(scope="module")
def server() -> Iterator[MailServer]:
    with MailServer() as running:
        yield running


@pytest.fixture(autouse=True)
def empty(server: MailServer) -> None:
    server.purge()


def deliver(server: MailServer, to: str = "a@example.test", subject: str = "hello") -> None:
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.sendmail("s@sender.example", [to], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def imap_login(server: MailServer, user: str = "a@example.test") -> imaplib.IMAP4:
    imap = imaplib.IMAP4(server.host, server.imap_port)
    imap.login(user, "any")
    return imap


class TestIMAP:
    def test_no_bad_and_uid_forms(self, server: MailServer) -> None:
        deliver(server)
        server.expect_messages(1, timeout=10)
        imap = imap_login(server)
        server.fail_next("SELECT", "NO", "[UNAVAILABLE] try later", protocol="imap")
        assert imap.select("INBOX") == ("NO", [b"[UNAVAILABLE] try later"])
        assert imap.select("INBOX")[0] == "OK"
        server.fail_next("FETCH", "BAD", protocol="imap", count=2)
        with pytest.raises(imaplib.IMAP4.error, match="Fault injected"):
            imap.fetch("1", "(FLAGS)")
        with pytest.raises(imaplib.IMAP4.error):
            imap.uid("FETCH", "1", "(FLAGS)")  # "FETCH" targets UID FETCH too
        assert imap.fetch("1", "(FLAGS)")[0] == "OK"
        imap.logout()

    def test_bye_drop_and_delay(self, server: MailServer) -> None:
        imap = imap_login(server)
        server.fail_next("NOOP", "BYE", "going down", protocol="imap")
        with pytest.raises(imaplib.IMAP4.abort):
            imap.noop()
        imap = imap_login(server)
        server.drop_next("LIST", protocol="imap")
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            imap.list()
        imap = imap_login(server)
        server.delay_next("NOOP", 0.4, protocol="imap")
        started = time.monotonic()
        assert imap.noop()[0] == "OK"
        assert time.monotonic() - started >= 0.4
        imap.logout()

    def test_greeting_and_starttls(self, server: MailServer) -> None:
        server.fail_next("CONNECT", "BYE", "maintenance", protocol="imap")
        with pytest.raises(imaplib.IMAP4.error):
            imaplib.IMAP4(server.host, server.imap_port)
        server.fail_next("STARTTLS", "NO", protocol="imap")
        imap = imaplib.IMAP4(server.host, server.imap_port)
        with pytest.raises(imaplib.IMAP4.error, match="TLS"):  # imaplib's words for the tagged NO
            imap.starttls(ssl_context=server.ssl_context())
        imap.starttls(ssl_context=server.ssl_context())  # the next one works
        imap.logout()

    def test_targeted_by_user(self, server: MailServer) -> None:
        server.fail_next("SELECT", "NO", protocol="imap", user="victim@example.test", count=None)
        other = imap_login(server, "other@example.test")
        assert other.select("INBOX")[0] == "OK"
        victim = imap_login(server, "victim@example.test")
        assert victim.select("INBOX")[0] == "NO"
        assert victim.select("INBOX")[0] == "NO"  # persistent until cleared
        server.clear_faults()
        assert victim.select("INBOX")[0] == "OK"
        other.logout()
        victim.logout()


class TestPOP3:
    def test_err_drop_greeting_and_stls(self, server: MailServer) -> None:
        deliver(server)
        server.expect_messages(1, timeout=10)
        server.fail_next("RETR", "-ERR", "[SYS/TEMP] disk trouble", protocol="pop3")
        pop = poplib.POP3(server.host, server.pop3_port)
        pop.user("a@example.test")
        pop.pass_("any")
        with pytest.raises(poplib.error_proto, match="disk trouble"):
            pop.retr(1)
        assert b"Subject: hello" in b"\r\n".join(pop.retr(1)[1])
        pop.quit()
        server.drop_next("USER", protocol="pop3")
        pop = poplib.POP3(server.host, server.pop3_port)
        with pytest.raises((poplib.error_proto, OSError)):
            pop.user("a@example.test")
        server.fail_next("CONNECT", "-ERR", "busy", protocol="pop3")
        with pytest.raises(poplib.error_proto, match="busy"):
            poplib.POP3(server.host, server.pop3_port)
        server.fail_next("STLS", "-ERR", protocol="pop3")
        pop = poplib.POP3(server.host, server.pop3_port)
        with pytest.raises(poplib.error_proto):
            pop.stls(context=server.ssl_context())
        pop.quit()


class TestSMTP:
    def test_starttls_refused(self, server: MailServer) -> None:
        server.fail_next("STARTTLS", 454, "TLS not available now")
        with smtplib.SMTP(server.host, server.submission_port) as client:
            with pytest.raises(smtplib.SMTPResponseException) as caught:
                client.starttls(context=server.ssl_context())
            assert caught.value.smtp_code == 454

    def test_stored_then_dropped_before_250_makes_a_duplicate(self, server: MailServer) -> None:
        """The client sees a lost connection after DATA although the message was stored; its retry is a duplicate."""
        server.drop_after_store()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                client.sendmail("s@sender.example", ["dup@example.test"], b"Subject: once\r\n\r\nbody\r\n")
        deliver(server, "dup@example.test", "once")  # the client's retry
        assert [m.subject for m in server.expect_messages(2, timeout=10, mailbox="dup@example.test")] == ["once", "once"]

    def test_targeted_by_port_recipient_and_sender(self, server: MailServer) -> None:
        server.fail_next("CONNECT", 421, "busy", port=server.submission_port)
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            assert client.noop()[0] == 250
        with pytest.raises(smtplib.SMTPConnectError):
            smtplib.SMTP(server.host, server.submission_port)
        server.fail_next("RCPT", 550, "no such user", recipient="gone@example.test", count=None)
        server.fail_next("MAIL", 550, "blocked sender", sender="spam@sender.example")
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            refused = client.sendmail("s@sender.example", ["gone@example.test", "kept@example.test"], b"Subject: part\r\n\r\nx\r\n")
            assert refused == {"gone@example.test": (550, b"no such user")}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                client.sendmail("s@sender.example", ["gone@example.test"], b"Subject: again\r\n\r\nx\r\n")
            with pytest.raises(smtplib.SMTPSenderRefused):
                client.sendmail("spam@sender.example", ["kept@example.test"], b"Subject: spam\r\n\r\nx\r\n")
        assert [m.subject for m in server.expect_messages(1, timeout=10)] == ["part"]
        server.fail_next("DATA", 452, "mailbox full", recipient="kept@example.test")
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail("s@sender.example", ["kept@example.test"], b"Subject: full\r\n\r\nx\r\n")

    def test_probability(self, server: MailServer) -> None:
        server.fail_next("NOOP", 451, "flaky", count=None, probability=0.5)
        with smtplib.SMTP(server.host, server.smtp_port) as client:
            codes = {client.noop()[0] for _ in range(60)}
        assert codes == {250, 451}


def test_api_refuses_faults_that_make_no_sense(server: MailServer) -> None:
    for fault, reason in [
        ({"command": "SELECT", "protocol": "imap", "code": 451}, "NO"),
        ({"command": "CONNECT", "protocol": "imap", "code": "NO"}, "BYE"),
        ({"command": "RETR", "protocol": "pop3", "code": "NO"}, "-ERR"),
        ({"command": "RCPT", "after_store": True}, "DATA"),
        ({"command": "NOOP", "probability": 0}, "probability"),
        ({"command": "NOOP", "protocol": "nntp"}, "protocol"),
    ]:
        with pytest.raises(MailServerError) as caught:
            server._api("POST", "faults", fault)
        assert caught.value.status == 400 and reason in caught.value.reason


def test_plan_matching_without_a_server() -> None:
    plan = FaultPlan()
    plan.add(Fault("RCPT", code=450, recipient="x@example.test", count=2))
    plan.add(Fault("FETCH", protocol="imap", code="NO", port=1143))
    assert plan.take("RCPT", arg="TO:<y@example.test>") is None
    assert plan.take("RCPT", arg="TO:<X@example.test>") is not None
    assert plan.take("DATA", recipients=["x@example.test"]) is None  # a RCPT fault is not a DATA fault
    assert plan.take("RCPT", arg="TO:<x@example.test>") is not None
    assert plan.take("RCPT", arg="TO:<x@example.test>") is None  # count used up

    class Host:
        def __init__(self, port: int) -> None:
            self.port = port

    class Transport:
        def __init__(self, port: int) -> None:
            self.host = Host(port)

        def getHost(self) -> Host:  # noqa: N802 - Twisted's name
            return self.host

    assert plan.take("UID FETCH", "imap", transport=Transport(143)) is None
    assert plan.take("UID FETCH", "imap", transport=Transport(1143)) is not None
    plan.add(Fault("NOOP", code=451, count=None, probability=0.25))
    draws = iter([0.9, 0.1])
    plan.random = lambda: next(draws)
    assert plan.take("NOOP") is None and plan.take("NOOP") is not None
