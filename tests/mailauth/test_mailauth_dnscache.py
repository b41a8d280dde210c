"""The DNS cache keeps answers for their TTL and shares concurrent lookups (real DNS server, fake clock)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import task

from mailsuite.mailauth.dnscache import CachingResolver, txt_strings


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
