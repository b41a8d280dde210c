"""A Mailpit-compatible HTTP API over the captured mail, for tests written against Mailpit.

Implementation notes:
- The routes, parameters and JSON shapes are Mailpit's API v1 (field names
  in Mailpit's capitalisation, lists never null) for the parts tests use, so
  Mailpit clients (the ``mailpit-api`` npm package, curl scripts) work
  unchanged against the capture server.  What a test fixture has no use for
  (tags, relay, chaos, HTML and link checks) is not offered: 404.
- Messages come from :class:`Catalogue`: one per SMTP transaction, IDs
  URL-safe; ``latest`` names the newest, as in Mailpit.
- Message bytes and attachments are answered with ``nosniff``, a
  ``sandbox`` Content-Security-Policy and (attachments) ``attachment``
  disposition: a captured HTML file opened from the web UI must not run as
  a page of this origin.
- ``/view/ID.html`` serves a message's HTML body for the UI's sandboxed
  iframe with a CSP allowing no script, no form, no frame, no plugin, and
  images, styles and fonts only from ``data:`` (``cid:`` parts are inlined
  as ``data:`` URIs), unless ``?remote=1`` also allows http(s) for them.

Routes (all under the capture HTTP listener):
  GET    /api/v1/info                       totals
  GET    /api/v1/messages?start=&limit=     summaries, newest first
  PUT    /api/v1/messages                   {"IDs": [...], "Read": bool} (all when no IDs)
  DELETE /api/v1/messages                   {"IDs": [...]} or everything
  GET    /api/v1/search?query=&start=&limit=
  DELETE /api/v1/search?query=
  GET    /api/v1/message/ID                 the message (Text, HTML, Attachments...); marks it read
  GET    /api/v1/message/ID/headers         {"Name": ["value", ...]}
  GET    /api/v1/message/ID/raw             the bytes (text/plain)
  GET    /api/v1/message/ID/part/PARTID     an attachment's bytes
  GET    /view/ID.html  /view/ID.txt        the HTML or text body alone
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import urllib.parse
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

import mailsuite
from mailsuite.testing.http import HTTPError, json_body
from mailsuite.testing import mimeview
from mailsuite.testing.catalogue import Catalogue, Entry, matcher

#: Mailpit's default page size.
DEFAULT_LIMIT = 50

#: Mailpit-style content security for message bytes served from this origin.
_BYTES_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"content-security-policy": b"sandbox; default-src 'none'",
    b"referrer-policy": b"no-referrer",
}

_FRAME_CSP_BASE = ("default-src 'none'; script-src 'none'; object-src 'none'; frame-src 'none'; form-action 'none'; "
                   "base-uri 'none'; connect-src 'none'; media-src data:; ")
#: The HTML body's CSP: nothing leaves the machine (remote images are how senders track opens).
FRAME_CSP = _FRAME_CSP_BASE + "img-src data:; style-src 'unsafe-inline' data:; font-src data:"
#: With ?remote=1, after the user asked for remote content.
FRAME_CSP_REMOTE = _FRAME_CSP_BASE + "img-src data: http: https:; style-src 'unsafe-inline' data: http: https:; font-src data: http: https:"


def _iso(when: datetime.datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Mailpit's clients expect."""
    return when.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _address(item: dict[str, str]) -> dict[str, str]:
    return {"Name": item["name"], "Address": item["address"]}


def _addresses(entry: Entry, key: str) -> list[dict[str, str]]:
    return [_address(a) for a in entry.view["addresses"][key]]


def _message_id(entry: Entry) -> str:
    value = (entry.view.get("message_id") or "").strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def _from(entry: Entry) -> dict[str, str] | None:
    found = entry.view["addresses"]["from"]
    return _address(found[0]) if found else None


def _bcc(entry: Entry) -> list[dict[str, str]]:
    return _addresses(entry, "bcc") + [{"Name": "", "Address": a} for a in entry.bcc()]


def summary(entry: Entry, read: set[str]) -> dict[str, Any]:
    """Mailpit's MessageSummary (a list item)."""
    return {
        "ID": entry.id,
        "MessageID": _message_id(entry),
        "Read": entry.id in read,
        "From": _from(entry),
        "To": _addresses(entry, "to"),
        "Cc": _addresses(entry, "cc"),
        "Bcc": _bcc(entry),
        "ReplyTo": _addresses(entry, "reply_to"),
        "Subject": entry.view.get("subject") or "",
        "Created": _iso(entry.created),
        "Username": "",
        "Tags": [],
        "Size": len(entry.raw),
        "Attachments": len(entry.attachments()),
        "Snippet": entry.view.get("snippet") or "",
    }


def _attachment(entry: Entry, item: dict[str, Any]) -> dict[str, Any]:
    data = mimeview.attachment_data(entry.raw, item["index"]) or b""
    return {
        "PartID": str(item["index"]),
        "FileName": item["filename"] or "",
        "ContentType": item["content_type"],
        "ContentID": item["content_id"] or "",
        "Size": item["size"],
        "Checksums": {"MD5": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),  # noqa: S324 - checksums, not security
                      "SHA256": hashlib.sha256(data).hexdigest()},
    }


def _header_values(entry: Entry, name: str) -> list[str]:
    return [v for n, v in entry.view["headers"] if n.lower() == name.lower()]


def message(entry: Entry) -> dict[str, Any]:
    """Mailpit's Message (GET /api/v1/message/ID)."""
    view = entry.view
    date = datetime.datetime.fromisoformat(view["date_iso"]) if view.get("date_iso") else entry.created
    unsubscribe = (_header_values(entry, "List-Unsubscribe") or [""])[0]
    return {
        "ID": entry.id,
        "MessageID": _message_id(entry),
        "From": _from(entry),
        "To": _addresses(entry, "to"),
        "Cc": _addresses(entry, "cc"),
        "Bcc": _bcc(entry),
        "ReplyTo": _addresses(entry, "reply_to"),
        "ReturnPath": entry.sender,
        "Subject": view.get("subject") or "",
        "ListUnsubscribe": {"Header": unsubscribe, "Links": re.findall(r"<([^>]*)>", unsubscribe), "Errors": "",
                            "HeaderPost": (_header_values(entry, "List-Unsubscribe-Post") or [""])[0]},
        "Date": _iso(date),
        "Tags": [],
        "Username": "",
        "Text": view.get("text") or "",
        "HTML": view.get("html") or "",
        "Size": len(entry.raw),
        "Inline": [_attachment(entry, a) for a in entry.inline()],
        "Attachments": [_attachment(entry, a) for a in entry.attachments()],
    }


def _inline_cids(entry: Entry, html: str) -> str:
    """``cid:`` references (RFC 2392) replaced by data: URIs of the parts they name."""
    parts = {a["content_id"]: a for a in entry.view["attachments"] if a["content_id"]}
    if not parts or "cid:" not in html.lower():
        return html

    def replace(match: re.Match[str]) -> str:
        item = parts.get(urllib.parse.unquote(match.group(1)))
        if item is None:
            return match.group(0)
        data = mimeview.attachment_data(entry.raw, item["index"]) or b""
        return f"data:{item['content_type']};base64,{base64.b64encode(data).decode('ascii')}"

    return re.sub(r"""cid:([^"'\s)>]+)""", replace, html, flags=re.IGNORECASE)


def frame_document(entry: Entry) -> bytes:
    """The HTML body as a document for the sandboxed iframe: links open outside, no referrer."""
    html = _inline_cids(entry, entry.view.get("html") or "")
    head = '<meta charset="utf-8"><meta name="referrer" content="no-referrer"><base target="_blank">'
    return (head + html).encode("utf-8")


class MailpitAPI(resource.Resource):
    """One leaf resource answering /api/v1/... and /view/... (Mailpit's paths)."""

    isLeaf = True
    log = Logger()

    def __init__(self, catalogue: Catalogue) -> None:
        super().__init__()
        self.catalogue = catalogue

    def render(self, request: server.Request) -> int:
        # notifyFinish fails when the client hangs up first: then nothing may be written.
        request.notifyFinish().addErrback(lambda _: setattr(request, "mailsuite_gone", True))
        d = defer.Deferred.fromCoroutine(self._dispatch(request))
        d.addCallbacks(lambda result: self._finish(request, *result), lambda f: self._fail(request, f))
        return server.NOT_DONE_YET

    def _finish(self, request: server.Request, status: int, body: Any, content_type: bytes = b"application/json",
                headers: dict[bytes, bytes] | None = None) -> None:
        if request.finished or getattr(request, "mailsuite_gone", False):
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        if isinstance(body, str):
            body = body.encode("utf-8")
        request.write(body if isinstance(body, bytes) else json.dumps(body).encode("utf-8"))
        request.finish()

    def _fail(self, request: server.Request, failure: Any) -> None:
        error = failure.value
        if isinstance(error, HTTPError):
            self._finish(request, error.status, error.text + "\n", b"text/plain; charset=utf-8")
        else:
            self.log.failure("Mailpit API request failed", failure)
            self._finish(request, 500, "internal error (see the server log)\n", b"text/plain; charset=utf-8")

    async def _dispatch(self, request: server.Request) -> tuple[Any, ...]:
        method = request.method.decode("ascii")
        # The whole path, wherever the site root cut it (it serves this resource under /api/v1 and /view).
        path = [urllib.parse.unquote(s.decode("utf-8")) for s in [*request.prepath, *request.postpath] if s]
        args = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        if path[:1] == ["view"] and len(path) == 2 and method == "GET":
            return await self._view(path[1], args)
        route = path[2:]  # after "api", "v1"
        if route == ["info"] and method == "GET":
            return await self._info()
        if route == ["messages"]:
            return await self._messages(method, request, args)
        if route == ["search"]:
            return await self._search(method, args)
        if len(route) >= 2 and route[0] == "message" and method == "GET":
            return await self._message(route[1], route[2:])
        raise HTTPError(404 if method in ("GET", "PUT", "DELETE") else 405, f"no route {method} /{'/'.join(path)}")

    # -- listings -----------------------------------------------------------------
    @staticmethod
    def _page(args: dict[str, str]) -> tuple[int, int]:
        try:
            start = max(int(args.get("start") or 0), 0)
            limit = int(args.get("limit") or DEFAULT_LIMIT)
        except ValueError:
            raise HTTPError(400, "start and limit must be integers") from None
        return start, (DEFAULT_LIMIT if limit <= 0 else limit)

    def _listing(self, every: list[Entry], matches: list[Entry], args: dict[str, str]) -> dict[str, Any]:
        start, limit = self._page(args)
        read = self.catalogue.read
        page = matches[start:start + limit]
        return {
            "total": len(every),
            "unread": sum(e.id not in read for e in every),
            "count": len(page),
            "messages_count": len(matches),
            "messages_unread": sum(e.id not in read for e in matches),
            "start": start,
            "tags": [],
            "messages": [summary(e, read) for e in page],
        }

    async def _info(self) -> tuple[Any, ...]:
        entries = await self.catalogue.entries()
        return 200, {
            "Version": f"mailsuite {mailsuite.__version__}", "LatestVersion": "", "Database": "", "DatabaseSize": 0,
            "Messages": len(entries), "Unread": sum(e.id not in self.catalogue.read for e in entries), "Tags": {},
            "RuntimeStats": {"Memory": 0, "MessagesDeleted": 0, "SMTPAccepted": 0, "SMTPAcceptedSize": 0,
                             "SMTPIgnored": 0, "SMTPRejected": 0, "Uptime": 0},
        }

    async def _messages(self, method: str, request: server.Request, args: dict[str, str]) -> tuple[Any, ...]:
        entries = await self.catalogue.entries()
        if method == "GET":
            return 200, self._listing(entries, entries, args)
        body = json_body(request)
        ids = body.get("IDs") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HTTPError(400, 'IDs must be a list of message IDs')
        chosen = [e for e in entries if e.id in set(ids)] if ids else entries
        if method == "DELETE":
            if ids:
                await self.catalogue.delete(chosen)
            else:
                await self.catalogue.purge()
            return 200, "ok", b"text/plain; charset=utf-8"
        if method == "PUT":
            if body.get("Search"):
                test = matcher(str(body["Search"]), self.catalogue.read)
                chosen = [e for e in chosen if test(e)]
            for entry in chosen:
                if body.get("Read"):
                    self.catalogue.read.add(entry.id)
                else:
                    self.catalogue.read.discard(entry.id)
            return 200, "ok", b"text/plain; charset=utf-8"
        raise HTTPError(405, "use GET, PUT or DELETE on /api/v1/messages")

    async def _search(self, method: str, args: dict[str, str]) -> tuple[Any, ...]:
        query = args.get("query", "").strip()
        if not query:
            raise HTTPError(400, "no search query")
        entries = await self.catalogue.entries()
        test = matcher(query, self.catalogue.read)
        matches = [e for e in entries if test(e)]
        if method == "GET":
            return 200, self._listing(entries, matches, args)
        if method == "DELETE":
            await self.catalogue.delete(matches)
            return 200, "ok", b"text/plain; charset=utf-8"
        raise HTTPError(405, "use GET or DELETE on /api/v1/search")

    # -- one message --------------------------------------------------------------
    async def _entry(self, entry_id: str) -> Entry:
        entry = await self.catalogue.find(entry_id)
        if entry is None:
            raise HTTPError(404, "Not found")
        return entry

    async def _message(self, entry_id: str, rest: list[str]) -> tuple[Any, ...]:
        entry = await self._entry(entry_id)
        if not rest:
            self.catalogue.read.add(entry.id)
            return 200, message(entry)
        if rest == ["headers"]:
            headers: dict[str, list[str]] = {}
            for name, value in entry.view["headers"]:
                headers.setdefault(name, []).append(value)
            return 200, headers
        if rest == ["raw"]:
            return 200, entry.raw, b"text/plain; charset=utf-8", _BYTES_HEADERS
        if len(rest) == 2 and rest[0] == "part":
            for item in entry.view["attachments"]:
                if str(item["index"]) == rest[1]:
                    data = mimeview.attachment_data(entry.raw, item["index"]) or b""
                    name = item["filename"] or f"part-{item['index']}"
                    disposition = f"attachment; filename*=UTF-8''{urllib.parse.quote(name, safe='')}".encode("ascii")
                    return 200, data, item["content_type"].encode("ascii", "replace"), {**_BYTES_HEADERS, b"content-disposition": disposition}
            raise HTTPError(404, "Not found")
        raise HTTPError(404, "Not found")

    async def _view(self, name: str, args: dict[str, str]) -> tuple[Any, ...]:
        stem, dot, kind = name.rpartition(".")
        if not dot or kind not in ("html", "txt"):
            raise HTTPError(404, "Not found")
        entry = await self._entry(stem)
        if kind == "txt":
            return 200, entry.view.get("text") or "", b"text/plain; charset=utf-8", _BYTES_HEADERS
        csp = FRAME_CSP_REMOTE if args.get("remote") == "1" else FRAME_CSP
        return 200, frame_document(entry), b"text/html; charset=utf-8", {
            b"content-security-policy": csp.encode("ascii"), b"x-content-type-options": b"nosniff",
            b"referrer-policy": b"no-referrer", b"x-frame-options": b"SAMEORIGIN"}



def api_v1_resource(context: Any) -> MailpitAPI:
    """The api.SITE entry for /api/v1."""
    return MailpitAPI(Catalogue(context))


def view_resource(context: Any) -> MailpitAPI:
    """The api.SITE entry for /view (its catalogue's read state is never used: views do not mark read)."""
    return MailpitAPI(Catalogue(context))
