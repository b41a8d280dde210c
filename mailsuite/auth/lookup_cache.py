"""Remembered directory answers, valid exactly while the SQLite file is unchanged.

Implementation notes:

- Every RCPT asks the directory where an address goes, and every submission
  MAIL asks which senders a user may use.  Each ask is a trip to a worker
  thread and back (two thread switches, which under load cost more than the
  query), so an SMTP transaction would pay it on every message.
- Answers are kept with the database's ``PRAGMA data_version`` read when the
  query was *started*.  SQLite changes that number whenever another
  connection (the admin CLI in another process, or one of our own worker
  threads' connections) commits, so an answer is reused only while the number
  is unchanged: a user added or removed with the CLI is seen by the next
  lookup, exactly as without the cache.  A commit that lands while a query
  runs leaves the answer tagged with the older number, so it is never reused.
- The version is read without a system call: SQLite's WAL index (the
  ``-shm`` file every connection maps) starts with a header that each commit
  rewrites (its change counter, frame count and checksums; "WAL-index format"
  in SQLite's file format documentation).  We map that header read-only and
  compare its bytes (:class:`mailsuite.compat.WalHeader`): about 0.2 us, and no release of the interpreter lock,
  which on the reactor thread costs far more than the read (a ``PRAGMA
  data_version`` measured ~190 us there under load, waiting to get the lock
  back from worker threads).  A torn read of a header being rewritten can only
  differ from the old bytes, so it only costs a miss.  Our own connection keeps
  the ``-shm`` file open, so SQLite never truncates it under the mapping.
  Without a WAL index (another journal mode) ``PRAGMA data_version`` is used.
- Errors that are answers (no such user) are remembered too; unexpected
  failures are not.
- The table is bounded: when full it is emptied (the working set refills it).
"""

from __future__ import annotations

import copy
import sqlite3
from typing import Any, Callable, Hashable

from twisted.internet import defer

from mailsuite.compat import WalHeader

#: Most answers kept; beyond this the table starts over.
MAX_ENTRIES = 8192


class DataVersion:
    """A value that changes whenever the database is committed to (reactor thread only); see the module notes."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA data_version").fetchone()  # opens (and so holds) the WAL index
        self._header = WalHeader.open(self._db, path)

    @property
    def uses_shared_memory(self) -> bool:
        """True when the version is read from the WAL index (the fast path)."""
        return self._header is not None

    def __call__(self) -> Hashable:
        if self._header is not None:
            return self._header.read()
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Release the mapping and the connection."""
        if self._header is not None:
            self._header.close()
            self._header = None
        self._db.close()


class LookupCache:
    """Answers keyed by (kind, key), each valid while the database's version is the one it was read at."""

    def __init__(self, version: Callable[[], Hashable], remember_errors: tuple[type[BaseException], ...] = (), max_entries: int = MAX_ENTRIES) -> None:
        self._version = version
        self._remember_errors = remember_errors
        self._max_entries = max_entries
        self._answers: dict[Hashable, tuple[Hashable, bool, Any]] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, key: Hashable, query: Callable[[], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        """The remembered answer for ``key`` if the database has not changed since, else ``query()`` (and remember it)."""
        version = self._version()
        found = self._answers.get(key)
        if found is not None and found[0] == version:
            self.hits += 1
            _, ok, value = found
            return defer.succeed(value) if ok else defer.fail(copy.copy(value))
        self.misses += 1

        def remember(value: Any) -> Any:
            self._store(key, version, True, value)
            return value

        def remember_error(failure: Any) -> Any:
            if self._remember_errors and failure.check(*self._remember_errors):
                self._store(key, version, False, failure.value)
            return failure

        return query().addCallbacks(remember, remember_error)

    def _store(self, key: Hashable, version: Hashable, ok: bool, value: Any) -> None:
        if len(self._answers) >= self._max_entries:
            self._answers.clear()
        self._answers[key] = (version, ok, value)
