"""Write a long response to a transport without holding it in memory.

Implementation notes:
- :class:`ResponseStreamer` is a push producer for one response.  It does
  not register itself: the POP3 session is the transport's producer for the
  whole connection (so that output backs up into input for every command,
  not only long ones) and passes pause, resume and stop on to the streamer
  of the response under way; whoever drives a streamer alone registers it.
  It asks its source for the next chunk only while it is not paused, so at
  most one chunk plus the transport's own buffer is in memory whatever the
  response size (RFC 1939 RETR of a 50 MB message, LIST of 50,000 messages).
- The source returns a Deferred per chunk, so a chunk can be read from disk
  in a thread (the reactor thread never waits on the disk) or produced
  synchronously (an already-fired Deferred) for in-memory listings.  The
  next chunk is requested as soon as one is written, so the disk read
  overlaps the socket send; there is never more than one request under way.
- A lost connection stops the loop (``stopProducing``); the Deferred from
  :meth:`start` then fails with ConnectionLost and the caller cleans up.
- Every chunk written calls ``on_progress`` so the protocol can treat a
  client that is still reading as active (inactivity timeout).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: A source of chunks: fires with bytes, or None when the response is complete.
ChunkSource = Callable[[], "defer.Deferred[bytes | None]"]


@implementer(IPushProducer)
class ResponseStreamer:
    """Pumps chunks from a source into a transport, pausing when the transport is full."""

    def __init__(self, transport: Any, source: ChunkSource, on_progress: Callable[[], None] | None = None) -> None:
        self.transport = transport
        self.source = source
        self.on_progress = on_progress
        self._paused = False
        self._stopped = False
        self._resume: defer.Deferred[None] | None = None

    def start(self) -> defer.Deferred[int]:
        """Stream the whole response; fires with the number of bytes written."""
        return defer.Deferred.fromCoroutine(self._pump())

    async def _pump(self) -> int:
        written = 0
        upcoming: defer.Deferred[bytes | None] | None = self.source()
        try:
            while True:
                assert upcoming is not None
                chunk = await upcoming
                upcoming = None
                if self._stopped:
                    raise ConnectionLost("client went away during a response")
                if chunk is None:
                    return written
                # Ask for the next chunk now, so reading it overlaps sending this one;
                # at most one chunk waits while the transport is paused.
                upcoming = self.source()
                if chunk:
                    self.transport.write(chunk)
                    written += len(chunk)
                    if self.on_progress is not None:
                        self.on_progress()
                while self._paused and not self._stopped:
                    self._resume = defer.Deferred()
                    await self._resume
                if self._stopped:
                    raise ConnectionLost("client went away during a response")
        finally:
            if upcoming is not None:
                # Let a read under way finish before the caller closes the file.
                try:
                    await upcoming
                except Exception:
                    pass

    def _wake(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None:
            resume.callback(None)

    # IPushProducer
    def pauseProducing(self) -> None:
        """The transport's buffer is full: stop asking the source for chunks."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport drained: carry on."""
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        """The connection is gone: end the loop."""
        self._stopped = True
        self._wake()
