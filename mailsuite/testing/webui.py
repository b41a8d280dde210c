"""The capture server's web UI: captured mail in a browser, updated live.

Implementation notes:
- :func:`ui_resource` is the capture HTTP site's fallback part (api.SITE):
  ``/`` and ``/ui/...``; the UI reads the Mailpit-compatible API
  (mailpit.py, ``/api/v1/...`` and ``/view/...``).
- The UI is three static files (static/index.html, app.css, app.js) shipped
  as package data: no build step, nothing fetched from another host.  They
  are answered with a strict Content-Security-Policy (scripts and styles
  from this origin only, frames only from this origin).
- Live updates are Server-Sent Events (``/ui/events``, an ``event: change``
  line after any change to captured mail); the page then asks the API for
  the list again.  :class:`ChangeFeed` learns of changes from the Mailroom
  index's watch (the store's folder watcher, the one IMAP IDLE uses:
  in-process deliveries at once, other processes' changes within a poll),
  which in capture mode also hears of new addresses; with a user
  directory (strict mode) the feed looks at the list of users twice a
  second while a browser is connected.  Nothing runs when none is.
"""

from __future__ import annotations

import importlib.resources
from typing import Any, Callable

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.web import resource, server

from mailsuite.testing.mailroom import mailroom_for

#: The UI's own files: name -> content type.
STATIC = {
    "index.html": b"text/html; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
}

#: The UI page may load its own script and style, frame its own /view/ pages, and nothing else.
UI_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          b"frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

#: Seconds between looks at a user directory for new users (strict mode, only while a browser listens).
ADDRESS_POLL = 0.5
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE = 15.0


class ChangeFeed:
    """Calls its subscribers (debounced) after any change to captured mail."""

    log = Logger()

    def __init__(self, context: Any, clock: Any) -> None:
        self.context = context
        self.clock = clock
        self.mailroom = mailroom_for(context)
        self.generation = 0
        self._subscribers: list[Callable[[int], None]] = []
        self._known: set[str] = set()
        self._unwatch: Callable[[], None] | None = None
        self._loop: task.LoopingCall | None = None
        self._busy = False
        self._pending: Any = None

    def subscribe(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """``callback(generation)`` after changes; returns the unsubscribe function."""
        self._subscribers.append(callback)
        if self._unwatch is None:
            self._unwatch = self.mailroom.watch(self.changed)
        # The capture directory tells the index of new addresses itself; a user directory must be asked.
        if self._loop is None and not hasattr(self.context.directory, "on_new"):
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self.clock
            self._loop.start(ADDRESS_POLL, now=True).addErrback(lambda f: self.log.failure("web UI change feed stopped", f))

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
            if not self._subscribers:
                self._stop()

        return unsubscribe

    def _stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self._known = set()

    def changed(self) -> None:
        """Something changed: tell the subscribers once, soon (several changes, one message)."""
        self.generation += 1
        if self._pending is None or not self._pending.active():
            self._pending = self.clock.callLater(0.05, self._fire)

    def _fire(self) -> None:
        for callback in list(self._subscribers):
            callback(self.generation)

    async def _addresses(self) -> set[str]:
        directory = self.context.directory
        if hasattr(directory, "addresses"):  # capture mode: an in-memory list
            return set(directory.addresses())
        users = await threads.deferToThread(directory.list_users)
        return {user.address for user in users}

    def _tick(self) -> Any:
        if self._busy:
            return None
        self._busy = True
        d = defer.Deferred.fromCoroutine(self._look())
        d.addErrback(lambda f: self.log.failure("web UI: looking for new mailboxes failed", f))
        return d.addBoth(lambda _: setattr(self, "_busy", False))

    async def _look(self) -> None:
        addresses = await self._addresses()
        new = addresses - self._known
        self._known = addresses
        if new:
            # The index watches the folders it has listed: list once so the new mailboxes are watched too.
            await self.mailroom.messages()
            self.changed()


class EventStream(resource.Resource):
    """``GET /ui/events``: Server-Sent Events, one ``change`` event per batch of changes."""

    isLeaf = True

    def __init__(self, feed: ChangeFeed, clock: Any) -> None:
        super().__init__()
        self.feed = feed
        self.clock = clock

    def render_GET(self, request: server.Request) -> int:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(f"retry: 1000\nevent: hello\ndata: {self.feed.generation}\n\n".encode())

        def send(generation: int) -> None:
            request.write(f"event: change\ndata: {generation}\n\n".encode())

        keepalive = task.LoopingCall(lambda: request.write(b": keep-alive\n\n"))
        keepalive.clock = self.clock
        keepalive.start(KEEPALIVE, now=False)
        unsubscribe = self.feed.subscribe(send)

        def gone(_: Any) -> None:
            unsubscribe()
            if keepalive.running:
                keepalive.stop()

        request.notifyFinish().addBoth(gone)
        return server.NOT_DONE_YET


def _static(name: str) -> bytes:
    return importlib.resources.files("mailsuite.testing").joinpath("static", name).read_bytes()


class WebUI(resource.Resource):
    """``/`` and ``/ui/...``: the page, its script and style, and the event stream (the site's fallback part)."""

    isLeaf = True

    def __init__(self, context: Any, clock: Any) -> None:
        super().__init__()
        self.events = EventStream(ChangeFeed(context, clock), clock)

    def render(self, request: server.Request) -> Any:
        path = [s for s in [*request.prepath, *request.postpath] if s]  # the whole path (the site's fallback)
        if not path:
            name = b"index.html"
        elif len(path) == 2 and path[0] == b"ui":
            name = path[1]
        else:
            name = b""
        if name == b"events":
            return self.events.render(request)
        text = name.decode("ascii", "replace")
        if text not in STATIC or request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found: the web UI is at /, the JSON API under /api, Mailpit's under /api/v1\n"
        request.setHeader(b"content-type", STATIC[text])
        request.setHeader(b"content-security-policy", UI_CSP)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return _static(text)


def ui_resource(context: Any) -> WebUI:
    """The api.SITE entry for every path no other part claims: the web UI."""
    return WebUI(context, context.reactor)
