"""Rate limits: connections, messages and recipients per client IP and per authenticated user.

Implementation notes:

* Each limit is an exact sliding window: the times of the last ``limit``
  events of a key, in a deque of at most ``limit`` entries.  An event is
  allowed while fewer than ``limit`` happened in the last ``window``
  seconds; the answer also says when the oldest one leaves the window.
* Asking (:meth:`Window.allows`) and counting (:meth:`Window.record`) are
  apart, because a recipient or message is counted only once accepted,
  while the question is asked before.
* Keys whose newest event left the window are swept away now and then, so
  memory follows the clients of the last window, not every client ever.
* A limit of 0 is no limit.  All times come from the injected clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from mailsuite.config import RateLimitConfig

MINUTE, HOUR = 60.0, 3600.0
#: Events between two sweeps of idle keys.
SWEEP_EVERY = 1000


class Window:
    """At most ``limit`` events per ``window`` seconds for each key."""

    def __init__(self, clock: Any, limit: int, window: float) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._until_sweep = SWEEP_EVERY

    def _recent(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        cutoff = now - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def allows(self, key: str) -> float:
        """0 when one more event is allowed now, else the seconds until one is."""
        if not self.limit:
            return 0.0
        now = self.clock.seconds()
        events = self._recent(key, now)
        if events is None or len(events) < self.limit:
            return 0.0
        return max(events[0] + self.window - now, 0.001)

    def record(self, key: str, count: int = 1) -> None:
        """Count ``count`` events of ``key`` now."""
        if not self.limit:
            return
        now = self.clock.seconds()
        events = self._recent(key, now)
        if events is None:
            events = self._events[key] = deque(maxlen=self.limit)
        for _ in range(count):
            events.append(now)
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.sweep()

    def count(self, key: str) -> int:
        """Events of ``key`` in the current window."""
        events = self._recent(key, self.clock.seconds())
        return 0 if events is None else len(events)

    def sweep(self) -> None:
        """Forget keys with no event in the current window."""
        self._until_sweep = SWEEP_EVERY
        now = self.clock.seconds()
        for key in list(self._events):
            self._recent(key, now)

    def __len__(self) -> int:
        return len(self._events)


class RateLimits:
    """The five windows of ``[antispam.ratelimit]``; the policy asks and counts through them."""

    def __init__(self, clock: Any, config: RateLimitConfig) -> None:
        self.config = config
        self.ip_connections = Window(clock, config.ip_connections_per_minute, MINUTE)
        self.ip_messages = Window(clock, config.ip_messages_per_minute, MINUTE)
        self.ip_recipients = Window(clock, config.ip_recipients_per_minute, MINUTE)
        self.user_messages = Window(clock, config.user_messages_per_hour, HOUR)
        self.user_recipients = Window(clock, config.user_recipients_per_hour, HOUR)

    def connection(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; the reason when it is one too many (then not counted)."""
        if self.ip_connections.allows(ip):
            return f"more than {self.ip_connections.limit} connections per minute from {ip}"
        self.ip_connections.record(ip)
        return None

    def recipient(self, ip: str, user: str | None, first: bool) -> str | None:
        """Why one more recipient (``first``: of a new message) may not be taken now, or None.

        An authenticated session is held to its user's hourly limits; any
        other to its IP's per-minute limits.
        """
        if user is not None:
            if first and self.user_messages.allows(user):
                return f"more than {self.user_messages.limit} messages per hour from {user}"
            if self.user_recipients.allows(user):
                return f"more than {self.user_recipients.limit} recipients per hour from {user}"
            return None
        if first and self.ip_messages.allows(ip):
            return f"more than {self.ip_messages.limit} messages per minute from {ip}"
        if self.ip_recipients.allows(ip):
            return f"more than {self.ip_recipients.limit} recipients per minute from {ip}"
        return None

    def count_recipient(self, ip: str, user: str | None) -> None:
        """Count an accepted recipient."""
        if user is not None:
            self.user_recipients.record(user)
        else:
            self.ip_recipients.record(ip)

    def count_message(self, ip: str, user: str | None) -> None:
        """Count a complete message."""
        if user is not None:
            self.user_messages.record(user)
        else:
            self.ip_messages.record(ip)
