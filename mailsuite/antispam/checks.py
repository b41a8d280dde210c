"""Checks of the client itself: pregreet (who talks first), FCrDNS and HELO sanity.

Implementation notes:

* Pregreet (as Postfix's postscreen): on port 25 the greeting waits a short
  while; RFC 5321 3.1 says the client waits for the 220 before it sends
  anything, so bytes that arrive first come from a bot speaking blind.  The
  SMTP server does the waiting (it already buffers input while busy); here
  is the memory of clients that waited politely (:class:`PassCache`), so a
  good client is delayed once per ``pass_ttl``, not on every connection.
* FCrDNS (forward-confirmed reverse DNS, RFC 8601 2.7.3 "iprev"): the
  client's PTR names are looked up and one of them must resolve back to the
  client address.  A DNS failure is "unknown", never a fail.
* HELO sanity (RFC 5321 4.1.1.1, 4.1.3): the name must be a fully qualified
  domain or an address literal; a bare IP, a literal that is not the
  client's address, or our own host name or domain from a stranger are the
  classic bot tells.  Each is a reason; the policy adds one weight for any.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, Iterable

from twisted.internet import defer

from mailsuite.resolver import DNSFailure

#: PTR names tried for FCrDNS (RFC 8601 2.7.3 allows a limit; mail servers use a few).
MAX_PTR_NAMES = 5
#: Clients remembered as having passed the pregreet test.
MAX_PASSES = 100_000


class PassCache:
    """IPs that waited for the greeting, each remembered for ``ttl`` seconds (oldest dropped first)."""

    def __init__(self, clock: Any, ttl: float, size: int = MAX_PASSES) -> None:
        self.clock = clock
        self.ttl = ttl
        self.size = size
        self._passed: OrderedDict[str, float] = OrderedDict()

    def passed(self, ip: str) -> bool:
        """True while ``ip`` is remembered as a client that waited."""
        until = self._passed.get(ip)
        if until is None:
            return False
        if until <= self.clock.seconds():
            del self._passed[ip]
            return False
        return True

    def remember(self, ip: str) -> None:
        """Record that ``ip`` waited for the greeting."""
        if self.ttl <= 0:
            return
        self._passed[ip] = self.clock.seconds() + self.ttl
        self._passed.move_to_end(ip)
        while len(self._passed) > self.size:
            self._passed.popitem(last=False)


def reverse_pointer(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (RFC 1035 3.5, RFC 3596 2.5)."""
    return ipaddress.ip_address(ip).reverse_pointer


async def fcrdns(resolver: Any, ip: str, timeouts: tuple[float, ...]) -> tuple[bool | None, str]:
    """(True, name) when a PTR name resolves back to ``ip``; (False, why) when none does; (None, why) on DNS failure."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None, "not an IP client"
    try:
        ptr = await resolver.lookup(reverse_pointer(ip), "PTR", timeouts=timeouts)
    except DNSFailure as e:
        return None, f"PTR lookup failed: {e.text}"
    names = [n for n in ptr.values if n][:MAX_PTR_NAMES]
    if not names:
        return False, "no PTR record"
    rtype = "A" if address.version == 4 else "AAAA"
    answers = await defer.DeferredList([resolver.lookup(n, rtype, timeouts=timeouts) for n in names], consumeErrors=True)
    failed = False
    for name, (ok, answer) in zip(names, answers):
        if not ok:
            failed = True
            continue
        if any(_same_ip(a, address) for a in answer.values):
            return True, name
    if failed:
        return None, "forward lookup failed"
    return False, f"{names[0]} does not resolve to {ip}"


def _same_ip(value: str, address: Any) -> bool:
    try:
        return ipaddress.ip_address(value) == address
    except ValueError:
        return False


def helo_problems(helo: str, ip: str, own_names: Iterable[str]) -> list[str]:
    """What is wrong with a client's HELO/EHLO name; [] when it looks sane."""
    name = helo.strip().rstrip(".").lower()
    if not name:
        return ["empty HELO"]
    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        if literal.startswith("ipv6:"):
            literal = literal[5:]
        try:
            claimed = ipaddress.ip_address(literal)
        except ValueError:
            return [f"HELO {helo} is not a valid address literal"]
        if not _same_ip(ip, claimed):
            return [f"HELO {helo} is not the client's address"]
        return []
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return [f"HELO {helo} is a bare IP address (RFC 5321 4.1.3 wants [brackets])"]
    problems = []
    if "." not in name:
        problems.append(f"HELO {helo} is not a fully qualified domain name")
    if name in {n.lower() for n in own_names}:
        problems.append(f"HELO {helo} claims to be this server")
    return problems
