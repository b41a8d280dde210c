"""Connection caps (mailsuite.limits): who is dropped to make room at the total cap, who never is."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsuite.limits import EVICT_GRACE, ConnectionLimiter, LimitedFactory, mark_logged_in, spare_while

REFUSAL = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"


def _limiter_with(total: int, per_ip: int, ips: list[str]) -> tuple[ConnectionLimiter, list[object], list[str]]:
    limiter = ConnectionLimiter(total, per_ip)
    dropped: list[str] = []
    slots = []
    for n, ip in enumerate(ips):
        slot = limiter.acquire(ip)
        assert slot is not None
        slot.evict = lambda n=n: dropped.append(f"c{n}")
        slots.append(slot)
    return limiter, slots, dropped


def test_oldest_not_logged_in_is_dropped_at_the_total_cap() -> None:
    """Full: the newcomer gets a slot and the oldest connection that has not logged in is dropped."""
    limiter, slots, dropped = _limiter_with(3, 10, ["1.1.1.1", "2.2.2.2", "3.3.3.3"])
    limiter.logged_in(slots[0])
    assert limiter.acquire("4.4.4.4") is not None
    assert dropped == ["c1"]
    assert limiter.open_total == 3 and "2.2.2.2" not in limiter.open_by_ip
    limiter.release(slots[1])  # its connectionLost comes later: nothing is given back twice
    assert limiter.open_total == 3


def test_busy_sessions_are_spared_until_they_are_idle() -> None:
    """A session whose busy() holds (an SMTP mail transaction) is skipped; once idle it may go."""
    limiter, slots, dropped = _limiter_with(2, 10, ["1.1.1.1", "2.2.2.2"])
    in_transaction = [True]
    slots[0].busy = lambda: in_transaction[0]  # type: ignore[attr-defined]
    assert limiter.acquire("3.3.3.3") is not None
    assert dropped == ["c1"]
    in_transaction[0] = False
    assert limiter.acquire("4.4.4.4") is not None
    assert dropped == ["c1", "c0"]


def test_refused_when_every_connection_is_logged_in_or_busy() -> None:
    """Nothing to drop: the newcomer is refused, as before."""
    limiter, slots, dropped = _limiter_with(2, 10, ["1.1.1.1", "2.2.2.2"])
    limiter.logged_in(slots[0])
    slots[1].busy = lambda: True  # type: ignore[attr-defined]
    assert limiter.acquire("3.3.3.3") is None
    assert dropped == [] and limiter.open_total == 2


def test_per_ip_cap_is_a_hard_refusal() -> None:
    """Over the per-IP cap nothing is dropped, even with idle connections of other IPs at the total cap."""
    limiter, _, dropped = _limiter_with(3, 2, ["1.1.1.1", "1.1.1.1", "2.2.2.2"])
    assert limiter.acquire("1.1.1.1") is None
    assert dropped == []


class _Idle(Protocol):
    lost = False

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def _connect(factory: LimitedFactory, ip: str) -> tuple[Protocol, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
    protocol = factory.buildProtocol(transport.getPeer())
    assert protocol is not None
    protocol.makeConnection(transport)
    return protocol, transport


def test_dropped_connection_hears_the_closing_line_and_is_aborted_if_it_does_not_read() -> None:
    """The wrapper says the protocol's line, closes, ignores late input, aborts after the grace period; logged-in ones stay."""
    clock = Clock()
    factory = LimitedFactory(Factory.forProtocol(_Idle), ConnectionLimiter(2, 10), REFUSAL, "imap", clock=clock)
    first, first_transport = _connect(factory, "1.1.1.1")
    mark_logged_in(first)
    second, second_transport = _connect(factory, "2.2.2.2")
    spare_while(second, lambda: False)
    third, third_transport = _connect(factory, "3.3.3.3")
    assert second_transport.value() == REFUSAL and second_transport.disconnecting
    assert first_transport.value() == b"" and not first_transport.disconnecting
    assert third_transport.value() == b""
    second.dataReceived(b"a LOGIN x y\r\n")  # not passed on: nothing runs for a dropped connection
    assert second.wrappedProtocol.received == b""  # type: ignore[attr-defined]
    assert not second_transport.disconnected
    clock.advance(EVICT_GRACE)
    assert second_transport.disconnected  # aborted: it never read its line
    inner = second.wrappedProtocol  # type: ignore[attr-defined]
    second.connectionLost(None)
    assert inner.lost
    assert factory.limiter.open_total == 2  # the first and the third
