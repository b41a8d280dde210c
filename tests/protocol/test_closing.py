"""mailsuite.protocol.closing on a StringTransport and task.Clock."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport

from mailsuite.protocol.closing import close_with_grace
from mailsuite.protocol.deadline import Deadline


class _Producer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def test_unregisters_closes_and_sets_the_abort_deadline() -> None:
    clock = task.Clock()
    transport = StringTransport()
    transport.registerProducer(_Producer(), True)
    aborted: list[float] = []
    deadline = Deadline(clock, lambda: aborted.append(clock.seconds()))
    deadline.set(300)  # the command deadline that was running
    close_with_grace(transport, deadline, 10)
    assert transport.producer is None and transport.disconnecting
    clock.advance(10)
    assert aborted == [10]


def test_can_leave_the_producer_alone() -> None:
    """IMAP unregisters only once, when it registered itself."""
    clock = task.Clock()
    transport = StringTransport()
    producer = _Producer()
    transport.registerProducer(producer, True)
    close_with_grace(transport, Deadline(clock, lambda: None), 10, unregister=False)
    assert transport.producer is producer and transport.disconnecting
