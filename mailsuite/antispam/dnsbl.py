"""DNS block and allow lists: is a client IP listed in a zone, and why (RFC 5782).

Implementation notes:

* The query name is the client address reversed (IPv4: octets; IPv6:
  nibbles) followed by the zone (RFC 5782 2.1, 2.4).
* An A answer means listed; only answers in 127.0.0.0/24 count by default
  (RFC 5782 2.3 reserves 127.0.0.2 and up for listings; lists answer
  127.255.255.x for errors such as queries through public resolvers), or
  only the zone's configured ``codes``.
* The reason is the zone's TXT record for the same name (RFC 5782 2.1),
  asked only for a listed client.
* Lookups go through the server's one resolver
  (:class:`mailsuite.resolver.CachingResolver`), which caches each answer for
  its TTL and shares concurrent queries: a client that connects ten times
  costs one query per zone.  A failed or slow lookup counts as not listed
  (the lists are advice; DNS trouble must not stop mail) and is logged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.config import DNSListConfig
from mailsuite.resolver import DNSFailure, txt_strings

log = Logger(namespace="mailsuite.antispam")

#: Answers that mean "listed" when a zone names no codes (RFC 5782 2.3).
_LISTED = ipaddress.ip_network("127.0.0.0/24")


@dataclass(frozen=True)
class Listing:
    """A client found in one zone: the zone's settings, the answer and the zone's TXT reason."""

    zone: DNSListConfig
    answer: str
    reason: str = ""

    def describe(self) -> str:
        """``zone (answer): reason``, for replies and log lines."""
        text = f"{self.zone.zone} ({self.answer})"
        return f"{text}: {self.reason}" if self.reason else text


def query_name(ip: str, zone: str) -> str:
    """The name to ask for ``ip`` in ``zone`` (RFC 5782 2.1 and 2.4)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = str(address).split(".")
    else:
        labels = list(address.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone.rstrip(".")


def counts(zone: DNSListConfig, answer: str) -> bool:
    """Whether an A answer of ``zone`` is a listing under its configured codes."""
    if zone.codes:
        return answer in zone.codes
    try:
        return ipaddress.ip_address(answer) in _LISTED
    except ValueError:
        return False


async def lookup(resolver: Any, ip: str, zone: DNSListConfig, timeouts: tuple[float, ...]) -> Listing | None:
    """The listing of ``ip`` in one zone, or None (not listed, or the DNS did not answer)."""
    name = query_name(ip, zone.zone)
    try:
        answer = await resolver.lookup(name, "A", timeouts=timeouts)
    except DNSFailure as e:
        log.info("dnsbl {zone}: no answer for {ip}: {error}; counted as not listed", zone=zone.zone, ip=ip, error=e.text)
        return None
    hits = [a for a in answer.values if counts(zone, a)]
    if not hits:
        return None
    reason = ""
    try:
        texts = await resolver.lookup(name, "TXT", timeouts=timeouts)
        reason = " ".join(t.decode("utf-8", "replace") for t in txt_strings(texts))
    except DNSFailure:
        pass
    return Listing(zone, hits[0], reason.replace("\r", " ").replace("\n", " ")[:200])


async def lookup_all(resolver: Any, ip: str, zones: Sequence[DNSListConfig], timeouts: tuple[float, ...]) -> list[Listing]:
    """Listings of ``ip`` in every zone, asked in parallel, in the zones' order."""
    if not zones:
        return []
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return []  # a UNIX socket or test transport: nothing to ask
    results = await defer.gatherResults([defer.Deferred.fromCoroutine(lookup(resolver, ip, z, timeouts)) for z in zones], consumeErrors=True)
    return [r for r in results if r is not None]
