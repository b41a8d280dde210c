"""The capture server's HTTP JSON API, for tests written in any language.

Implementation notes:
- Every route is under ``/api``; bodies in and out are JSON (UTF-8) except
  ``/raw``, which returns the stored message as ``message/rfc822``.
- Reading and deleting mail goes through :class:`Mailroom` (the store's API),
  the same view the Python fixture has.
- The long poll (``/api/wait``) re-checks on a short timer instead of holding
  a store lock, and answers 408 with what it found when the timeout passes.
- It listens on loopback by default: it has no authentication, it is a test tool.

Routes:
  GET    /api/health                       {"status": "ok", "ports": {...}}
  GET    /api/messages?to=&from=&subject=  {"messages": [summary, ...]}
  DELETE /api/messages                     purge every message
  GET    /api/messages/<id>                headers, text and HTML parts, attachments, raw
  GET    /api/messages/<id>/raw            the stored bytes
  DELETE /api/messages/<id>                delete one message
  POST   /api/users                        {"address": ..., "password": ...}
  GET    /api/faults                       pending SMTP faults
  POST   /api/faults                       {"command": "RCPT", "code": 451, "text": ..., "count": 1, "delay": 0, "drop": false}
  DELETE /api/faults                       clear pending faults
  GET    /api/wait?count=N&timeout=S&to=.. long poll until N messages match
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import resource, server

from mailsuite.errors import MailError
from mailsuite.testing.faults import Fault
from mailsuite.testing.mailroom import CapturedMessage, Mailroom

#: Longest a /api/wait request may ask to wait, seconds.
MAX_WAIT = 300.0


class HTTPError(Exception):
    """An error answered with a status code and a JSON body {"error": text}."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def summary(message: CapturedMessage) -> dict[str, Any]:
    """The short JSON form of a message used in lists."""
    m = message.message
    return {
        "id": message.id,
        "mailbox": message.mailbox,
        "folder": message.folder,
        "uid": message.uid,
        "sender": message.sender,
        "recipients": message.recipients,
        "from": str(m.get("From", "")),
        "to": str(m.get("To", "")),
        "subject": message.subject,
        "date": str(m.get("Date", "")),
        "message_id": str(m.get("Message-ID", "")),
        "size": len(message.raw),
    }


def _part_text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)


def detail(message: CapturedMessage) -> dict[str, Any]:
    """The full JSON form: headers, text and HTML bodies, attachment list, raw text."""
    m = message.message
    text_part = m.get_body(preferencelist=("plain",))
    html_part = m.get_body(preferencelist=("html",))
    attachments = []
    for part in m.iter_attachments():
        payload = part.get_payload(decode=True)
        attachments.append({
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "size": len(payload) if isinstance(payload, bytes) else 0,
        })
    out = summary(message)
    out.update({
        "headers": [[name, str(value)] for name, value in m.items()],
        "text": _part_text(text_part) if text_part is not None else None,  # type: ignore[arg-type]
        "html": _part_text(html_part) if html_part is not None else None,  # type: ignore[arg-type]
        "attachments": attachments,
        "raw": message.raw.decode("utf-8", "replace"),
    })
    return out


class CaptureAPI(resource.Resource):
    """One leaf resource routing every /api request by method and path."""

    isLeaf = True
    log = Logger()

    def __init__(self, context: Any, reactor: Any) -> None:
        super().__init__()
        self.context = context
        self.reactor = reactor
        self.mailroom = Mailroom(context)

    # -- twisted.web entry point ---------------------------------------------------
    def render(self, request: server.Request) -> int:
        d = defer.Deferred.fromCoroutine(self._dispatch(request))
        d.addCallbacks(lambda result: self._finish(request, *result), lambda f: self._fail(request, f))
        return server.NOT_DONE_YET

    def _finish(self, request: server.Request, status: int, body: Any, content_type: bytes = b"application/json") -> None:
        if request.finished or request._disconnected:  # type: ignore[attr-defined]
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        data = body if isinstance(body, bytes) else json.dumps(body, indent=1).encode("utf-8") + b"\n"
        request.write(data)
        request.finish()

    def _fail(self, request: server.Request, failure: Any) -> None:
        error = failure.value
        if isinstance(error, HTTPError):
            self._finish(request, error.status, {"error": error.text})
        elif isinstance(error, (MailError, ValueError)):
            self._finish(request, 400, {"error": str(error)})
        else:
            self.log.failure("HTTP API request failed", failure)
            self._finish(request, 500, {"error": "internal error (see the server log)"})

    # -- routing -------------------------------------------------------------------
    async def _dispatch(self, request: server.Request) -> tuple[Any, ...]:
        method = request.method.decode("ascii")
        segments = [unquote(s.decode("utf-8")) for s in request.postpath if s]
        if not segments or segments[0] != "api":
            raise HTTPError(404, "not found: every route is under /api")
        route, rest = (segments[1] if len(segments) > 1 else ""), segments[2:]
        args = {k.decode(): v[0].decode("utf-8") for k, v in request.args.items()}
        if route == "health" and method == "GET":
            ports = {k: v for k, v in self._ports().items()}
            return 200, {"status": "ok", "ports": ports}
        if route == "messages":
            return await self._messages(method, rest, args)
        if route == "users" and method == "POST":
            body = self._json(request)
            address, password = body.get("address"), body.get("password", "")
            if not isinstance(address, str) or not isinstance(password, str):
                raise HTTPError(400, 'body must be {"address": "...", "password": "..."}')
            await self.mailroom.add_user(address, password)
            return 201, {"address": address}
        if route == "faults":
            return self._faults(method, request)
        if route == "wait" and method == "GET":
            return await self._wait(args)
        raise HTTPError(404 if method in ("GET", "POST", "DELETE") else 405, f"no route {method} /{'/'.join(segments)}")

    async def _messages(self, method: str, rest: list[str], args: dict[str, str]) -> tuple[Any, ...]:
        if not rest:
            if method == "GET":
                found = await self.mailroom.messages(args.get("to"), args.get("from"), args.get("subject"))
                return 200, {"messages": [summary(m) for m in found]}
            if method == "DELETE":
                return 200, {"deleted": await self.mailroom.purge()}
            raise HTTPError(405, "use GET or DELETE on /api/messages")
        raw = rest[-1] == "raw"
        message_id = "/".join(rest[:-1] if raw else rest)
        if method == "DELETE" and not raw:
            if not await self.mailroom.delete(message_id):
                raise HTTPError(404, f"no message {message_id}")
            return 200, {"deleted": 1}
        if method != "GET":
            raise HTTPError(405, "use GET or DELETE on a message")
        for message in await self.mailroom.messages():
            if message.id == message_id:
                return (200, message.raw, b"message/rfc822") if raw else (200, detail(message))
        raise HTTPError(404, f"no message {message_id}")

    def _faults(self, method: str, request: server.Request) -> tuple[Any, ...]:
        plan = self.context.faults
        if method == "GET":
            return 200, {"faults": [f.as_dict() for f in plan.pending()]}
        if method == "DELETE":
            plan.clear()
            return 200, {"faults": []}
        if method == "POST":
            body = self._json(request)
            allowed = {"command", "code", "text", "count", "delay", "drop"}
            if not isinstance(body, dict) or "command" not in body or set(body) - allowed:
                raise HTTPError(400, f"body must be an object with command and any of {sorted(allowed - {'command'})}")
            try:
                fault = Fault(**body)
            except (TypeError, ValueError) as e:
                raise HTTPError(400, str(e)) from None
            plan.add(fault)
            return 201, fault.as_dict()
        raise HTTPError(405, "use GET, POST or DELETE on /api/faults")

    async def _wait(self, args: dict[str, str]) -> tuple[Any, ...]:
        try:
            count = int(args.get("count", "1"))
            timeout = min(float(args.get("timeout", "10")), MAX_WAIT)
        except ValueError:
            raise HTTPError(400, "count must be an integer and timeout a number of seconds") from None
        deadline = time.monotonic() + timeout
        while True:
            found = await self.mailroom.messages(args.get("to"), args.get("from"), args.get("subject"))
            if len(found) >= count:
                return 200, {"messages": [summary(m) for m in found]}
            if time.monotonic() >= deadline:
                return 408, {"error": f"fewer than {count} matching messages after {timeout}s", "messages": [summary(m) for m in found]}
            await task.deferLater(self.reactor, 0.1, lambda: None)

    def _json(self, request: server.Request) -> Any:
        try:
            return json.loads(request.content.read() or b"{}")
        except ValueError:
            raise HTTPError(400, "the body is not JSON") from None

    def _ports(self) -> dict[str, int]:
        service = self.context.root
        return service.bound_ports() if service is not None else {}


def open_http_api(context: Any) -> Any:
    """A ``service.PARTS`` opener: the HTTP API listener when capture.http_enabled."""
    capture = context.config.capture
    if not capture.http_enabled:
        return None
    from mailsuite.service import ListenerService, endpoint_description
    from mailsuite.testing.webui import http_root

    site = server.Site(http_root(CaptureAPI(context, context.reactor), context))  # web UI and Mailpit API too
    site.displayTracebacks = False
    description = endpoint_description(type(context.config.smtp)(address=capture.http_address, port=capture.http_port))
    context.http_api = ListenerService("http", context.reactor, description, site)
    return context.http_api
