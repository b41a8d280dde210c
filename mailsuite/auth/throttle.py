"""Slowing down password guessing: growing delays, then a block.

Implementation notes:

- Failures are counted per client IP and per account (user name as typed,
  lower-cased).  After ``free_failures`` failures a failed attempt is
  answered only after a delay that doubles with each further failure (0.5 s,
  1 s, 2 s ... capped at ``max_delay``).
- After ``max_failures`` failures from one IP, that IP is refused outright
  for ``block_seconds``.  Accounts are only delayed, never blocked: a block
  per account would let anyone lock a user out by guessing wrong on purpose.
- A failure is forgotten ``block_seconds`` after the last one; a successful
  login clears the account's count and the IP's.
- Time comes from the clock passed in (the reactor, or task.Clock in tests);
  the table is pruned so a scan from many addresses cannot grow it forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from mailsuite.interfaces import ILoginThrottle

#: Delay after the first failure beyond the free ones, seconds.
BASE_DELAY = 0.5
#: Entries kept before expired ones are pruned.
PRUNE_ABOVE = 10_000


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@implementer(ILoginThrottle)
class LoginThrottle:
    """The ILoginThrottle used by every protocol (see the module notes)."""

    def __init__(self, clock: Any, *, free_failures: int = 3, max_failures: int = 10, max_delay: float = 8.0, block_seconds: float = 900.0) -> None:
        self.clock = clock
        self.free_failures = free_failures
        self.max_failures = max_failures
        self.max_delay = max_delay
        self.block_seconds = block_seconds
        self._records: dict[tuple[str, str], _Record] = {}

    @classmethod
    def from_config(cls, auth: Any, clock: Any) -> "LoginThrottle":
        """A throttle with the ``[auth]`` settings."""
        return cls(clock, free_failures=auth.free_failures, max_failures=auth.max_failures, max_delay=auth.max_delay, block_seconds=auth.block_seconds)

    def _keys(self, ip: str, username: str | None) -> list[tuple[str, str]]:
        keys = [("ip", ip)]
        if username:
            keys.append(("user", username.lower()))
        return keys

    def _record(self, key: tuple[str, str]) -> _Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        now = self.clock.seconds()
        if now >= record.blocked_until and now - record.last >= self.block_seconds:
            del self._records[key]
            return None
        return record

    def _delay(self, failures: int) -> float:
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        return float(min(self.max_delay, BASE_DELAY * 2 ** min(extra - 1, 30)))

    def delay_for(self, ip: str, username: str | None) -> float:
        """Seconds to wait before answering a failed attempt (0 while under free_failures)."""
        delays = [self._delay(r.failures) for key in self._keys(ip, username) if (r := self._record(key)) is not None]
        return max(delays, default=0.0)

    def is_blocked(self, ip: str, username: str | None) -> bool:
        """True while the IP is refused after max_failures failures."""
        record = self._record(("ip", ip))
        return record is not None and self.clock.seconds() < record.blocked_until

    def record_failure(self, ip: str, username: str | None) -> None:
        """Count a failed attempt for the IP and the account."""
        now = self.clock.seconds()
        if len(self._records) > PRUNE_ABOVE:
            for key in list(self._records):
                self._record(key)
        for key in self._keys(ip, username):
            record = self._record(key) or self._records.setdefault(key, _Record())
            record.failures += 1
            record.last = now
            if key[0] == "ip" and record.failures >= self.max_failures:
                record.blocked_until = now + self.block_seconds

    def reset(self) -> None:
        """Forget every failure and block (the test fixture's reset_throttle, between tests)."""
        self._records.clear()

    def record_success(self, ip: str, username: str) -> None:
        """A good login: forget the account's failures and the IP's."""
        for key in self._keys(ip, username):
            record = self._record(key)
            if record is not None and record.blocked_until <= self.clock.seconds():
                del self._records[key]
