"""The twisted.names resolver against the real loopback DNS server."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailsuite.queue.resolver import DNSFailure, DNSResolver, NoSuchDomain, parse_server

RECORDS = {
    "example.test": {"MX": [[10, "mx1.example.test"], [20, "mx2.example.test"]], "A": ["192.0.2.1"], "AAAA": ["2001:db8::1"],
                     "TXT": ["v=spf1 -all", ["part one ", "part two"]]},
    "nullmx.test": {"MX": [[0, "."]]},
    "alias.test": {"CNAME": "example.test"},
    "broken.test": {"SERVFAIL": True},
}


@pytest_twisted.ensureDeferred
async def test_answers_from_the_dns_server(dns):
    """MX pairs, A+AAAA (CNAME followed), TXT strings joined; null MX as '.'."""
    from twisted.internet import reactor

    dns.set_records(RECORDS)
    r = DNSResolver(reactor, dns.address)
    assert sorted(await r.lookup_mx("example.test")) == [(10, "mx1.example.test"), (20, "mx2.example.test")]
    assert await r.lookup_mx("nullmx.test") == [(0, ".")]
    assert await r.lookup_addresses("example.test") == ["192.0.2.1", "2001:db8::1"]
    assert await r.lookup_addresses("alias.test") == ["192.0.2.1", "2001:db8::1"]
    assert await r.lookup_addresses("[127.0.0.5]") == ["127.0.0.5"]
    assert await r.lookup_txt("example.test") == [b"v=spf1 -all", b"part one part two"]
    assert await r.lookup_mx("alias.test") == []


@pytest_twisted.ensureDeferred
async def test_nxdomain_and_servfail_are_told_apart(dns):
    """NXDOMAIN is permanent (5.1.2); SERVFAIL is temporary (4.4.3)."""
    from twisted.internet import reactor

    dns.set_records(RECORDS)
    r = DNSResolver(reactor, dns.address)
    with pytest.raises(NoSuchDomain) as e:
        await r.lookup_mx("missing.test")
    assert e.value.permanent
    with pytest.raises(DNSFailure) as f:
        await r.lookup_mx("broken.test")
    assert not f.value.permanent


def test_server_address_forms():
    """queue.resolver accepts host, host:port and [v6]:port."""
    assert parse_server("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:5353") == ("::1", 5353)
    assert parse_server("::1") == ("::1", 53)
