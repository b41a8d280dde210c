"""IDLE (RFC 2177): real push of folder changes while the client waits.

Implementation notes:

* The selected folder's ``watch`` callback (``IFolder.watch``: this process
  or another, within a second) marks the session dirty and wakes the IDLE
  loop, which refreshes the view and writes EXISTS / RECENT / FETCH FLAGS /
  EXPUNGE at once (EXPUNGE is allowed during IDLE: no command is using
  sequence numbers).  Bursts of changes are coalesced over a few
  milliseconds into one refresh.
* While idling the input goes to a line hook: ``DONE`` ends the command,
  anything else ends it with BAD.  The inactivity timer is NOT reset by our
  own pushes or keep-alives, only by client input, so a client must
  re-issue IDLE within ``limits.imap_timeout`` (RFC 2177 suggests every 29
  minutes); ``* OK Still here`` is sent every few minutes to keep NAT
  state alive.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from mailsuite.imap.args import Arguments
from mailsuite.imap.dispatch import LOGGED_IN, command
from mailsuite.imap.responses import Response, bad

#: Seconds to gather a burst of changes into one refresh.
COALESCE = 0.02
#: Seconds between keep-alive lines.
KEEPALIVE = 120.0


@command("IDLE", LOGGED_IN)
async def idle(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 2177."""
    args.end()
    server.write(b"+ idling\r\n")
    done: defer.Deferred[bytes] = defer.Deferred()
    state = {"scheduled": None, "running": False, "again": False}

    def line(data: bytes) -> None:
        if not done.called:
            done.callback(data)

    finished: list[defer.Deferred[None]] = []

    async def push() -> None:
        if state["running"]:
            state["again"] = True
            return
        state["running"] = True
        finished.clear()
        try:
            while True:
                state["again"] = False
                await server.announce(expunge_ok=True)
                if not state["again"]:
                    break
        except Exception:
            server.log.failure("{cid}: IDLE push failed", cid=server.cid)
        finally:
            state["running"] = False
            waiting = list(finished)
            finished.clear()
            for d in waiting:
                d.callback(None)

    def fire() -> None:
        state["scheduled"] = None
        if not done.called:
            defer.Deferred.fromCoroutine(push())

    def changed() -> None:
        if state["scheduled"] is None and not done.called:
            state["scheduled"] = server.reactor.callLater(COALESCE, fire)

    def keepalive() -> None:
        if not done.called:
            server.write(b"* OK Still here\r\n")
            state["keepalive"] = server.reactor.callLater(KEEPALIVE, keepalive)

    def lost() -> None:
        if not done.called:
            done.callback(b"DONE")

    server.set_line_hook(line)
    server.add_change_listener(changed)
    remove_lost = server.on_lost(lost)
    state["keepalive"] = server.reactor.callLater(KEEPALIVE, keepalive)
    try:
        # changes that happened before IDLE started are owed now
        await push()
        answer = await done
        if state["running"]:
            # never let a push (maybe an EXPUNGE) trail after the tagged OK
            wait: defer.Deferred[None] = defer.Deferred()
            finished.append(wait)
            await wait
    finally:
        server.set_line_hook(None)
        server.remove_change_listener(changed)
        remove_lost()
        for key in ("scheduled", "keepalive"):
            call = state.get(key)
            if call is not None and call.active():
                call.cancel()
    if answer.strip().upper() != b"DONE":
        raise bad("Expected DONE.")
    return Response("OK", "Idle completed.")
