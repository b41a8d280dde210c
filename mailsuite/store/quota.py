"""Per-user quota: limits (config default, per-user override) and usage counted from the Maildir.

Implementation notes:
- Usage is the sum over every folder's ``new/`` and ``cur/`` of the message
  sizes (the ``,S=`` field of the name, else one stat) and counts.  Each
  directory's figures are cached with its mtime and reused while the mtime is
  unchanged and older than two seconds (a change in the same clock tick
  would not move the mtime), so a check costs a few stats, not a rescan.
- A delivery changes ``new/`` every time, which would mean a full count of
  it before every delivery: 22 ms per message with 6,000 unread messages,
  growing with each (measured).  So the store reports what it placed itself
  (:meth:`UsageCounter.added`, with the directory's stat just before and
  just after): when nobody else changed the directory in between, the
  figures are updated without a count.  A directory kept up to date that way
  is counted in full again at least every :attr:`UsageCounter.RECOUNT`
  seconds, which also repairs what a change by another process in the very
  same clock tick could have hidden.
- The check is made before writing; concurrent deliveries may both pass and
  overshoot the limit by one message each (as Maildir++ quota does).
- 0 means unlimited, for bytes and for messages.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from mailsuite.errors import QuotaExceeded
from mailsuite.store.state_records import size_from_base, split_name


@dataclass(frozen=True)
class QuotaLimits:
    """Limits for one user; 0 = unlimited."""

    bytes: int = 0
    messages: int = 0

    def check(self, used: tuple[int, int], size: int, count: int = 1) -> None:
        """Raise QuotaExceeded if adding ``count`` messages of ``size`` bytes in total goes over."""
        used_bytes, used_messages = used
        if self.bytes and used_bytes + size > self.bytes:
            raise QuotaExceeded(f"Mailbox full: {used_bytes + size} bytes would exceed the quota of {self.bytes}")
        if self.messages and used_messages + count > self.messages:
            raise QuotaExceeded(f"Mailbox full: {used_messages + count} messages would exceed the quota of {self.messages}")

    @property
    def unlimited(self) -> bool:
        return not self.bytes and not self.messages


class UsageCounter:
    """Counts bytes and messages of Maildir trees with a per-directory cache (thread-safe)."""

    #: A directory modified less than this many seconds ago is rescanned.
    SETTLE = 2.0
    #: A directory whose figures were updated by added() is counted in full again after this many seconds.
    RECOUNT = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        # path -> (mtime_ns, inode, bytes, messages, when counted in full, kept up to date by added())
        self._cache: dict[str, tuple[int, int, int, int, float, bool]] = {}
        self._clock = clock

    def added(self, path: str, size: int, before: os.stat_result, copies: int = 1) -> None:
        """This process just put ``copies`` messages of ``size`` bytes each into directory ``path``, whose stat was ``before``.

        The cached figures move on without a count when they described the
        directory as it was just before; otherwise they are dropped.
        """
        try:
            after = os.stat(path)
        except OSError:
            after = None
        with self._lock:
            cached = self._cache.get(path)
            if cached is None:
                return
            mtime_ns, ino, total, count, counted_at, _ = cached
            if after is not None and mtime_ns == before.st_mtime_ns and ino == before.st_ino == after.st_ino:
                self._cache[path] = (after.st_mtime_ns, ino, total + size * copies, count + copies, counted_at, True)
            else:
                del self._cache[path]

    def watches(self, path: str) -> bool:
        """Whether figures for ``path`` are cached (only then is added() worth its two stats)."""
        return path in self._cache

    def usage(self, user_root: str) -> tuple[int, int]:
        """(bytes, messages) used by all folders of the Maildir at ``user_root``."""
        folders = [user_root]
        try:
            with os.scandir(user_root) as it:
                for e in it:
                    if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir(follow_symlinks=False):
                        folders.append(e.path)
        except FileNotFoundError:
            return (0, 0)
        total_bytes = total_count = 0
        for folder in folders:
            for sub in ("new", "cur"):
                b, c = self._dir_usage(os.path.join(folder, sub))
                total_bytes += b
                total_count += c
        return total_bytes, total_count

    def _dir_usage(self, path: str) -> tuple[int, int]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return (0, 0)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_ino:
            mtime_ns, ino, total, count, counted_at, kept = cached
            if kept:
                if self._clock() - counted_at < self.RECOUNT:
                    return total, count
            elif time.time() - st.st_mtime > self.SETTLE:
                return total, count
        counted_at = self._clock()
        try:
            total, count = self._count(path)
        except FileNotFoundError:
            return (0, 0)
        with self._lock:
            self._cache[path] = (st.st_mtime_ns, st.st_ino, total, count, counted_at, False)
        return total, count

    def _count(self, path: str) -> tuple[int, int]:
        """(bytes, messages) of one directory, counted entry by entry."""
        total = count = 0
        with os.scandir(path) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                base, _ = split_name(e.name)
                size = size_from_base(base)
                if size is None:
                    try:
                        size = e.stat().st_size
                    except FileNotFoundError:
                        continue
                total += size
                count += 1
        return total, count
