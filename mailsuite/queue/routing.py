"""Where mail for a domain goes, and trying those hosts in order.

Why a module of its own: the order of hosts (MX preference, equal-preference
shuffling, implicit MX, null MX, smarthost) is policy with its own tests,
separate from the SMTP conversation in client.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.logger import Logger

from mailsuite.errors import MailError
from mailsuite.interfaces import IResolver
from mailsuite.queue.client import ConnectFailed, ProtocolFailure, RecipientResult, SMTPClientProtocol, Transaction, run_transaction
from mailsuite.resolver import DNSFailure, NoSuchDomain

log = Logger()


class NullMX(MailError):
    """The domain publishes a null MX: it accepts no mail (RFC 7505 4.2 says 556 5.1.10)."""

    code, enhanced, default_text = 556, "5.1.10", "Recipient domain does not accept mail (null MX)"


@dataclass(frozen=True)
class Hop:
    """One host to try: a name (for DNS, TLS and logs) and how to talk to it."""

    host: str
    port: int
    #: "opportunistic", "required", "none" or "implicit" (see client.Transaction.tls).
    tls: str = "opportunistic"
    verify: bool = False
    username: str = ""
    password: str = ""


def _address_literal(domain: str) -> str | None:
    """The IP of an RFC 5321 4.1.3 address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def order_mx(records: list[tuple[int, str]], rng: random.Random) -> list[str]:
    """Hosts by ascending preference, shuffled among equal preferences (RFC 5321 5.1)."""
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        by_pref.setdefault(pref, []).append(host)
    out: list[str] = []
    for pref in sorted(by_pref):
        hosts = by_pref[pref][:]
        rng.shuffle(hosts)
        out += [h for h in hosts if h.lower() not in [o.lower() for o in out]]
    return out


async def mx_hosts(resolver: IResolver, domain: str, rng: random.Random) -> list[str]:
    """The hosts to try for a domain; NullMX, NoSuchDomain or DNSFailure when there are none."""
    literal = _address_literal(domain)
    if literal is not None:
        return [literal]
    records = await resolver.lookup_mx(domain)
    # RFC 7505 3: a single MX of "." means no mail service.
    if any(host in (".", "") for _, host in records):
        if len(records) == 1:
            raise NullMX(f"{domain} publishes a null MX: it accepts no mail")
        records = [(p, h) for p, h in records if h not in (".", "")]
    if not records:
        # RFC 5321 5.1: no MX -> the domain itself is the implicit MX.
        return [domain]
    return order_mx(records, rng)


class HopRunner:
    """Connects to hops in order and runs one transaction on the first that greets us."""

    def __init__(self, reactor: Any, resolver: IResolver, connect_timeout: float, command_timeout: float, tls_options: Callable[[str, bool], Any]) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.tls_options = tls_options

    async def deliver(self, hops: list[Hop], transaction: Transaction, conn_id: str, implicit_mx: bool = False) -> list[RecipientResult]:
        """Results for every recipient of the transaction (temporary ones if no hop worked)."""
        errors: list[str] = []
        tried_any_address = False
        last_code = 451
        for hop in hops:
            try:
                addresses = await self.resolver.lookup_addresses(hop.host)
            except NoSuchDomain as e:
                errors.append(str(e))
                continue
            except DNSFailure as e:
                errors.append(str(e))
                tried_any_address = True
                continue
            if not addresses:
                errors.append(f"{hop.host}: no A/AAAA records")
                continue
            tried_any_address = True
            for address in addresses:
                try:
                    return await self._try(hop, address, transaction, conn_id)
                except ConnectFailed as e:
                    log.info("[{conn}] {host} ({address}) failed: {error}", conn=conn_id, host=hop.host, address=address, error=str(e))
                    errors.append(str(e))
                    if e.code >= 500 and last_code < 500:
                        last_code = 451  # a 5xx greeting is still worth a later retry
        if implicit_mx and not tried_any_address:
            # RFC 5321 5.1: no MX and no address record: the domain cannot get mail.
            return [RecipientResult(a, 550, "5.1.2", f"no MX and no address records for {hops[0].host}", "") for a in transaction.recipients]
        text = "; ".join(errors[-3:]) or "no host to deliver to"
        return [RecipientResult(a, last_code, "4.4.1", text, "") for a in transaction.recipients]

    async def _closed(self, proto: SMTPClientProtocol, grace: float = 5.0) -> None:
        """Wait for the connection to end after QUIT, so a concurrency slot covers the whole connection."""
        if proto.lost_d.called:
            return
        call = self.reactor.callLater(grace, lambda: proto.transport and proto.transport.abortConnection())
        try:
            await proto.lost_d
        finally:
            if call.active():
                call.cancel()

    async def _try(self, hop: Hop, address: str, transaction: Transaction, conn_id: str) -> list[RecipientResult]:
        ip = ipaddress.ip_address(address)
        endpoint_class = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
        endpoint: Any = endpoint_class(self.reactor, address, hop.port, timeout=self.connect_timeout)
        if hop.tls == "implicit":
            endpoint = wrapClientTLS(self.tls_options(hop.host, hop.verify), endpoint)
        proto = SMTPClientProtocol(self.reactor, self.command_timeout, conn_id)
        remote = f"{hop.host}[{address}]:{hop.port}" if hop.port != 25 else f"{hop.host}[{address}]"
        try:
            await connectProtocol(endpoint, proto)
        except Exception as e:  # connection refused, timeout, unreachable, TLS setup
            raise ConnectFailed(f"{remote}: {e}") from None
        log.info("[{conn}] connected to {remote}", conn=conn_id, remote=remote)
        t = dataclasses.replace(transaction, tls=hop.tls, username=hop.username, password=hop.password,
                                tls_options=lambda: self.tls_options(hop.host, hop.verify))
        try:
            results = await run_transaction(proto, t, hop.host)
            await self._closed(proto)
            return results
        except ProtocolFailure as e:
            proto.close()
            if proto.transport is not None:
                proto.transport.abortConnection()
            return [RecipientResult(a, e.code, e.enhanced, f"{remote}: {e}", hop.host) for a in t.recipients]
        except ConnectFailed:
            raise
        except MailError as e:
            proto.close()
            return [RecipientResult(a, e.code, e.enhanced, f"{remote}: {e}", hop.host) for a in t.recipients]
        except defer.CancelledError:
            proto.close()
            raise
