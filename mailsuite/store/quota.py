"""Per-user quota: limits (config default, per-user override) and usage counted from the Maildir.

Implementation notes:
- Usage is the sum over every folder's ``new/`` and ``cur/`` of the message
  sizes (the ``,S=`` field of the name, else one stat) and counts.  Each
  directory's figures are cached with its mtime and reused while the mtime is
  unchanged and older than two seconds (a change in the same clock tick
  would not move the mtime), so a check costs a few stats, not a rescan.
- The check is made before writing; concurrent deliveries may both pass and
  overshoot the limit by one message each (as Maildir++ quota does).
- 0 means unlimited, for bytes and for messages.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from mailsuite.errors import QuotaExceeded
from mailsuite.store.state import size_from_base, split_name


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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, int, int, int]] = {}

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
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_ino and time.time() - st.st_mtime > self.SETTLE:
            return cached[2], cached[3]
        total = count = 0
        try:
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
        except FileNotFoundError:
            return (0, 0)
        with self._lock:
            self._cache[path] = (st.st_mtime_ns, st.st_ino, total, count)
        return total, count
