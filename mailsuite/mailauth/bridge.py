"""DNS for library code running in a worker thread, answered by twisted.names on the reactor.

Why: dkimpy and pyspf ask for DNS records synchronously, in the middle of
their evaluation (SPF's include/redirect chain cannot be known in advance).
They run in a worker thread; each question is handed to the reactor thread
with ``blockingCallFromThread``, which blocks only that worker until the
asynchronous, cached twisted.names lookup fires.

Implementation notes:

* Must never be called on the reactor thread (it would deadlock); the checks
  that use it run through ``deferToThreadPool``.
* One :class:`ThreadLookups` serves one message: it counts the queries and
  refuses more than ``max_queries`` (a bound beyond SPF's own ten-term limit,
  RFC 7208 4.6.4, against records that fan out through MX and PTR answers),
  and it remembers every temporary failure so callers can tell a "fail"
  caused by the DNS from a real one.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet.threads import blockingCallFromThread

from mailsuite.resolver import Answer, CachingResolver, DNSFailure

#: Queries one message may cause, all checks together.
MAX_QUERIES = 60


class LookupLimitExceeded(Exception):
    """The message's records asked for more DNS queries than we answer for one message."""


class ThreadLookups:
    """Blocking DNS lookups for one message's checks, from a worker thread."""

    def __init__(self, reactor: Any, resolver: CachingResolver, max_queries: int = MAX_QUERIES) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self.max_queries = max_queries
        self.queries = 0
        self._lock = threading.Lock()  # SPF and DKIM run in two threads for one message
        #: Descriptions of the temporary failures met so far.
        self.temp_errors: list[str] = []

    def lookup(self, name: str, rtype: str) -> Answer:
        """The answer for ``name``/``rtype``; DNSFailure or LookupLimitExceeded otherwise."""
        with self._lock:
            self.queries += 1
            over = self.queries > self.max_queries
        if over:
            raise LookupLimitExceeded(f"more than {self.max_queries} DNS lookups for one message")
        try:
            answer: Answer = blockingCallFromThread(self._reactor, self._resolver.lookup, name, rtype)
        except DNSFailure as e:
            with self._lock:
                self.temp_errors.append(str(e))
            raise
        return answer
