"""Greylisting (RFC 6647): a first attempt from an unknown triplet is refused for a while.

A triplet is (client network, envelope sender, recipient).  Real MTAs retry
after a 4xx (RFC 5321 4.5.4.1); most spam software does not.

Implementation notes:

* The client address counts by network, IPv4 /24 and IPv6 /64 by default
  (RFC 6647 4.1: pools of outbound servers retry from a neighbour address).
* A new triplet is refused with ``451 4.7.1`` until ``delay`` seconds after
  its first attempt (RFC 6647 2.1, 4.2); a retry after that is accepted and
  the triplet remembered for ``expire`` seconds after its last use.  A
  refused triplet not retried within ``retry_window`` starts over.
* A client network that has passed with ``auto_allow`` distinct triplets is
  accepted at once from then on (RFC 6647 4.6 recommends allowing clients
  that have proven they retry).
* State lives in memory for answers without a thread hop, and in SQLite
  (``<data_root>/antispam/greylist.sqlite3``, WAL) for restarts.  Changes
  are written by :class:`Journal` off the reactor thread, coalesced: while
  one write runs, later changes gather and go in the next transaction.  A
  crash loses at most the changes of that moment, and a lost greylist
  change only costs one more 451 (the sender retries), never mail.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.config import GreylistConfig

log = Logger(namespace="mailsuite.antispam")

#: Seconds between sweeps of expired records.
SWEEP_INTERVAL = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triplets (key TEXT PRIMARY KEY, first REAL NOT NULL, last REAL NOT NULL, passed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clients (network TEXT PRIMARY KEY, passes INTEGER NOT NULL, last REAL NOT NULL);
"""


@dataclass
class Triplet:
    """One triplet's state: first attempt, last use, and whether a retry was accepted."""

    first: float
    last: float
    passed: bool = False


@dataclass
class Client:
    """A client network: how many triplets it passed, and when last seen."""

    passes: int
    last: float


def network_of(ip: str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The network a client address counts under (RFC 6647 4.1)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = v4_prefix if address.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Journal:
    """The SQLite file behind a greylist; loaded once at start, then written by one worker.

    ``run(f)`` runs ``f`` where blocking is allowed and returns a Deferred
    (a one-thread pool in the server; inline in unit tests).
    """

    def __init__(self, path: Path, run: Callable[[Callable[[], Any]], defer.Deferred[Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._run = run
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._triplets: dict[str, Triplet | None] = {}
        self._clients: dict[str, Client | None] = {}
        self._writing = False
        self._idle: list[defer.Deferred[None]] = []

    def load(self) -> tuple[dict[str, Triplet], dict[str, Client]]:
        """Everything stored (called once at start, before the reactor runs)."""
        triplets = {k: Triplet(f, la, bool(p)) for k, f, la, p in self._db.execute("SELECT key, first, last, passed FROM triplets")}
        clients = {n: Client(p, la) for n, p, la in self._db.execute("SELECT network, passes, last FROM clients")}
        return triplets, clients

    def triplet(self, key: str, value: Triplet | None) -> None:
        """Remember a triplet's new state (None: forget it)."""
        self._triplets[key] = None if value is None else Triplet(value.first, value.last, value.passed)
        self._kick()

    def client(self, network: str, value: Client | None) -> None:
        """Remember a client's new state (None: forget it)."""
        self._clients[network] = None if value is None else Client(value.passes, value.last)
        self._kick()

    def _kick(self) -> None:
        if self._writing or not (self._triplets or self._clients):
            return
        triplets, self._triplets = self._triplets, {}
        clients, self._clients = self._clients, {}
        self._writing = True
        self._run(lambda: self._write(triplets, clients)).addErrback(self._failed).addBoth(self._written)

    def _write(self, triplets: dict[str, Triplet | None], clients: dict[str, Client | None]) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            for key, t in triplets.items():
                if t is None:
                    db.execute("DELETE FROM triplets WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?)", (key, t.first, t.last, int(t.passed)))
            for network, c in clients.items():
                if c is None:
                    db.execute("DELETE FROM clients WHERE network = ?", (network,))
                else:
                    db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?, ?)", (network, c.passes, c.last))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _failed(self, failure: Any) -> None:
        log.failure("greylist: cannot write {path}; the state in memory is still used", failure, path=str(self.path))

    def _written(self, _: Any) -> None:
        self._writing = False
        self._kick()
        if not self._writing:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def flushed(self) -> defer.Deferred[None]:
        """Fires once every change so far is written."""
        if not self._writing:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def close(self) -> None:
        """Close the database (after :meth:`flushed`)."""
        self._db.close()


class Greylist:
    """The greylisting state machine; all times from ``clock``."""

    def __init__(self, clock: Any, config: GreylistConfig, journal: Journal | None = None) -> None:
        self.clock = clock
        self.config = config
        self.journal = journal
        self.triplets: dict[str, Triplet] = {}
        self.clients: dict[str, Client] = {}
        if journal is not None:
            self.triplets, self.clients = journal.load()

    def key(self, ip: str, sender: str, recipient: str) -> tuple[str, str]:
        """(client network, triplet key) for one attempt; addresses compared without case."""
        network = network_of(ip, self.config.ipv4_prefix, self.config.ipv6_prefix)
        return network, f"{network}|{sender.lower()}|{recipient.lower()}"

    def check(self, ip: str, sender: str, recipient: str) -> float:
        """0 when this attempt is accepted, else the seconds left before a retry will be."""
        now = self.clock.seconds()
        network, key = self.key(ip, sender, recipient)
        expire = self.config.expire
        client = self.clients.get(network)
        if client is not None and now - client.last > expire:
            client = None
            self._set_client(network, None)
        if client is not None and self.config.auto_allow and client.passes >= self.config.auto_allow:
            client.last = now
            self._set_client(network, client)
            return 0.0
        triplet = self.triplets.get(key)
        if triplet is not None:
            if triplet.passed and now - triplet.last > expire:
                triplet = None
            elif not triplet.passed and now - triplet.first > self.config.retry_window:
                triplet = None
        if triplet is None:
            if self.config.delay <= 0:
                self._pass(network, key, Triplet(now, now))
                return 0.0
            self._set_triplet(key, Triplet(now, now))
            return self.config.delay
        if triplet.passed:
            triplet.last = now
            self._set_triplet(key, triplet)
            return 0.0
        waited = now - triplet.first
        if waited >= self.config.delay:
            self._pass(network, key, triplet)
            return 0.0
        triplet.last = now
        self._set_triplet(key, triplet)
        return self.config.delay - waited

    def _pass(self, network: str, key: str, triplet: Triplet) -> None:
        now = self.clock.seconds()
        triplet.passed, triplet.last = True, now
        self._set_triplet(key, triplet)
        client = self.clients.get(network) or Client(0, now)
        client.passes += 1
        client.last = now
        self._set_client(network, client)

    def _set_triplet(self, key: str, value: Triplet | None) -> None:
        if value is None:
            self.triplets.pop(key, None)
        else:
            self.triplets[key] = value
        if self.journal is not None:
            self.journal.triplet(key, value)

    def _set_client(self, network: str, value: Client | None) -> None:
        if value is None:
            self.clients.pop(network, None)
        else:
            self.clients[network] = value
        if self.journal is not None:
            self.journal.client(network, value)

    def sweep(self) -> int:
        """Forget expired triplets and clients; the number forgotten."""
        now = self.clock.seconds()
        gone = [k for k, t in self.triplets.items()
                if (now - t.last > self.config.expire if t.passed else now - t.first > self.config.retry_window)]
        for key in gone:
            self._set_triplet(key, None)
        old = [n for n, c in self.clients.items() if now - c.last > self.config.expire]
        for network in old:
            self._set_client(network, None)
        return len(gone) + len(old)
