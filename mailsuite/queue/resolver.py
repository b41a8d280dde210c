"""IResolver on twisted.names: MX, A/AAAA and TXT answers for the queue and mail authentication.

Why our own wrapper: callers need plain values and errors with a meaning
(no such domain vs. DNS trouble), and the server address must come from the
configuration (``queue.resolver``), so tests point it at a loopback DNS server.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from twisted.internet import defer
from twisted.names import client, dns, error
from zope.interface import implementer

from mailsuite.errors import MailError
from mailsuite.interfaces import IResolver

#: Seconds per try (twisted.names retries with these timeouts in turn).
TIMEOUTS = (2, 4, 8)
#: CNAME chains longer than this are treated as a DNS failure.
MAX_CNAME_DEPTH = 8
#: Answers are kept for their TTL, at most this many seconds; empty answers (NODATA) for NODATA_TTL.
MAX_CACHE_TTL = 300
NODATA_TTL = 30
MAX_CACHE_ENTRIES = 10000


class NoSuchDomain(MailError):
    """The name does not exist (NXDOMAIN): permanent for mail routing."""

    code, enhanced, default_text = 550, "5.1.2", "Domain not found in DNS"


class DNSFailure(MailError):
    """The DNS did not answer usefully (timeout, SERVFAIL): try again later."""

    code, enhanced, default_text = 451, "4.4.3", "DNS lookup failed"


def parse_server(value: str) -> tuple[str, int]:
    """``host`` or ``host:port`` or ``[v6]:port`` -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, 53


@implementer(IResolver)
class DNSResolver:
    """Asynchronous DNS lookups through one twisted.names client resolver."""

    def __init__(self, reactor: Any, server: str = "", resolv_conf: str = "/etc/resolv.conf") -> None:
        self._reactor = reactor
        # (method, name) -> (expiry, answers): a relay run asks for the same MX/A records for every
        # message to a domain; twisted.names' client.Resolver keeps no cache of its own.
        self._cache: dict[tuple[str, str], tuple[float, list[Any]]] = {}
        if server:
            self._resolver = client.Resolver(servers=[parse_server(server)], reactor=reactor)
        else:
            self._resolver = client.Resolver(resolv=resolv_conf, reactor=reactor)

    async def _query(self, method: str, name: str) -> list[Any]:
        key = (method, name.lower().rstrip("."))
        now = self._reactor.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        answers = await self._ask(method, name)
        ttl = min([MAX_CACHE_TTL] + [rr.ttl for rr in answers]) if answers else NODATA_TTL
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = (now + ttl, answers)
        return answers

    async def _ask(self, method: str, name: str) -> list[Any]:
        try:
            answers, _, _ = await getattr(self._resolver, method)(name, timeout=TIMEOUTS)
        except error.DNSNameError:
            raise NoSuchDomain(f"{name}: no such domain (NXDOMAIN)") from None
        except (error.DNSServerError, error.DNSQueryRefusedError, error.DNSFormatError, error.DNSNotImplementedError) as e:
            raise DNSFailure(f"{name}: DNS server error ({type(e).__name__})") from None
        except (defer.TimeoutError, error.DNSQueryTimeoutError):
            raise DNSFailure(f"{name}: DNS timeout") from None
        return list(answers)

    def lookup_mx(self, domain: str) -> defer.Deferred[list[tuple[int, str]]]:
        """(preference, host) pairs; [] when the domain exists without MX; NoSuchDomain / DNSFailure otherwise.

        A null MX (RFC 7505) comes back as ``[(0, ".")]``.
        """

        async def go() -> list[tuple[int, str]]:
            answers = await self._query("lookupMailExchange", domain)
            out = []
            for rr in answers:
                if rr.type == dns.MX:
                    host = rr.payload.name.name.decode("ascii", "replace").rstrip(".")
                    out.append((rr.payload.preference, host or "."))
            return out

        return defer.Deferred.fromCoroutine(go())

    def lookup_addresses(self, host: str) -> defer.Deferred[list[str]]:
        """IPv4 then IPv6 addresses of a host (CNAMEs followed); an IP literal answers itself."""

        async def go() -> list[str]:
            try:
                return [str(ipaddress.ip_address(host.strip("[]")))]
            except ValueError:
                pass
            v4, v6 = await defer.DeferredList(
                [defer.Deferred.fromCoroutine(self._addresses(host, dns.A)), defer.Deferred.fromCoroutine(self._addresses(host, dns.AAAA))],
                consumeErrors=True,
            )
            found = (v4[1] if v4[0] else []) + (v6[1] if v6[0] else [])
            if found:
                return found
            for ok, result in (v4, v6):
                if not ok:
                    result.raiseException()
            return []

        return defer.Deferred.fromCoroutine(go())

    async def _addresses(self, host: str, rtype: int) -> list[str]:
        method = "lookupAddress" if rtype == dns.A else "lookupIPV6Address"
        name = host
        for _ in range(MAX_CNAME_DEPTH):
            answers = await self._query(method, name)
            found = [rr.payload.dottedQuad() if rtype == dns.A else socket.inet_ntop(socket.AF_INET6, rr.payload.address) for rr in answers if rr.type == rtype]
            if found:
                return [str(ipaddress.ip_address(a)) for a in found]
            cnames = [rr.payload.name.name.decode("ascii", "replace") for rr in answers if rr.type == dns.CNAME]
            if not cnames:
                return []
            name = cnames[0]
        raise DNSFailure(f"{host}: CNAME chain too long")

    def lookup_txt(self, name: str) -> defer.Deferred[list[bytes]]:
        """TXT records of a name, the strings of each record joined (RFC 7208 3.3)."""

        async def go() -> list[bytes]:
            answers = await self._query("lookupText", name)
            out = []
            for rr in answers:
                if rr.type == dns.TXT:
                    out.append(b"".join(s if isinstance(s, bytes) else s.encode() for s in rr.payload.data))
            return out

        return defer.Deferred.fromCoroutine(go())
