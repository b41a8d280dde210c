"""A plain, JSON-friendly view of one stored message, for tests and the capture UI.

Shared by the client side (:class:`mailsuite.testing.mailroom.CapturedMessage`)
and the server side (the HTTP API, the web UI, the Mailpit-compatible API), so
every way of looking at captured mail agrees on what the text body, the HTML
body and the attachments of a message are.

Implementation notes:
- Parsing uses Python's ``email`` package with ``policy.default``; stored
  messages have CRLF line ends (RFC 5322 2.1), which are turned into ``\\n``
  first so decoded bodies have Python's line ends.
- Never raises on bad input: a header that cannot be decoded keeps its raw
  text, a part whose charset is unknown is decoded as UTF-8 with
  replacement characters, and a message that cannot be parsed at all becomes
  one text body holding the raw bytes.
- The text and HTML bodies are the ones ``EmailMessage.get_body`` picks
  (RFC 2046 5.1.4: the last alternative is preferred, inside multipart/related
  the start part).  Every other leaf part is an attachment, inline ones
  (a ``Content-ID`` for ``cid:`` references, RFC 2392) included; an attached
  message (message/rfc822, RFC 2046 5.2.1) is one attachment, not descended into.
- Envelope data (sender, recipients) is not in the message bytes; callers add
  it from the store.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import re
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

__all__ = ["view", "attachment_data", "find_links", "parse"]

_PARSER = BytesParser(policy=email.policy.default)

#: Address headers given as parsed lists under "addresses".
ADDRESS_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "reply_to": "Reply-To", "sender": "Sender"}

#: URLs in plain text: a scheme we follow, then anything up to white space or a delimiter.
_URL = re.compile(r"""(?:https?://|mailto:|ftp://|www\.)[^\s<>"'`]+""", re.IGNORECASE)
_TRAILING = ".,;:!?'\"*"
_SNIPPET_LENGTH = 250


def parse(raw: bytes) -> EmailMessage:
    """The message parsed with ``policy.default`` (CRLF turned into ``\\n`` first)."""
    return _PARSER.parsebytes(raw.replace(b"\r\n", b"\n"))  # type: ignore[return-value]


def _header_text(value: Any) -> str:
    """A header value decoded (RFC 2047 encoded words), or its raw text if that fails."""
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a malformed header must not break the view
        return repr(value)
    if "=?" in text:  # encoded words the policy left alone (a raw value from the fallback path)
        try:
            return str(make_header(decode_header(text)))
        except Exception:  # noqa: BLE001
            pass
    return text


def _headers(message: Message) -> list[list[str]]:
    out: list[list[str]] = []
    try:
        items = list(message.raw_items())
    except Exception:  # noqa: BLE001
        return out
    for name, value in items:
        try:
            decoded = _header_text(message.policy.header_fetch_parse(name, value))
        except Exception:  # noqa: BLE001 - e.g. an address header the parser chokes on
            decoded = _header_text(value)
        out.append([name, decoded])
    return out


def _addresses(headers: list[list[str]], name: str) -> list[dict[str, str]]:
    values = [v for n, v in headers if n.lower() == name.lower()]
    try:
        return [{"name": n, "address": a} for n, a in email.utils.getaddresses(values) if a or n]
    except Exception:  # noqa: BLE001
        return []


def _first(headers: list[list[str]], name: str) -> str | None:
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def _iso_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _payload_bytes(part: Message) -> bytes:
    """The decoded bytes of a leaf part (Content-Transfer-Encoding undone), or of an attached message."""
    try:
        if part.get_content_maintype() == "message" or part.is_multipart():
            inner = part.get_payload()
            if isinstance(inner, list) and len(inner) == 1 and part.get_content_maintype() == "message":
                inner = inner[0]
            if isinstance(inner, Message):
                return inner.as_bytes(policy=email.policy.default.clone(linesep="\r\n"))
            if isinstance(inner, list):
                return b"".join(p.as_bytes() for p in inner if isinstance(p, Message))
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload
        raw = part.get_payload()
        return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    except Exception:  # noqa: BLE001
        try:
            raw = part.get_payload()
            return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""
        except Exception:  # noqa: BLE001
            return b""


def _text(part: Message) -> str:
    """A text part decoded with its charset; UTF-8 with replacements when that fails."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # noqa: BLE001 - unknown charset, bad transfer encoding...
        pass
    data = _payload_bytes(part)
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return data.decode(charset, "replace")
    except (LookupError, TypeError, ValueError):
        return data.decode("utf-8", "replace")


def _leaves(part: Message) -> list[Message]:
    """Leaf parts in order, an attached message counting as one leaf."""
    try:
        if part.get_content_maintype() == "message" and part.get_content_subtype() in ("rfc822", "global"):
            return [part]
        if part.is_multipart():
            out: list[Message] = []
            for sub in part.get_payload():  # type: ignore[union-attr]
                if isinstance(sub, Message):
                    out.extend(_leaves(sub))
            return out
    except Exception:  # noqa: BLE001
        pass
    return [part]


def _body(message: EmailMessage, kind: str) -> Message | None:
    try:
        return message.get_body(preferencelist=(kind,))
    except Exception:  # noqa: BLE001
        return None


def _content_id(part: Message) -> str | None:
    value = part.get("Content-ID")
    if value is None:
        return None
    text = _header_text(value).strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text or None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    if name is None and part.get_content_maintype() == "message":
        return None
    return _header_text(name) if name is not None else None


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001
        return None


class _Hrefs(HTMLParser):
    """Collects href targets of <a> and <area> in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            for name, value in attrs:
                if name == "href" and value and value.strip() and not value.strip().startswith("#"):
                    self.links.append(value.strip())


def _text_urls(text: str) -> list[str]:
    out = []
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        # A closing bracket ends the URL unless the URL opened one itself: "(see http://x/a_(b))".
        while url and url[-1] in ")]}" and url.count(url[-1]) > url.count({")": "(", "]": "[", "}": "{"}[url[-1]]):
            url = url[:-1].rstrip(_TRAILING)
        if url:
            out.append(url)
    return out


def find_links(text: str | None = None, html: str | None = None) -> list[str]:
    """Links in a text body (URLs) and an HTML body (href of a/area), in order, without repeats."""
    found: list[str] = []
    if html:
        parser = _Hrefs()
        try:
            parser.feed(html)
            parser.close()
        except Exception:  # noqa: BLE001
            pass
        found += parser.links
    if text:
        found += _text_urls(text)
    return list(dict.fromkeys(found))


def _snippet(text: str | None, html: str | None) -> str:
    source = text
    if source is None and html is not None:
        source = re.sub(r"(?is)<(script|style)\b.*?</\1>|<[^>]*>", " ", html)
        try:
            import html as html_module

            source = html_module.unescape(source)
        except Exception:  # noqa: BLE001
            pass
    words = " ".join((source or "").split())
    return words[:_SNIPPET_LENGTH]


def _parts(raw: bytes) -> tuple[EmailMessage | None, Message | None, Message | None, list[Message]]:
    try:
        message = parse(raw)
    except Exception:  # noqa: BLE001
        return None, None, None, []
    text_part, html_part = _body(message, "plain"), _body(message, "html")
    chosen = {id(p) for p in (text_part, html_part) if p is not None}
    leaves = _leaves(message)
    if leaves == [message]:  # a one-part message: an attachment only if it is not text
        return message, text_part, html_part, [message] if not chosen and _is_attachment_root(message) else []
    return message, text_part, html_part, [p for p in leaves if id(p) not in chosen]


def _is_attachment_root(part: Message) -> bool:
    """A one-part message whose only part is not text (e.g. Content-Type: application/pdf) is an attachment."""
    try:
        return part.get_content_maintype() not in ("text", "multipart")
    except Exception:  # noqa: BLE001
        return False


def view(raw: bytes, *, with_content: bool = False) -> dict[str, Any]:
    """The message as plain data.

    Keys: ``headers`` (``[[name, decoded value], ...]`` in order, repeats kept),
    ``subject``, ``from``, ``to``, ``cc``, ``date``, ``message_id`` (decoded
    header text or None), ``date_iso`` (ISO 8601 or None), ``addresses``
    (``{"from"|"to"|"cc"|"bcc"|"reply_to"|"sender": [{"name", "address"}]}``),
    ``text`` and ``html`` (decoded bodies or None), ``attachments`` (list of
    ``{"index", "filename", "content_type", "size", "content_id",
    "disposition", "inline"}``; with ``with_content`` also
    ``"content_base64"``), ``links``, ``snippet`` (first words of the text),
    ``size`` (bytes stored) and ``defects`` (parser complaints, as text).
    ``attachment_data(raw, index)`` returns an attachment's bytes.
    """
    message, text_part, html_part, parts = _parts(raw)
    if message is None:
        text = raw.decode("utf-8", "replace")
        return {
            "headers": [], "subject": None, "from": None, "to": None, "cc": None, "date": None, "date_iso": None,
            "message_id": None, "addresses": {k: [] for k in ADDRESS_HEADERS}, "text": text, "html": None,
            "attachments": [], "links": find_links(text, None), "snippet": _snippet(text, None), "size": len(raw),
            "defects": ["message could not be parsed"],
        }
    headers = _headers(message)
    text = _text(text_part) if text_part is not None else None
    html = _text(html_part) if html_part is not None else None
    if text is None and html is None and not parts and not message.is_multipart():
        text = _text(message)
    attachments = []
    for index, part in enumerate(parts):
        data = _payload_bytes(part)
        disposition = _disposition(part)
        content_id = _content_id(part)
        item: dict[str, Any] = {
            "index": index,
            "filename": _filename(part),
            "content_type": _safe_content_type(part),
            "size": len(data),
            "content_id": content_id,
            "disposition": disposition,
            "inline": disposition == "inline" or (disposition is None and content_id is not None),
        }
        if with_content:
            item["content_base64"] = base64.b64encode(data).decode("ascii")
        attachments.append(item)
    defects = []
    try:
        for part in [message, *message.walk()]:
            defects += [type(d).__name__ + (f": {d}" if str(d) else "") for d in getattr(part, "defects", [])]
    except Exception:  # noqa: BLE001
        pass
    date = _first(headers, "Date")
    return {
        "headers": headers,
        "subject": _first(headers, "Subject"),
        "from": _first(headers, "From"),
        "to": _first(headers, "To"),
        "cc": _first(headers, "Cc"),
        "date": date,
        "date_iso": _iso_date(date),
        "message_id": _first(headers, "Message-ID"),
        "addresses": {key: _addresses(headers, name) for key, name in ADDRESS_HEADERS.items()},
        "text": text,
        "html": html,
        "attachments": attachments,
        "links": find_links(text, html),
        "snippet": _snippet(text, html),
        "size": len(raw),
        "defects": list(dict.fromkeys(defects)),
    }


def _safe_content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001
        return "application/octet-stream"


def attachment_data(raw: bytes, index: int) -> bytes | None:
    """The decoded bytes of attachment ``index`` (as numbered by :func:`view`), None if there is none."""
    _message, _text_part, _html_part, parts = _parts(raw)
    if not 0 <= index < len(parts):
        return None
    return _payload_bytes(parts[index])
