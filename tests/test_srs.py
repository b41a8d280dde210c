"""Sender Rewriting Scheme: rewriting, reversal, forgeries; and over SMTP with a real relay queue and DNS."""

from __future__ import annotations

import collections
import smtplib
from typing import Any, Iterator

import pytest
from twisted.internet import task

from mailsuite.srs import SRS, ForgedSRS
from tests.support.dnsserver import DNSServer, dns  # noqa: F401 - the dns fixture
from tests.support.smtpsink import SMTPSink

SECRET = "a long and private srs secret"


def test_forward_and_reverse_round_trip() -> None:
    clock = task.Clock()
    clock.advance(20_000 * 86400)
    srs = SRS(SECRET, "example.test", clock=clock)
    rewritten = srs.forward("Alice@Sender.test")
    local, _, domain = rewritten.rpartition("@")
    assert domain == "example.test" and local.startswith("SRS0=") and local.endswith("=Sender.test=Alice")
    assert srs.reverse(rewritten) == "Alice@Sender.test"
    assert srs.reverse(rewritten.upper().replace("EXAMPLE.TEST", "example.test")).lower() == "alice@sender.test"  # case-folded hash
    assert srs.forward("") == "" and srs.forward("me@example.test") == "me@example.test"
    clock.advance(22 * 86400)  # older than max_age_days
    with pytest.raises(ForgedSRS):
        srs.reverse(rewritten)


def test_forged_addresses_are_refused() -> None:
    srs = SRS(SECRET, "example.test")
    good = srs.forward("alice@sender.test")
    forged = "SRS0=AAAA" + good[9:]
    with pytest.raises(ForgedSRS) as info:
        srs.reverse(forged)
    assert info.value.code == 550
    with pytest.raises(ForgedSRS):
        SRS("another secret entirely", "example.test").reverse(good)
    with pytest.raises(ForgedSRS):
        srs.reverse("SRS0=broken@example.test")


def test_a_second_forwarder_makes_srs1_that_reverses_to_the_first() -> None:
    first = SRS(SECRET, "first.test")
    second = SRS("the second forwarder's secret", "second.test")
    third = SRS("a third forwarder's own secret", "third.test")
    srs0 = first.forward("alice@sender.test")
    srs1 = second.forward(srs0)
    assert srs1.startswith("SRS1=") and srs1.endswith("@second.test")
    srs1_again = third.forward(srs1)  # keeps the first forwarder, re-signed
    assert "=first.test==" in srs1_again and srs1_again.endswith("@third.test")
    assert second.reverse(srs1) == srs0
    assert third.reverse(srs1_again) == srs0
    assert first.reverse(second.reverse(srs1)) == "alice@sender.test"


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    s = SMTPSink().start()
    yield s
    s.stop()


def test_forwarded_mail_gets_an_srs_sender_and_its_bounce_goes_back(mailsuite_server: Any, dns: DNSServer, sink: SMTPSink) -> None:  # noqa: F811
    """An alias to another domain relays with an SRS0 sender; a bounce to it reaches the original sender; a forged one gets 550."""
    dns.set_records({"far.test": {"MX": [[10, "mx.far.test"]]}, "sender.test": {"MX": [[10, "mx.far.test"]]}, "mx.far.test": {"A": [sink.host]}})
    server = mailsuite_server({"queue.resolver": dns.address, "queue.outbound_port": sink.port, "queue.retry_schedule": [0.5],
                               "srs.enabled": True, "srs.secret": SECRET})
    server.cli("alias", "add", "bob@example.test", "carol@far.test")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        assert c.sendmail("alice@sender.test", ["bob@example.test"], b"Subject: fwd\r\n\r\nhello\r\n") == {}
    [forwarded] = sink.wait_for(1)
    assert forwarded.rcpt_to == ["carol@far.test"]
    assert forwarded.mail_from.startswith("SRS0=") and forwarded.mail_from.endswith("=sender.test=alice@example.test")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        assert c.sendmail("", [forwarded.mail_from], b"Subject: bounce\r\n\r\nUser unknown\r\n") == {}
        c.mail("")
        code, text = c.rcpt("SRS0=AAAA=AA=sender.test=alice@example.test")
        assert code == 550 and b"5.7.1" in text
    bounce = sink.wait_for(2)[1]
    assert bounce.rcpt_to == ["alice@sender.test"] and bounce.mail_from == ""


def test_a_delivery_failure_of_a_forwarded_copy_is_reported_to_the_original_sender(mailsuite_server: Any, dns: DNSServer, sink: SMTPSink) -> None:  # noqa: F811
    """The queue's DSN for a forwarded copy goes to the sender the SRS address stands for, not to the SRS address."""
    dns.set_records({"far.test": {"MX": [[10, "mx.far.test"]]}, "sender.test": {"MX": [[10, "mx.far.test"]]}, "mx.far.test": {"A": [sink.host]}})
    sink.state.rcpt_replies["carol@far.test"] = collections.deque(["550 5.1.1 No such user"])
    server = mailsuite_server({"queue.resolver": dns.address, "queue.outbound_port": sink.port, "queue.retry_schedule": [0.5],
                               "srs.enabled": True, "srs.secret": SECRET})
    server.cli("alias", "add", "bob@example.test", "carol@far.test")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        assert c.sendmail("alice@sender.test", ["bob@example.test"], b"Subject: fwd\r\n\r\nhello\r\n") == {}
    [dsn] = sink.wait_for(1)
    assert dsn.mail_from == "" and dsn.rcpt_to == ["alice@sender.test"]
    assert b"carol@far.test" in dsn.data
