"""One connection timer for a deadline: the client must have done its part by a clock time.

Implementation notes:

- Why deadlines and not inactivity timers: a timer reset by every byte lets
  a client trickling one byte a second hold a connection forever
  (slowloris).  The protocols set a deadline when a wait for the client
  starts (a command line's first byte, the end of the previous command, the
  start of a DATA phase, the connection itself for the login deadline) and
  the client must be done by then.
- A deadline is moved much more often than it expires (each SMTP command
  sets one), and nearly always later.  Moving it later only changes
  :attr:`Deadline.at`: the scheduled call stays where it is and, when it
  fires early, schedules itself again for the rest.  Only an earlier
  deadline reschedules the call (``IDelayedCall.reset``).  So a command
  costs no heap operation of the reactor's timer queue.
- The clock is passed in (the reactor, or ``task.Clock`` in tests).
"""

from __future__ import annotations

from typing import Any, Callable


class Deadline:
    """Calls ``expired()`` once the clock reaches :attr:`at` (unless cancelled or moved first)."""

    __slots__ = ("_clock", "_expired", "_call", "at")

    def __init__(self, clock: Any, expired: Callable[[], None]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: Any = None
        #: The clock time by which the client must have done its part.
        self.at = 0.0

    def set(self, seconds: float, not_after: float | None = None) -> None:
        """The deadline is ``seconds`` from now, or ``not_after`` if that is earlier."""
        now = self._clock.seconds()
        at = now + seconds
        if not_after is not None and not_after < at:
            at = not_after
        self.at = at
        call = self._call
        if call is None or not call.active():
            self._call = self._clock.callLater(at - now, self._fire)
        elif call.getTime() > at:  # an earlier deadline now applies
            call.reset(at - now)

    @property
    def pending(self) -> bool:
        """True while a deadline is set and has not expired or been cancelled."""
        return self._call is not None and self._call.active()

    def cancel(self) -> None:
        """No deadline any more (the connection ended, the login happened)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        remaining = self.at - self._clock.seconds()
        if remaining > 0:  # the deadline moved later since the call was scheduled
            self._call = self._clock.callLater(remaining, self._fire)
            return
        self._expired()
