"""The queue in front of password hashing: one check per account, fair shares of the hashing slots.

Implementation notes:

- A password check may start when (a) a hashing slot is free (``slots``,
  one per hashing thread) and (b) no other check holds its account.  The
  account is held from the start of the check until the caller releases
  it, which :mod:`.login` does only after a failure's delay: guesses at one
  account run one after the other, delays included, however many
  connections and IPs they come from.  The slot is released as soon as the
  hash is done; delays are reactor timers and hold no thread.
- When a slot frees, the waiting check that goes first is the one whose
  source has the fewest failures now (``standing``, the throttle's count
  for the IP), then the one whose source has the fewest checks running or
  waiting, then the oldest.  A clean IP's login therefore waits for at most
  the checks already running, not for the queue of guesses; a source that keeps
  failing only gets slots nobody cleaner wants.  Standing is read when the
  choice is made, not when the check was queued, so failures that arrive
  while a guess waits push it back.
- One slot is kept for lone clean checks: a check whose source has no
  failures and no other check waiting or running.  Everything else shares
  ``slots - 1`` slots (all of them when there is only one).  So a user's
  login starts at once instead of waiting for a guess's hash to end (on 2
  busy cores a hash took about 1 s), even while guesses from IPs that have
  not failed yet but send several at once hold the other slots.  (The very
  first check of a fresh IP looks like anyone's.)  While such a
  lone check runs, no check from a source with failures starts: argon2id
  hashes use every core by themselves (parallelism 4), so a guess started
  next to the user's would only slow it down.
- A *known* check (its IP logged in to that account lately and has not
  failed on it since: the throttle's ``is_known``) goes before all others,
  counts as lone, and does not wait for its account: guesses at a user's
  account from elsewhere, and their delays, do not hold up that user's
  login from a usual place.  Only the account's own password opens that
  door, and one wrong guess closes it.
- At most ``max_waiting`` checks wait.  A newcomer to a full queue takes the
  place of the worst waiting check if it stands better, else it is turned
  away; either way the loser fails with :class:`GateFull` at once (the
  server is busy; it says nothing about the password).
- Cancelling the Deferred of a waiting check takes it out of the queue.
- Account names are used as given (the caller lower-cases them); unknown
  accounts queue exactly like known ones, so the queue tells nobody which
  users exist.
- Everything here runs on the reactor thread; choosing scans the waiting
  checks (bounded by ``max_waiting``) once per started check.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer

#: Checks allowed to wait for a slot or for their account, all sources together.
MAX_WAITING = 512


class GateFull(Exception):
    """The queue in front of password hashing is full; try again later."""


@dataclass
class _Waiting:
    source: str
    account: str
    seq: int
    deferred: defer.Deferred[Any] = field(repr=False)
    known: bool = False


class Ticket:
    """A started check: its hashing slot and its account, released separately (each once)."""

    def __init__(self, gate: "HashGate", source: str, account: str, *, kept: bool, lone: bool) -> None:
        self._gate = gate
        self.source = source
        self.account = account
        self.kept = kept  # holds the kept slot
        self.lone = lone  # a lone clean check when it started
        self._slot = True
        self._account = True

    def release_slot(self) -> None:
        """The hash is done: the slot may serve the next check."""
        if self._slot:
            self._slot = False
            self._gate._slot_released(self)

    def release_account(self) -> None:
        """The attempt is answered: the next check for this account may start (frees the slot too)."""
        self.release_slot()
        if self._account:
            self._account = False
            self._gate._account_released(self.account)


class HashGate:
    """Decides which password check runs next (see the module notes)."""

    def __init__(self, slots: int, standing: Callable[[str], int], *, max_waiting: int = MAX_WAITING) -> None:
        self.slots = max(1, slots)
        self.standing = standing
        self.max_waiting = max_waiting
        self._waiting: list[_Waiting] = []
        self._holds: Counter[str] = Counter()  # checks holding each account
        self._running: Counter[str] = Counter()
        self._running_total = 0
        self._running_shared = 0
        self._running_lone = 0
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        """Checks waiting for a slot or their account."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Checks holding a hashing slot."""
        return self._running_total

    def enter(self, source: str, account: str, *, known: bool = False) -> defer.Deferred[Ticket]:
        """Fires with a :class:`Ticket` when the check may start; fails with GateFull if it may not wait."""
        entry = _Waiting(source, account, next(self._seq), defer.Deferred(lambda d: self._withdraw(d)), known)
        if len(self._waiting) >= self.max_waiting:
            standings: dict[str, int] = {}
            queued = Counter(w.source for w in self._waiting)
            queued[source] += 1  # as if the newcomer were queued too
            worst = max(self._waiting, key=lambda w: self._key(w, standings, queued))
            if self._key(entry, standings, queued) >= self._key(worst, standings, queued):
                return defer.fail(GateFull())
            self._waiting.remove(worst)
            worst.deferred.errback(GateFull())
        self._waiting.append(entry)
        self._pump()
        return entry.deferred

    def _key(self, entry: _Waiting, standings: dict[str, int], queued: Counter[str]) -> tuple[int, int, int, int]:
        """Smaller goes first: known checks, then the source's failures, its checks running or waiting, arrival."""
        standing = standings.get(entry.source)
        if standing is None:
            standing = standings[entry.source] = self.standing(entry.source)
        return (not entry.known, standing, self._running[entry.source] + queued[entry.source], entry.seq)

    def _pump(self) -> None:
        while self._running_total < self.slots and self._waiting:
            standings: dict[str, int] = {}
            ready = [w for w in self._waiting if w.known or not self._holds[w.account]]
            if not ready:
                return
            queued = Counter(w.source for w in self._waiting)

            def lone(w: _Waiting) -> bool:  # used only in this iteration
                return w.known or self._key(w, standings, queued)[1:3] == (0, 1)  # noqa: B023

            kept = self._running_shared >= max(1, self.slots - 1)
            if kept:
                ready = [w for w in ready if lone(w)]  # only the kept slot is left
                if not ready:
                    return
            chosen = min(ready, key=lambda w: self._key(w, standings, queued))
            if self._running_lone and not chosen.known and standings[chosen.source] > 0:
                return  # a user's lone check is hashing: guesses wait until it is done
            ticket = Ticket(self, chosen.source, chosen.account, kept=kept, lone=lone(chosen))  # a lone check takes a shared slot while one is free
            self._waiting.remove(chosen)
            self._holds[chosen.account] += 1
            self._running[chosen.source] += 1
            self._running_total += 1
            self._running_shared += not ticket.kept
            self._running_lone += ticket.lone
            chosen.deferred.callback(ticket)

    def _withdraw(self, d: defer.Deferred[Any]) -> None:
        for entry in self._waiting:
            if entry.deferred is d:
                self._waiting.remove(entry)
                return

    def _slot_released(self, ticket: Ticket) -> None:
        self._running_total -= 1
        self._running_shared -= not ticket.kept
        self._running_lone -= ticket.lone
        self._running[ticket.source] -= 1
        if self._running[ticket.source] <= 0:
            del self._running[ticket.source]
        self._pump()

    def _account_released(self, account: str) -> None:
        self._holds[account] -= 1
        if self._holds[account] <= 0:
            del self._holds[account]
        self._pump()
