"""Input flow control: stop reading the socket while input piles up that cannot be handled yet.

Implementation notes:

- Every protocol takes input strictly in order: while a command waits (for
  the store, a login) or the client does not read its replies (the
  transport paused us as its producer), received bytes only wait in the
  protocol's buffer.  A client that pipelines without end would grow that
  buffer without end, so past a high-water mark reading from the socket is
  paused (``transport.pauseProducing``), and resumed once the input can be
  handled again or half of it has been.  TCP's own flow control then holds
  the client back.
- The hysteresis (resume at half the mark) keeps a steady pipeliner from
  pausing and resuming the socket at every read.
"""

from __future__ import annotations

from typing import Any


class InputThrottle:
    """Pauses and resumes reading of ``transport`` around ``high_water`` bytes of waiting input."""

    __slots__ = ("_transport", "high_water", "paused")

    def __init__(self, transport: Any, high_water: int) -> None:
        self._transport = transport
        self.high_water = high_water
        #: True while we hold socket reads paused.
        self.paused = False

    def update(self, held: bool, buffered: int) -> None:
        """``held``: input cannot be handled now; ``buffered``: bytes waiting in the protocol's buffer."""
        if held and buffered > self.high_water and not self.paused:
            self.paused = True
            self._transport.pauseProducing()
        elif self.paused and (not held or buffered <= self.high_water // 2):
            self.paused = False
            self._transport.resumeProducing()
