"""Asynchronous DNS for mail authentication: twisted.names with a TTL cache.

Why not the shared :class:`~mailsuite.interfaces.IResolver`: SPF needs PTR
answers and every check needs answers cached for their TTL and a clear line
between "no such record" (a result) and "the DNS did not answer" (a temporary
error), which that interface does not carry.  The server address is the same
one the queue uses (config ``queue.resolver``).

Implementation notes:

* Answers are cached under ``(name, type)`` for their smallest TTL (capped at
  :data:`MAX_TTL`); NXDOMAIN and NODATA for :data:`NEGATIVE_TTL`; failures are
  not cached.  Concurrent lookups of one key share one query.
* CNAMEs are followed here (at most :data:`MAX_CNAME_DEPTH`), so callers get
  the final records under the name they asked for.
* The cache clock is injectable (``clock``) so expiry is testable.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns, error

from mailsuite.queue.resolver import parse_server  # the queue.resolver syntax, parsed once for both

#: Longest time an answer is kept, whatever its TTL says (seconds).
MAX_TTL = 3600
#: How long "no such name" / "no such record" is kept (seconds).
NEGATIVE_TTL = 30
#: Longest CNAME chain followed before the lookup counts as failed.
MAX_CNAME_DEPTH = 8
#: Cache entries kept; the oldest go first.
MAX_ENTRIES = 10000

#: Record type names -> (twisted.names method, type code).
_TYPES: dict[str, tuple[str, int]] = {
    "A": ("lookupAddress", dns.A),
    "AAAA": ("lookupIPV6Address", dns.AAAA),
    "MX": ("lookupMailExchange", dns.MX),
    "TXT": ("lookupText", dns.TXT),
    "PTR": ("lookupPointer", dns.PTR),
}


class DNSTempError(Exception):
    """The DNS gave no usable answer (timeout, SERVFAIL, refused): a temporary error, try later."""


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


class CachingResolver:
    """twisted.names lookups returning :class:`Answer`, cached by TTL."""

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

    def lookup(self, name: str, rtype: str) -> defer.Deferred[Answer]:
        """The ``rtype`` records of ``name`` (from the cache while fresh); DNSTempError on failure."""
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
        defer.Deferred.fromCoroutine(self._fetch(*key)).addBoth(self._settle, key)
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

    async def _fetch(self, name: str, rtype: str) -> tuple[float, Answer]:
        method, code = _TYPES[rtype]
        current = name
        for _ in range(MAX_CNAME_DEPTH):
            self.queries_sent += 1
            try:
                answers, _, _ = await getattr(self._resolver, method)(current, timeout=self._timeouts)
            except error.DNSNameError:
                return NEGATIVE_TTL, Answer((), exists=False)
            except (error.DNSServerError, error.DNSQueryRefusedError, error.DNSFormatError,
                    error.DNSNotImplementedError, error.DNSUnknownError) as e:
                raise DNSTempError(f"{current} {rtype}: DNS server error ({type(e).__name__})") from None
            except (defer.TimeoutError, error.DNSQueryTimeoutError):
                raise DNSTempError(f"{current} {rtype}: DNS timeout") from None
            except OSError as e:
                raise DNSTempError(f"{current} {rtype}: {e}") from None
            matching = [rr for rr in answers if rr.type == code]
            if matching:
                ttl = min(rr.ttl for rr in matching)
                return ttl, Answer(tuple(_value(rr, rtype) for rr in matching))
            cnames = [rr for rr in answers if rr.type == dns.CNAME]
            if not cnames:
                return NEGATIVE_TTL, Answer(())
            current = cnames[0].payload.name.name.decode("ascii", "replace")
        raise DNSTempError(f"{name} {rtype}: CNAME chain longer than {MAX_CNAME_DEPTH}")


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
