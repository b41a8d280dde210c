"""DNSBL query names and answers, HELO sanity, the pregreet pass memory."""

from __future__ import annotations

import pytest
from twisted.internet import task

from mailsuite.antispam.checks import PassCache, helo_problems, reverse_pointer
from mailsuite.antispam.dnsbl import counts, query_name
from mailsuite.config import DNSListConfig


def test_query_names_reverse_the_address() -> None:
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.99", "bl.test.") == "99.2.0.192.bl.test"
    assert query_name("2001:db8::1", "bl.test") == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    assert reverse_pointer("192.0.2.99") == "99.2.0.192.in-addr.arpa"


def test_answers_count_in_127_0_0_slash_24_or_the_zone_codes() -> None:
    zone = DNSListConfig(zone="bl.test")
    assert counts(zone, "127.0.0.2")
    assert not counts(zone, "127.255.255.254")  # the list's "you query through a public resolver" error
    only = DNSListConfig(zone="bl.test", codes=["127.0.0.4"])
    assert counts(only, "127.0.0.4") and not counts(only, "127.0.0.2")


@pytest.mark.parametrize(("helo", "bad"), [
    ("mx.example.org", False),
    ("[192.0.2.1]", False),
    ("[192.0.2.2]", True),
    ("192.0.2.1", True),
    ("localhost", True),
    ("mail.example.test", True),  # our own name
    ("example.test", True),  # one of our domains
    ("[not-an-ip]", True),
])
def test_helo_sanity(helo: str, bad: bool) -> None:
    assert bool(helo_problems(helo, "192.0.2.1", ["mail.example.test", "example.test"])) is bad


def test_pregreet_passes_are_remembered_for_their_ttl() -> None:
    clock = task.Clock()
    cache = PassCache(clock, 100.0, size=2)
    cache.remember("a")
    assert cache.passed("a") and not cache.passed("b")
    clock.advance(101)
    assert not cache.passed("a")
    for ip in ("a", "b", "c"):
        cache.remember(ip)
    assert not cache.passed("a") and cache.passed("c")  # the oldest went first
