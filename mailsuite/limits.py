"""Connection caps (total and per client IP) shared by every listener.

A protocol factory is wrapped by :class:`LimitedFactory`; a connection over
the per-IP cap gets the protocol's own refusal line (SMTP ``421 4.7.0``,
POP3 ``-ERR``, IMAP ``* BYE``) and is closed before the real protocol sees it.

Implementation notes:

- The total cap makes room instead of refusing (as Dovecot's login
  processes do): when it is reached, the oldest connection that has not
  logged in hears the same polite line and is closed, and the newcomer is
  served.  Otherwise a few hundred idle connections that never log in, from
  a handful of IPs under the per-IP cap, would lock every real client out.
  Only when every open connection is logged in or busy is the newcomer
  refused.  The per-IP cap stays a hard refusal: making room there would
  let one IP churn through everyone else's slots.
- What "logged in" means is the protocol's call; it says so through
  :func:`mark_logged_in` (IMAP after LOGIN/AUTHENTICATE, POP3 after PASS/AUTH,
  SMTP after AUTH).  Port-25 SMTP has no login: a session is spared while
  :func:`spare_while`'s predicate holds (a mail transaction is open, from MAIL
  to the end of DATA/BDAT LAST or RSET), since dropping it would throw away
  a message on its way in; a greeted session between transactions loses
  nothing by a ``421`` (RFC 5321 3.8: the client retries later) and is
  dropped like any connection waiting for a login.
- "Oldest" is the order of connection, not of last activity, so a client
  cannot keep an idle slot by sending a NOOP now and then.
- The dropped connection's slot is given back at once (the newcomer needs
  it now); the socket closes once the line is sent, or is aborted after
  :data:`EVICT_GRACE` seconds if its peer does not read.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

#: Seconds a dropped connection may take to read its closing line before it is aborted.
EVICT_GRACE = 10.0


class Slot:
    """One open connection's place under the caps."""

    __slots__ = ("ip", "evict", "busy", "released")

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.evict: Callable[[], None] = lambda: None  # says the closing line and hangs up (the slot is already released)
        self.busy: Callable[[], bool] | None = None  # spared while this returns True (see spare_while)
        self.released = False


class ConnectionLimiter:
    """Counts open connections in total and per client IP; makes room for newcomers at the total cap."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open_total = 0
        self.open_by_ip: Counter[str] = Counter()
        #: Open connections that have not logged in, oldest first (dicts keep insertion order).
        self._not_logged_in: dict[Slot, None] = {}

    def acquire(self, ip: str) -> Slot | None:
        """Take a slot for a new connection from ``ip``; None when it must be refused.

        The caller sets the slot's ``evict``, called if the connection is later dropped to make room.
        """
        if self.open_by_ip[ip] >= self.per_ip:
            return None
        if self.open_total >= self.total and not self._make_room():
            return None
        slot = Slot(ip)
        self.open_total += 1
        self.open_by_ip[ip] += 1
        self._not_logged_in[slot] = None
        return slot

    def release(self, slot: Slot) -> None:
        """Give back the slot of a closed (or dropped) connection; a second call does nothing."""
        if slot.released:
            return
        slot.released = True
        self.open_total -= 1
        self.open_by_ip[slot.ip] -= 1
        if self.open_by_ip[slot.ip] <= 0:
            del self.open_by_ip[slot.ip]
        self._not_logged_in.pop(slot, None)

    def logged_in(self, slot: Slot) -> None:
        """The connection has logged in: it is never dropped to make room."""
        self._not_logged_in.pop(slot, None)

    def _make_room(self) -> bool:
        """Drop the oldest connection that has not logged in and is not busy; False if there is none."""
        for slot in self._not_logged_in:
            if slot.busy is None or not slot.busy():
                break
        else:
            return False
        self.release(slot)
        slot.evict()
        return True


def peer_ip(address: IAddress) -> str:
    """The client IP of a transport's peer address ("unix" for other kinds)."""
    return getattr(address, "host", "unix")


def mark_logged_in(transport: Any) -> None:
    """Tell the connection caps that the connection on ``transport`` has logged in.

    From then on it is never dropped to make room for a newcomer.  A
    protocol calls this with its own ``self.transport``; on a transport that
    is not counted (unit tests) it does nothing.
    """
    if isinstance(transport, _CountedConnection) and transport.slot is not None:
        transport.factory.limiter.logged_in(transport.slot)


def spare_while(transport: Any, busy: Callable[[], bool]) -> None:
    """Until it logs in, spare the connection on ``transport`` while ``busy()`` is true.

    For sessions without a login (port-25 SMTP: ``busy`` says whether a mail
    transaction is open).  It is asked only when the total cap is reached.
    """
    if isinstance(transport, _CountedConnection) and transport.slot is not None:
        transport.slot.busy = busy


class _Refusal(Protocol):
    """Says one line and hangs up."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()


class _CountedConnection(ProtocolWrapper):
    """A counted connection: gives its slot back when it closes, and can be dropped to make room."""

    slot: Slot | None = None
    _evicted = False
    _abort_call: Any = None

    def evict(self) -> None:
        """Say the protocol's closing line under the protocol's feet and hang up (called by the limiter)."""
        self._evicted = True
        self.factory.log.info("{listener}: dropped {ip} (oldest connection not logged in) to make room", listener=self.factory.name, ip=self.ip)
        self.transport.write(self.factory.refusal)
        self.transport.loseConnection()
        self._abort_call = self.factory.clock.callLater(EVICT_GRACE, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if not self._evicted:  # a dropped connection's late commands are not run
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: object) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self.slot is not None:
            self.factory.limiter.release(self.slot)
        super().connectionLost(reason)


class LimitedFactory(WrappingFactory):
    """Wraps a protocol factory so connections beyond the caps are refused politely."""

    protocol = _CountedConnection
    log = Logger()
    noisy = False  # no "Starting/Stopping factory" lines: the listeners log their own start

    def __init__(self, wrapped: Factory, limiter: ConnectionLimiter, refusal: bytes, name: str = "", *, clock: Any) -> None:
        super().__init__(wrapped)
        self.limiter = limiter
        self.refusal = refusal
        self.name = name
        self.clock = clock  # IReactorTime: aborts dropped connections that do not read their closing line

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        ip = peer_ip(addr)
        slot = self.limiter.acquire(ip)
        if slot is None:
            self.log.info("{listener}: refused {ip}: connection limit reached", listener=self.name, ip=ip)
            return _Refusal(self.refusal)
        wrapper = super().buildProtocol(addr)
        if wrapper is None:
            self.limiter.release(slot)
            return None
        wrapper.ip = ip
        wrapper.slot = slot
        slot.evict = wrapper.evict
        return wrapper
