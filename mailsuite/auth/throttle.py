"""Slowing down password guessing: growing delays, then a block.

Implementation notes:

- Failures are counted per client IP, per account (user name as typed,
  lower-cased) and per pair of the two.  After ``free_failures`` failures a
  failed attempt is answered only after a delay that doubles with each
  further failure (0.5 s, 1 s, 2 s ... capped at ``max_delay``).
- After ``max_failures`` failures from one IP, that IP is refused outright
  for ``block_seconds``.  Accounts are only delayed, never blocked: a block
  per account would let anyone lock a user out by guessing wrong on purpose.
- A failure is forgotten ``block_seconds`` after the last one.
- A successful login forgives only the failures that IP made on that
  account (a user's own typos): they are taken off the IP's count and the
  account's count.  Failures on other accounts stay, so an attacker who
  logs in to an account of their own between guesses still reaches the
  block; guesses at an account from other IPs stay too, so the owner's
  login does not hand a distributed attack fresh free failures.  A success
  never lifts a block.
- :meth:`LoginThrottle.failures` (the IP's count) orders the queue in front
  of password hashing (:mod:`.gate`): clean sources are checked first.
- A good login also makes the pair (IP, account) *known* for
  ``KNOWN_SECONDS``; the hashing queue lets a known pair's login through
  first, past guesses at the account from elsewhere.  A failure of the pair
  forgets it (so an attacker's own account gives its IP no head start for
  guessing anything, that account included).  At most ``KNOWN_MAX`` pairs
  are kept, the least recently used dropped first.
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
#: Seconds between two prunes (each walks the whole table).
PRUNE_EVERY = 10.0
#: How long a good login keeps its (IP, account) pair known.
KNOWN_SECONDS = 30 * 86400.0
#: Known pairs kept at most.
KNOWN_MAX = 100_000


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
        self._records: dict[tuple[str, ...], _Record] = {}
        self._next_prune = 0.0
        self._known: dict[tuple[str, str], float] = {}  # (ip, account) -> until; oldest first

    @classmethod
    def from_config(cls, auth: Any, clock: Any) -> "LoginThrottle":
        """A throttle with the ``[auth]`` settings."""
        return cls(clock, free_failures=auth.free_failures, max_failures=auth.max_failures, max_delay=auth.max_delay, block_seconds=auth.block_seconds)

    def _keys(self, ip: str, username: str | None) -> list[tuple[str, ...]]:
        keys: list[tuple[str, ...]] = [("ip", ip)]
        if username:
            keys.append(("user", username.lower()))
            keys.append(("pair", ip, username.lower()))
        return keys

    def _record(self, key: tuple[str, ...]) -> _Record | None:
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
        delays = [self._delay(r.failures) for key in self._keys(ip, username)[:2] if (r := self._record(key)) is not None]
        return max(delays, default=0.0)

    def is_known(self, ip: str, username: str) -> bool:
        """True if this IP logged in to this account lately and has not failed on it since."""
        key = (ip, username.lower())
        until = self._known.get(key)
        if until is None:
            return False
        if self.clock.seconds() >= until:
            del self._known[key]
            return False
        return True

    def failures(self, ip: str) -> int:
        """The failures remembered for the IP (0 for a clean one); orders the hashing queue."""
        record = self._record(("ip", ip))
        return 0 if record is None else record.failures

    def is_blocked(self, ip: str, username: str | None) -> bool:
        """True while the IP is refused after max_failures failures."""
        record = self._record(("ip", ip))
        return record is not None and self.clock.seconds() < record.blocked_until

    def record_failure(self, ip: str, username: str | None) -> None:
        """Count a failed attempt for the IP and the account."""
        now = self.clock.seconds()
        if len(self._records) > PRUNE_ABOVE and now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            for key in list(self._records):
                self._record(key)
        if username:
            self._known.pop((ip, username.lower()), None)
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
        """A good login: forgive the failures this IP made on this account, and only those."""
        ip_key, user_key, pair_key = self._keys(ip, username)
        known = (ip, username.lower())
        self._known.pop(known, None)
        self._known[known] = self.clock.seconds() + KNOWN_SECONDS
        while len(self._known) > KNOWN_MAX:
            del self._known[next(iter(self._known))]
        pair = self._record(pair_key)
        if pair is None:
            return
        del self._records[pair_key]
        for key in (ip_key, user_key):
            record = self._record(key)
            if record is None:
                continue
            record.failures = max(0, record.failures - pair.failures)
            if record.failures == 0 and record.blocked_until <= self.clock.seconds():
                del self._records[key]
