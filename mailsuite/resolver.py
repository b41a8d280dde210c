"""The server's one DNS client: twisted.names with a TTL cache, for the queue and mail authentication.

One resolver serves both so a domain's answers are asked once and cached once
(a relay run asks for the same MX/A records for every message to a domain;
SPF, DKIM and DMARC ask for TXT and PTR).  Callers get plain values and errors
with a meaning: :class:`NoSuchDomain` (NXDOMAIN, permanent for routing) and
:class:`DNSFailure` (timeout, SERVFAIL: try again later).  The server address
comes from the configuration (``queue.resolver``), so tests point it at a
loopback DNS server.

Two views of the same cache:

* :meth:`CachingResolver.lookup` answers any supported type as an
  :class:`Answer` (``exists`` False on NXDOMAIN): mail authentication needs
  "no such record" as a result.
* ``lookup_mx`` / ``lookup_addresses`` / ``lookup_txt`` implement
  :class:`~mailsuite.interfaces.IResolver` for routing.

Implementation notes:

* Answers are cached under ``(name, type)`` for their smallest TTL (capped at
  :data:`MAX_TTL`); NXDOMAIN and NODATA for :data:`NEGATIVE_TTL`; failures are
  not cached.  Concurrent lookups of one key share one query.
* CNAMEs are followed here (at most :data:`MAX_CNAME_DEPTH`), so callers get
  the final records under the name they asked for.
* The cache clock is injectable (``clock``) so expiry is testable.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns, error

from zope.interface import implementer

from mailsuite.errors import MailError
from mailsuite.interfaces import IResolver

#: Longest time an answer is kept, whatever its TTL says (seconds).
MAX_TTL = 3600
#: How long "no such name" / "no such record" is kept (seconds).
NEGATIVE_TTL = 30
#: Longest CNAME chain followed before the lookup counts as failed.
MAX_CNAME_DEPTH = 8
#: Cache entries kept; the oldest go first.
MAX_ENTRIES = 10000

#: Seconds per try for routing lookups (twisted.names retries with these timeouts in turn).
ROUTING_TIMEOUTS = (2.0, 4.0, 8.0)

#: Record type names -> (twisted.names method, type code).
_TYPES: dict[str, tuple[str, int]] = {
    "A": ("lookupAddress", dns.A),
    "AAAA": ("lookupIPV6Address", dns.AAAA),
    "MX": ("lookupMailExchange", dns.MX),
    "TXT": ("lookupText", dns.TXT),
    "PTR": ("lookupPointer", dns.PTR),
}


class NoSuchDomain(MailError):
    """The name does not exist (NXDOMAIN): permanent for mail routing."""

    code, enhanced, default_text = 550, "5.1.2", "Domain not found in DNS"


class DNSFailure(MailError):
    """The DNS gave no usable answer (timeout, SERVFAIL, refused): a temporary error, try later."""

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


@dataclass(frozen=True)
class Answer:
    """The records of one name and type.

    ``values`` holds one item per record: an address string for A/AAAA, a
    host name for PTR, ``(preference, host)`` for MX and the tuple of
    character strings (bytes) for TXT.  ``exists`` is False on NXDOMAIN.
    """

    values: tuple[Any, ...]
    exists: bool = True


def txt_strings(answer: Answer) -> list[bytes]:
    """TXT records with their character strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    return [b"".join(parts) for parts in answer.values]


@implementer(IResolver)
class CachingResolver:
    """twisted.names lookups, cached by TTL, shared by everything that asks the DNS."""

    log = Logger()

    def __init__(self, reactor: Any, server: str = "", timeout: float = 5.0, *, clock: Any = None,
                 resolv_conf: str = "/etc/resolv.conf") -> None:
        # Two tries per query, together lasting ``timeout`` seconds.
        self._timeouts = (timeout / 3.0, timeout * 2.0 / 3.0)
        if server:
            self._resolver = client.Resolver(servers=[parse_server(server)], reactor=reactor)
        else:
            self._resolver = client.Resolver(resolv=resolv_conf, reactor=reactor)
        self._clock = clock if clock is not None else reactor
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self._pending: dict[tuple[str, str], list[defer.Deferred[Answer]]] = {}
        #: Queries sent to the server (not answered from the cache); for tests and stats.
        self.queries_sent = 0
        #: Set while the server stops: new lookups fail at once instead of waiting for the DNS.
        self.closing = False

    def lookup(self, name: str, rtype: str, *, timeouts: tuple[float, ...] | None = None) -> defer.Deferred[Answer]:
        """The ``rtype`` records of ``name`` (from the cache while fresh); DNSFailure on failure.

        ``timeouts``: seconds per try, for a query this call starts (default:
        the resolver's, two tries lasting its ``timeout``).
        """
        if self.closing:
            return defer.fail(DNSFailure("server shutting down"))
        key = (name.rstrip(".").lower(), rtype)
        if rtype not in _TYPES:
            return defer.fail(ValueError(f"unsupported record type {rtype}"))
        if not _valid_name(key[0]):
            return defer.succeed(Answer((), exists=False))  # cannot exist in DNS (RFC 1035 2.3.4)
        cached = self._cache.get(key)
        now = self._clock.seconds()
        if cached is not None:
            if cached[0] > now:
                return defer.succeed(cached[1])
            del self._cache[key]
        waiter: defer.Deferred[Answer] = defer.Deferred()
        if key in self._pending:
            self._pending[key].append(waiter)
            return waiter
        self._pending[key] = [waiter]
        defer.Deferred.fromCoroutine(self._fetch(*key, timeouts or self._timeouts)).addBoth(self._settle, key)
        return waiter

    def _settle(self, result: Any, key: tuple[str, str]) -> None:
        waiters = self._pending.pop(key, [])
        if isinstance(result, tuple):
            ttl, answer = result
            self._store(key, ttl, answer)
            for w in waiters:
                w.callback(answer)
        else:
            for w in waiters:
                w.errback(result)

    def _store(self, key: tuple[str, str], ttl: float, answer: Answer) -> None:
        if ttl <= 0:
            return
        self._cache[key] = (self._clock.seconds() + min(ttl, MAX_TTL), answer)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)

    async def _fetch(self, name: str, rtype: str, timeouts: tuple[float, ...]) -> tuple[float, Answer]:
        method, code = _TYPES[rtype]
        current = name
        for _ in range(MAX_CNAME_DEPTH):
            self.queries_sent += 1
            try:
                answers, _, _ = await getattr(self._resolver, method)(current, timeout=timeouts)
            except error.DNSNameError:
                return NEGATIVE_TTL, Answer((), exists=False)
            except (error.DNSServerError, error.DNSQueryRefusedError, error.DNSFormatError,
                    error.DNSNotImplementedError, error.DNSUnknownError) as e:
                raise DNSFailure(f"{current} {rtype}: DNS server error ({type(e).__name__})") from None
            except (defer.TimeoutError, error.DNSQueryTimeoutError):
                raise DNSFailure(f"{current} {rtype}: DNS timeout") from None
            except OSError as e:
                raise DNSFailure(f"{current} {rtype}: {e}") from None
            matching = [rr for rr in answers if rr.type == code]
            if matching:
                ttl = min(rr.ttl for rr in matching)
                return ttl, Answer(tuple(_value(rr, rtype) for rr in matching))
            cnames = [rr for rr in answers if rr.type == dns.CNAME]
            if not cnames:
                return NEGATIVE_TTL, Answer(())
            current = cnames[0].payload.name.name.decode("ascii", "replace")
        raise DNSFailure(f"{name} {rtype}: CNAME chain longer than {MAX_CNAME_DEPTH}")

    # -- IResolver: routing lookups ------------------------------------------------
    async def _routing(self, name: str, rtype: str) -> Answer:
        answer = await self.lookup(name, rtype, timeouts=ROUTING_TIMEOUTS)
        if not answer.exists:
            raise NoSuchDomain(f"{name}: no such domain (NXDOMAIN)")
        return answer

    def lookup_mx(self, domain: str) -> defer.Deferred[list[tuple[int, str]]]:
        """(preference, host) pairs; [] when the domain exists without MX; NoSuchDomain / DNSFailure otherwise.

        A null MX (RFC 7505) comes back as ``[(0, ".")]``.
        """

        async def go() -> list[tuple[int, str]]:
            answer = await self._routing(domain, "MX")
            return [(preference, host or ".") for preference, host in answer.values]

        return defer.Deferred.fromCoroutine(go())

    def lookup_addresses(self, host: str) -> defer.Deferred[list[str]]:
        """IPv4 then IPv6 addresses of a host (CNAMEs followed); an IP literal answers itself."""

        async def go() -> list[str]:
            try:
                return [str(ipaddress.ip_address(host.strip("[]")))]
            except ValueError:
                pass
            v4, v6 = await defer.DeferredList(
                [defer.Deferred.fromCoroutine(self._routing(host, "A")), defer.Deferred.fromCoroutine(self._routing(host, "AAAA"))],
                consumeErrors=True,
            )
            found = [str(ipaddress.ip_address(a)) for ok, answer in (v4, v6) if ok for a in answer.values]
            if found:
                return found
            for ok, result in (v4, v6):
                if not ok:
                    result.raiseException()
            return []

        return defer.Deferred.fromCoroutine(go())

    def lookup_txt(self, name: str) -> defer.Deferred[list[bytes]]:
        """TXT records of a name, the strings of each record joined (RFC 7208 3.3)."""

        async def go() -> list[bytes]:
            return txt_strings(await self._routing(name, "TXT"))

        return defer.Deferred.fromCoroutine(go())


def open_resolver(context: Any) -> None:
    """Set ``context.resolver``: the one DNS client of the server (``queue.resolver`` or resolv.conf)."""
    config = context.config
    context.resolver = CachingResolver(context.reactor, config.queue.resolver, config.mailauth.dns_timeout)


def _valid_name(name: str) -> bool:
    """Only ASCII names with 1-63 octet labels and 253 octets in all can be asked for."""
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(0 < len(label) < 64 and not any(c.isspace() for c in label) for label in name.split("."))


def _value(rr: Any, rtype: str) -> Any:
    payload = rr.payload
    if rtype == "A":
        return payload.dottedQuad()
    if rtype == "AAAA":
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    if rtype == "MX":
        return (payload.preference, payload.name.name.decode("ascii", "replace").rstrip("."))
    if rtype == "PTR":
        return payload.name.name.decode("ascii", "replace").rstrip(".")
    return tuple(s if isinstance(s, bytes) else s.encode() for s in payload.data)
