"""Connection caps (total and per client IP) shared by every listener.

A protocol factory is wrapped by :class:`LimitedFactory`; a connection over a
cap gets the protocol's own refusal line (SMTP ``421 4.7.0``, POP3 ``-ERR``,
IMAP ``* BYE``) and is closed before the real protocol sees it.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory


class ConnectionLimiter:
    """Counts open connections in total and per client IP."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open_total = 0
        self.open_by_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> bool:
        """Take a slot for a new connection; False when a cap is reached."""
        if self.open_total >= self.total or self.open_by_ip[ip] >= self.per_ip:
            return False
        self.open_total += 1
        self.open_by_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """Give back the slot of a closed connection."""
        self.open_total -= 1
        self.open_by_ip[ip] -= 1
        if self.open_by_ip[ip] <= 0:
            del self.open_by_ip[ip]


def peer_ip(address: IAddress) -> str:
    """The client IP of a transport's peer address ("unix" for other kinds)."""
    return getattr(address, "host", "unix")


class _Refusal(Protocol):
    """Says one line and hangs up."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()


class _CountedConnection(ProtocolWrapper):
    def connectionLost(self, reason: object) -> None:
        self.factory.limiter.release(self.ip)
        super().connectionLost(reason)


class LimitedFactory(WrappingFactory):
    """Wraps a protocol factory so connections beyond the caps are refused politely."""

    protocol = _CountedConnection
    log = Logger()
    noisy = False  # no "Starting/Stopping factory" lines: the listeners log their own start

    def __init__(self, wrapped: Factory, limiter: ConnectionLimiter, refusal: bytes, name: str = "") -> None:
        super().__init__(wrapped)
        self.limiter = limiter
        self.refusal = refusal
        self.name = name

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        ip = peer_ip(addr)
        if not self.limiter.acquire(ip):
            self.log.info("{listener}: refused {ip}: connection limit reached", listener=self.name, ip=ip)
            return _Refusal(self.refusal)
        wrapper = super().buildProtocol(addr)
        if wrapper is None:
            self.limiter.release(ip)
            return None
        wrapper.ip = ip
        return wrapper
