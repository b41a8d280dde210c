"""The capture server's HTTP site: the JSON API for tests written in any language.

Implementation notes:
- The site is built from :data:`SITE` (path prefix -> resource factory), the
  one place where other parts (a web UI, a Mailpit-compatible API) add
  their resources; the longest matching prefix serves a request.
- Every JSON route is under ``/api``; bodies in and out are JSON (UTF-8)
  except ``/raw`` and attachments, which return the stored bytes.
- Reading and deleting mail goes through the context's one
  :class:`Mailroom` (the store's API, with an index), the same view the
  Python fixture has.
- Errors are answered with their real reason: 400 for a bad request, 404,
  409 for something that exists already, 422 for a domain that is not
  local; 500 only for a bug (logged with its traceback).
- The long poll (``/api/wait``) re-checks on a short timer instead of holding
  a store lock, and answers 408 with what it found when the timeout passes.
- It listens on loopback by default: it has no authentication, it is a test tool.

Routes:
  GET    /api/health                       {"status": "ok", "ports": {...}, "mailboxes": N (indexed)}
  GET    /api/messages?to=&from=&subject=&mailbox=&content=1
                                           {"messages": [summary, ...]} (content=1 adds "raw_base64")
  DELETE /api/messages                     purge every message (and forget capture addresses)
  GET    /api/messages/<id>                summary + mimeview.view(): headers, text, html, attachments, links, raw
  GET    /api/messages/<id>/raw            the stored bytes
  GET    /api/messages/<id>/attachments/<n> one attachment's bytes
  DELETE /api/messages/<id>                delete one message
  POST   /api/users                        {"address": ..., "password": ...}
  POST   /api/domains                      {"domain": ...}
  DELETE /api/throttle                     forget failed logins
  GET    /api/faults                       pending faults
  POST   /api/faults                       {"command": "RCPT", "protocol": "smtp", "code": 451, ...} (see faults.Fault)
  DELETE /api/faults                       clear pending faults
  GET    /api/wait?count=N&timeout=S&settle=S&to=..  long poll until N messages match
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import fields
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.web import resource, server

from mailsuite.compat import request_gone
from mailsuite.errors import MailError
from mailsuite.testing.http import HTTPError, json_body
from mailsuite.testing.faults import Fault, FaultPlan
from mailsuite.testing.mailroom import CapturedMessage, mailroom_for

#: Longest a /api/wait request may ask to wait, seconds.
MAX_WAIT = 300.0

#: The capture HTTP site: path prefix (segments) -> "module:function" taking the ServerContext
#: and returning the twisted.web resource for that prefix and everything below it.  The longest
#: matching prefix wins; the empty prefix () would serve every path no other prefix claims.
SITE: dict[tuple[str, ...], str] = {
    ("api",): "mailsuite.testing.api:api_resource",
    ("api", "v1"): "mailsuite.testing.mailpit:api_v1_resource",  # Mailpit-compatible API
    ("view",): "mailsuite.testing.mailpit:view_resource",  # Mailpit's /view/ID.html, the UI's sandboxed frame
    (): "mailsuite.testing.webui:ui_resource",  # the web UI: /, /ui/...
}

#: Filters every listing route takes (query parameter -> Mailroom.messages keyword).
FILTERS = {"to": "to", "from": "from_", "subject": "subject", "mailbox": "mailbox"}


def summary(message: CapturedMessage, content: bool = False) -> dict[str, Any]:
    """The short JSON form of a message used in lists (``content``: with the stored bytes in base64)."""
    out = {
        "id": message.id,
        "mailbox": message.mailbox,
        "folder": message.folder,
        "uid": message.uid,
        "sender": message.sender,
        "recipients": message.recipients,
        "queue_id": message.queue_id,
        "seq": message.seq,
        "from": message.header("From"),
        "to": message.header("To"),
        "subject": message.subject,
        "date": message.header("Date"),
        "message_id": message.header("Message-ID"),
        "size": len(message.raw),
    }
    if content:
        out["raw_base64"] = base64.b64encode(message.raw).decode("ascii")
    return out


def detail(message: CapturedMessage) -> dict[str, Any]:
    """The full JSON form: the summary plus mimeview's view (headers, bodies, attachments, links) and the raw text."""
    out = summary(message)
    view = dict(message.view)
    for key in ("subject", "from", "to", "date", "message_id"):
        view.pop(key, None)  # the summary's own (never None) values stay
    out.update(view)
    out["raw"] = message.raw.decode("utf-8", "replace")
    return out


def status_of(error: BaseException) -> int | None:
    """The HTTP status for an error with a meaning (None: a bug, 500)."""
    if isinstance(error, HTTPError):
        return error.status
    try:
        from mailsuite.auth.directory import AlreadyExists, DirectoryError, NotFound, NotLocal
    except ImportError:  # pragma: no cover - the auth package is part of mailsuite
        return 400 if isinstance(error, (MailError, ValueError)) else None
    if isinstance(error, AlreadyExists):
        return 409
    if isinstance(error, NotLocal):
        return 422
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, (DirectoryError, MailError, ValueError)):
        return 400
    return None


class CaptureAPI(resource.Resource):
    """The /api resource: routes every request below it by method and path."""

    isLeaf = True
    log = Logger()

    def __init__(self, context: Any, reactor: Any) -> None:
        super().__init__()
        self.context = context
        self.reactor = reactor
        self.mailroom = mailroom_for(context)

    # -- twisted.web entry point ---------------------------------------------------
    def render(self, request: server.Request) -> int:
        d = defer.Deferred.fromCoroutine(self._dispatch(request))
        d.addCallbacks(lambda result: self._finish(request, *result), lambda f: self._fail(request, f))
        return server.NOT_DONE_YET

    def _finish(self, request: server.Request, status: int, body: Any, content_type: bytes = b"application/json") -> None:
        if request_gone(request):
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        data = body if isinstance(body, bytes) else json.dumps(body, indent=1).encode("utf-8") + b"\n"
        request.write(data)
        request.finish()

    def _fail(self, request: server.Request, failure: Any) -> None:
        status = status_of(failure.value)
        if status is not None:
            text = failure.value.text if isinstance(failure.value, HTTPError) else str(failure.value)
            self._finish(request, status, {"error": text})
        else:
            self.log.failure("HTTP API request failed", failure)
            self._finish(request, 500, {"error": f"internal error: {failure.getErrorMessage()} (see the server log)"})

    # -- routing -------------------------------------------------------------------
    async def _dispatch(self, request: server.Request) -> tuple[Any, ...]:
        method = request.method.decode("ascii")
        segments = [unquote(s.decode("utf-8")) for s in request.postpath if s]
        if segments[:1] == ["api"] and request.prepath[-1:] != [b"api"]:
            segments = segments[1:]  # handed the whole path by a root resource of its own
        route, rest = (segments[0] if segments else ""), segments[1:]
        args = {k.decode(): v[0].decode("utf-8") for k, v in request.args.items()}
        if route == "health" and method == "GET":
            return 200, {"status": "ok", "ports": self._ports(), "mailboxes": len(self.mailroom.mailboxes())}
        if route == "messages":
            return await self._messages(method, rest, args)
        if route == "users" and method == "POST":
            body = json_body(request)
            address, password = body.get("address"), body.get("password", "")
            if not isinstance(address, str) or not isinstance(password, str):
                raise HTTPError(400, 'body must be {"address": "...", "password": "..."}')
            await self.mailroom.add_user(address, password)
            return 201, {"address": address}
        if route == "domains" and method == "POST":
            domain = json_body(request).get("domain")
            if not isinstance(domain, str):
                raise HTTPError(400, 'body must be {"domain": "..."}')
            await self.mailroom.add_domain(domain)
            return 201, {"domain": domain}
        if route == "throttle" and method == "DELETE":
            self.mailroom.reset_throttle()
            return 200, {"throttle": "reset"}
        if route == "faults":
            return self._faults(method, request)
        if route == "wait" and method == "GET":
            return await self._wait(args)
        raise HTTPError(404 if method in ("GET", "POST", "DELETE") else 405, f"no route {method} /api/{'/'.join(segments)}")

    @staticmethod
    def _filters(args: dict[str, str]) -> dict[str, str | None]:
        return {keyword: args.get(name) for name, keyword in FILTERS.items()}

    async def _messages(self, method: str, rest: list[str], args: dict[str, str]) -> tuple[Any, ...]:
        if not rest:
            if method == "GET":
                found = await self.mailroom.messages(**self._filters(args))
                content = args.get("content", "") not in ("", "0", "false")
                return 200, {"messages": [summary(m, content) for m in found]}
            if method == "DELETE":
                return 200, {"deleted": await self.mailroom.purge()}
            raise HTTPError(405, "use GET or DELETE on /api/messages")
        attachment: int | None = None
        if len(rest) >= 5 and rest[-2] == "attachments" and rest[-1].isdigit():
            attachment, rest = int(rest[-1]), rest[:-2]
        raw = rest[-1] == "raw"
        message_id = "/".join(rest[:-1] if raw else rest)
        if method == "DELETE" and not raw and attachment is None:
            if not await self.mailroom.delete(message_id):
                raise HTTPError(404, f"no message {message_id}")
            return 200, {"deleted": 1}
        if method != "GET":
            raise HTTPError(405, "use GET or DELETE on a message")
        message = await self.mailroom.get(message_id)
        if message is None:
            raise HTTPError(404, f"no message {message_id}")
        if attachment is not None:
            from mailsuite.testing import mimeview

            data = mimeview.attachment_data(message.raw, attachment)
            if data is None:
                raise HTTPError(404, f"message {message_id} has no attachment {attachment}")
            return 200, data, message.view["attachments"][attachment]["content_type"].encode("ascii", "replace")
        return (200, message.raw, b"message/rfc822") if raw else (200, detail(message))

    def _faults(self, method: str, request: server.Request) -> tuple[Any, ...]:
        plan = self.context.faults
        if method == "GET":
            return 200, {"faults": [f.as_dict() for f in plan.pending()]}
        if method == "DELETE":
            plan.clear()
            return 200, {"faults": []}
        if method == "POST":
            body = json_body(request)
            allowed = {f.name for f in fields(Fault)}
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
            settle = min(float(args.get("settle", "0")), MAX_WAIT)
        except ValueError:
            raise HTTPError(400, "count must be an integer, timeout and settle numbers of seconds") from None
        content = args.get("content", "") not in ("", "0", "false")
        filters = self._filters(args)
        deadline = time.monotonic() + timeout
        full = True  # the first and the last look list every folder; the polls between see changes only
        while True:
            found = await self.mailroom.messages(**filters, full=full)
            if len(found) >= count:
                if settle > 0 and len(found) == count:  # wait a little longer: does another one come?
                    await task.deferLater(self.reactor, settle, lambda: None)
                    found = await self.mailroom.messages(**filters)
                return 200, {"messages": [summary(m, content) for m in found]}
            if time.monotonic() >= deadline:
                if not full:
                    full = True
                    continue
                return 408, {"error": f"fewer than {count} matching messages after {timeout}s", "messages": [summary(m, content) for m in found]}
            full = False
            await task.deferLater(self.reactor, 0.05, lambda: None)


    def _ports(self) -> dict[str, int]:
        service = self.context.root
        return service.bound_ports() if service is not None else {}


def api_resource(context: Any) -> resource.Resource:
    """The SITE entry for /api."""
    return CaptureAPI(context, context.reactor)


class SiteRoot(resource.Resource):
    """Hands each request to the resource of the longest matching :data:`SITE` prefix."""

    def __init__(self, parts: dict[tuple[str, ...], resource.Resource]) -> None:
        super().__init__()
        self.parts = sorted(parts.items(), key=lambda item: len(item[0]), reverse=True)

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802 - twisted.web API
        segments = [path.decode("utf-8", "replace"), *(s.decode("utf-8", "replace") for s in request.postpath)]
        for prefix, child in self.parts:
            if tuple(segments[: len(prefix)]) != prefix:
                continue
            if not prefix:  # the fallback sees the whole path
                request.postpath.insert(0, request.prepath.pop())
            for _ in prefix[1:]:
                request.prepath.append(request.postpath.pop(0))
            return child
        return resource.NoResource("not found: the API is under /api")

    def render(self, request: server.Request) -> bytes:
        return self.getChildWithDefault(b"", request).render(request)  # type: ignore[no-any-return]


def build_site(context: Any, parts: dict[tuple[str, ...], str] | None = None) -> server.Site:
    """The capture HTTP site with every :data:`SITE` part."""
    from mailsuite.service import _load

    children = {prefix: _load(target)(context) for prefix, target in (SITE if parts is None else parts).items()}
    site = server.Site(SiteRoot(children))
    site.displayTracebacks = False
    return site


def open_http_api(context: Any) -> Any:
    """A ``service.PARTS`` opener: the HTTP site when capture.http_enabled (also gives the server a fault plan)."""
    capture = context.config.capture
    if not capture.http_enabled:
        return None
    from mailsuite.service import ListenerService, endpoint_description

    if context.faults is None:
        context.faults = FaultPlan()
    description = endpoint_description(type(context.config.smtp)(address=capture.http_address, port=capture.http_port))
    context.http_api = ListenerService("http", context.reactor, description, build_site(context))
    return context.http_api
