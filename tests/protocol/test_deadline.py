"""mailsuite.protocol.deadline on task.Clock."""

from __future__ import annotations

from twisted.internet import task

from mailsuite.protocol.deadline import Deadline


def _deadline() -> tuple[task.Clock, Deadline, list[float]]:
    clock = task.Clock()
    fired: list[float] = []
    return clock, Deadline(clock, lambda: fired.append(clock.seconds())), fired


def test_expires_at_the_deadline_and_once() -> None:
    clock, deadline, fired = _deadline()
    deadline.set(10)
    clock.advance(9.9)
    assert fired == [] and deadline.pending
    clock.advance(0.1)
    assert fired == [10] and not deadline.pending
    clock.advance(100)
    assert fired == [10]


def test_moving_later_schedules_no_new_call_and_still_expires_at_the_new_time() -> None:
    """A later deadline keeps the scheduled call (no heap operation); the early call re-arms for the rest."""
    clock, deadline, fired = _deadline()
    deadline.set(10)
    [call] = clock.getDelayedCalls()
    for _ in range(9):
        clock.advance(1)
        deadline.set(10)
        assert clock.getDelayedCalls() == [call]  # not rescheduled
    for _ in range(41):
        clock.advance(1)
        deadline.set(10)
        assert len(clock.getDelayedCalls()) == 1  # the early call re-armed itself once for the rest
    clock.advance(9.5)
    assert fired == []
    clock.advance(0.5)
    assert fired == [60]


def test_an_earlier_deadline_moves_the_call() -> None:
    clock, deadline, fired = _deadline()
    deadline.set(300)
    deadline.set(5)
    clock.advance(5)
    assert fired == [5]


def test_not_after_caps_the_deadline() -> None:
    """A command line within an SMTP DATA phase must still end with the phase."""
    clock, deadline, fired = _deadline()
    deadline.set(300, not_after=30)
    assert deadline.at == 30
    deadline.set(10, not_after=30)
    assert deadline.at == 10
    clock.advance(10)
    assert fired == [10]


def test_cancel_and_set_again() -> None:
    clock, deadline, fired = _deadline()
    deadline.set(5)
    deadline.cancel()
    assert not deadline.pending and clock.getDelayedCalls() == []
    clock.advance(10)
    assert fired == []
    deadline.set(5)
    clock.advance(5)
    assert fired == [15]
    deadline.cancel()  # after expiry: nothing to do


def test_expired_may_set_the_next_deadline() -> None:
    """The callback may arm the timer again (a busy server: wait for it, then time the client)."""
    clock = task.Clock()
    fired: list[float] = []
    deadline: Deadline

    def expired() -> None:
        fired.append(clock.seconds())
        if len(fired) < 3:
            deadline.set(10)

    deadline = Deadline(clock, expired)
    deadline.set(10)
    clock.advance(10)
    clock.advance(10)
    clock.advance(10)
    clock.advance(10)
    assert fired == [10, 20, 30]
