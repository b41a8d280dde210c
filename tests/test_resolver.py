"""The server's one DNS client against a real loopback DNS server: routing answers, errors, the TTL cache."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

from mailsuite.resolver import CachingResolver, DNSFailure, NoSuchDomain, parse_server, txt_strings
from tests.support.dnsserver import dns  # noqa: F401 - the fixture

ROUTING = {
    "example.test": {"MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]], "A": ["192.0.2.1"], "AAAA": ["2001:db8::1"],
                     "TXT": ["v=spf1 -all", ["part one ", "part two"]]},
    "nullmx.test": {"MX": [[0, "."]]},
    "alias.test": {"CNAME": "example.test"},
    "broken.test": {"SERVFAIL": True},
}


@pytest_twisted.ensureDeferred
async def test_routing_answers(dns):
    """MX pairs, A+AAAA (CNAME followed), TXT strings joined; null MX as '.'; MX of a CNAME is the target's (RFC 5321 5.1)."""
    from twisted.internet import reactor

    dns.set_records(ROUTING)
    r = CachingResolver(reactor, dns.address)
    assert sorted(await r.lookup_mx("example.test")) == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert await r.lookup_mx("nullmx.test") == [(0, ".")]
    assert await r.lookup_addresses("example.test") == ["192.0.2.1", "2001:db8::1"]
    assert await r.lookup_addresses("alias.test") == ["192.0.2.1", "2001:db8::1"]
    assert await r.lookup_addresses("[127.0.0.5]") == ["127.0.0.5"]
    assert await r.lookup_txt("example.test") == [b"v=spf1 -all", b"part one part two"]
    assert sorted(await r.lookup_mx("alias.test")) == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    dns.set_records({**ROUTING, "nomx.test": {"A": ["192.0.2.9"]}})
    assert await r.lookup_mx("nomx.test") == []


@pytest_twisted.ensureDeferred
async def test_nxdomain_and_servfail_are_told_apart(dns):
    """NXDOMAIN is permanent (5.1.2); SERVFAIL is temporary (4.4.3), and not cached."""
    from twisted.internet import reactor

    dns.set_records(ROUTING)
    r = CachingResolver(reactor, dns.address)
    with pytest.raises(NoSuchDomain) as e:
        await r.lookup_mx("missing.test")
    assert e.value.permanent
    with pytest.raises(DNSFailure) as f:
        await r.lookup_mx("broken.test")
    assert not f.value.permanent
    with pytest.raises(NoSuchDomain):
        await r.lookup_addresses("missing.test")
    dns.set_records({**ROUTING, "broken.test": {"MX": [[5, "mx.broken.test"]]}})
    assert await r.lookup_mx("broken.test") == [(5, "mx.broken.test")]


@pytest_twisted.ensureDeferred
async def test_closing_resolver_fails_fast(dns):
    """While the server stops, new lookups fail at once with a temporary error instead of waiting for the DNS."""
    from twisted.internet import reactor

    dns.set_records({"silent.test": {"DROP": True}})
    r = CachingResolver(reactor, dns.address, 30.0)
    r.closing = True
    with pytest.raises(DNSFailure):
        await r.lookup("silent.test", "TXT")
    assert r.queries_sent == 0


def test_server_address_forms():
    """queue.resolver accepts host, host:port and [v6]:port."""
    assert parse_server("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:5353") == ("::1", 5353)
    assert parse_server("::1") == ("::1", 53)


@pytest_twisted.ensureDeferred
async def test_answers_expire_with_their_ttl(dns):
    """TTL 30: the old answer is served until the clock passes 30 s, then the new record is fetched."""
    from twisted.internet import reactor

    dns.set_records({"t.test": {"TXT": ["one"], "TTL": 30}, "mx.test": {"MX": [[10, "in.mx.test"]]}})
    clock = task.Clock()
    resolver = CachingResolver(reactor, dns.address, 2.0, clock=clock)
    first, second = resolver.lookup("t.test", "TXT"), resolver.lookup("T.TEST.", "TXT")
    assert txt_strings(await first) == [b"one"] and txt_strings(await second) == [b"one"]
    assert resolver.queries_sent == 1
    dns.set_records({"t.test": {"TXT": ["two"], "TTL": 30}})
    clock.advance(29)
    assert txt_strings(await resolver.lookup("t.test", "TXT")) == [b"one"]
    clock.advance(2)
    assert txt_strings(await resolver.lookup("t.test", "TXT")) == [b"two"]
    missing = await resolver.lookup("nothing.test", "TXT")
    assert missing.exists is False and missing.values == ()


@pytest_twisted.ensureDeferred
async def test_cname_is_followed_and_mx_parsed(dns):
    """A CNAME to a TXT name answers with the target's records; MX gives (preference, host)."""
    from twisted.internet import reactor

    dns.set_records({"alias.test": {"CNAME": "real.test"}, "real.test": {"TXT": [["v=spf1 ", "-all"]], "MX": [[5, "mx.real.test"]]}})
    resolver = CachingResolver(reactor, dns.address, 2.0)
    assert txt_strings(await resolver.lookup("alias.test", "TXT")) == [b"v=spf1 -all"]
    assert (await resolver.lookup("real.test", "MX")).values == ((5, "mx.real.test"),)
