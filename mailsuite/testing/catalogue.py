"""Captured mail as Mailpit shows it: one entry per received message, newest first.

Shared by the Mailpit-compatible API (mailpit.py) and the web UI (webui.py),
so both list, find, search and delete the same messages the same way.

Implementation notes:
- The store keeps one copy per recipient mailbox; Mailpit keeps one message
  per SMTP transaction.  Copies of one transaction are the same bytes except
  for the ``Delivered-To`` line the store puts on top, so an entry groups the
  copies whose bytes without those lines are equal (at most one copy per
  mailbox and folder: two identical APPENDs to one folder stay two entries).
  Its ID is a digest of those bytes: stable across listings, URL-safe (the
  store's ``mailbox/folder/uid`` ids have ``/`` and ``@``), and deleting an
  entry deletes every copy.
- Envelope recipients are the copies' mailboxes; those not named in To or Cc
  are the Bcc recipients (as Mailpit reports them).
- "Created" is the date of the topmost Received header (ours, RFC 5321
  4.4), refined to the millisecond from its queue id when that id starts with
  the millisecond clock (smtp/headers.new_id); else the Date header.
- "Read" lives in memory only: viewing a message in the UI or through the
  API must not set ``\\Seen`` in the store, which IMAP and POP3 clients
  under test would see.
- Listing goes through the context's one Mailroom index (mailroom_for),
  shared with the JSON API and the fixture: files are read once, and each
  copy's parsed view (mimeview) is made once, when first asked for.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import re
import shlex
import weakref
from dataclasses import dataclass, field
from typing import Any

from mailsuite.testing.mailroom import CapturedMessage, mailroom_for

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_QUEUE_ID = re.compile(r"\bwith \S+ id ([0-9a-f]{11})[0-9a-z]*\b", re.IGNORECASE)


@dataclass
class Entry:
    """One received message: its copies in the store and its parsed view."""

    id: str
    raw: bytes  # the transaction's bytes (Return-Path kept, Delivered-To lines removed)
    view: dict[str, Any]
    created: datetime.datetime
    copies: list[CapturedMessage] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients: the mailboxes holding a copy, in the store's order."""
        return list(dict.fromkeys(c.mailbox for c in self.copies))

    @property
    def sender(self) -> str:
        return self.copies[0].sender if self.copies else ""

    def bcc(self) -> list[str]:
        """Envelope recipients named in neither To nor Cc."""
        named = {a["address"].lower() for key in ("to", "cc") for a in self.view["addresses"][key]}
        return [r for r in self.recipients if r.lower() not in named]

    def attachments(self) -> list[dict[str, Any]]:
        return [a for a in self.view["attachments"] if not a["inline"]]

    def inline(self) -> list[dict[str, Any]]:
        return [a for a in self.view["attachments"] if a["inline"]]


def _transaction_bytes(raw: bytes) -> bytes:
    """The stored bytes without the per-copy ``Delivered-To`` lines at the top."""
    lines = raw.split(b"\r\n", 8)
    kept = []
    for i, line in enumerate(lines[:-1]):
        low = line[:14].lower()
        if low.startswith(b"delivered-to:"):
            continue
        if not low.startswith(b"return-path:"):
            return b"\r\n".join(kept + lines[i:])
        kept.append(line)
    return b"\r\n".join(kept + lines[-1:])


def _created(view: dict[str, Any]) -> datetime.datetime:
    for name, value in view["headers"]:
        if name.lower() == "received":
            when = _parse_date(value.rpartition(";")[2])
            if when is None:
                break
            match = _QUEUE_ID.search(" ".join(value.split()))
            if match:
                precise = datetime.datetime.fromtimestamp(int(match.group(1), 16) / 1000, datetime.timezone.utc)
                if datetime.timedelta(0) <= precise - when < datetime.timedelta(seconds=1):
                    return precise
            return when
    return _parse_date(view.get("date")) or _EPOCH


def _parse_date(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)


class Catalogue:
    """Lists, finds, searches and deletes captured mail as Mailpit entries."""

    def __init__(self, context: Any) -> None:
        self.mailroom = mailroom_for(context)
        self.read: set[str] = set()
        # The index keeps one CapturedMessage object per stored copy: its transaction bytes and digest are made once.
        self._digests: weakref.WeakKeyDictionary[CapturedMessage, tuple[bytes, str]] = weakref.WeakKeyDictionary()

    def _digest(self, copy: CapturedMessage) -> tuple[bytes, str]:
        found = self._digests.get(copy)
        if found is None:
            raw = _transaction_bytes(copy.raw)
            found = self._digests[copy] = (raw, hashlib.sha256(raw).hexdigest())
        return found

    @staticmethod
    def _view(copy: CapturedMessage) -> dict[str, Any]:
        """The copy's parsed view without its own Delivered-To line (the entry stands for every copy)."""
        view = dict(copy.view)
        view["headers"] = [h for h in view["headers"] if h[0].lower() != "delivered-to"]
        return view

    async def entries(self) -> list[Entry]:
        """Every message, newest first."""
        copies = await self.mailroom.messages()
        groups: dict[str, list[Entry]] = {}
        order: list[Entry] = []
        for copy in copies:
            raw, digest = self._digest(copy)
            for entry in groups.setdefault(digest, []):
                if all((c.mailbox, c.folder) != (copy.mailbox, copy.folder) for c in entry.copies):
                    entry.copies.append(copy)
                    break
            else:
                n = len(groups[digest])
                view = self._view(copy)
                entry = Entry(digest[:22] + (f"-{n}" if n else ""), raw, view, _created(view), [copy])
                groups[digest].append(entry)
                order.append(entry)
        # Later in the index's arrival order is newer when the clock cannot tell.
        order.sort(key=lambda e: (e.created, max(c.seq for c in e.copies)), reverse=True)
        present = {e.id for e in order}
        self.read &= present
        return order

    async def find(self, entry_id: str) -> Entry | None:
        """One message by ID; ``latest`` is the newest (as in Mailpit)."""
        entries = await self.entries()
        if entry_id == "latest":
            return entries[0] if entries else None
        for entry in entries:
            if entry.id == entry_id:
                return entry
        return None

    async def delete(self, entries: list[Entry]) -> int:
        """Delete every copy of these messages; returns how many messages went."""
        gone = 0
        for entry in entries:
            removed = [await self.mailroom.delete(c.id) for c in entry.copies]
            gone += any(removed)
            self.read.discard(entry.id)
        return gone

    async def purge(self) -> int:
        """Delete every message."""
        self.read.clear()
        return await self.mailroom.purge()


# -- Mailpit's search syntax (https://mailpit.axllent.org/docs/usage/search-filters/) --------

def _terms(query: str) -> list[str]:
    """Words of a query; double-quoted phrases stay one word (quotes removed)."""
    try:
        lexer = shlex.shlex(query, posix=True)
        lexer.whitespace_split = True
        lexer.quotes = '"'
        lexer.escape = ""
        return list(lexer)
    except ValueError:  # an unbalanced quote: plain split, quotes dropped
        return query.replace('"', " ").split()


def _addresses_text(entry: Entry, *keys: str) -> str:
    parts = []
    for key in keys:
        for a in entry.view["addresses"].get(key, []):
            parts.append(f"{a['name']} <{a['address']}>")
        if key == "bcc":
            parts += entry.bcc()
    return " ".join(parts).lower()


def _search_text(entry: Entry) -> str:
    view = entry.view
    parts = [view.get("subject") or "", view.get("message_id") or "", _addresses_text(entry, "from", "to", "cc", "bcc", "reply_to"),
             view.get("text") or "", view.get("snippet") or "", " ".join(a["filename"] or "" for a in view["attachments"])]
    if view.get("html"):
        parts.append(re.sub(r"<[^>]*>", " ", view["html"]))
    return " ".join(parts).lower()


def _size_bytes(text: str) -> int | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s?(k|kb|m|mb)?", text.lower())
    if not match:
        return None
    scale = {None: 1, "k": 1024, "kb": 1024, "m": 1024 * 1024, "mb": 1024 * 1024}[match.group(2)]
    return int(float(match.group(1)) * scale)


def matcher(query: str, read: set[str]) -> Any:
    """A predicate over entries for a Mailpit search query.

    Every term must hold.  ``to:`` ``from:`` ``cc:`` ``bcc:`` ``reply-to:``
    ``addressed:`` ``subject:`` ``message-id:`` match substrings (case-insensitive),
    ``is:read`` ``is:unread`` ``has:attachment`` ``has:inline`` ``larger:`` ``smaller:``
    what they say; any other word is looked for in the subject, addresses and
    bodies.  A leading ``-`` or ``!`` negates a term; quotes group a phrase.
    """
    tests = []
    for word in _terms(query):
        exclude = len(word) > 1 and word[0] in "-!"
        if exclude:
            word = word[1:]
        if not re.search(r"[A-Za-z0-9]", word):
            continue
        low = word.lower()
        prefix, _, value = low.partition(":")
        test: Any
        fields = {"to": ("to",), "from": ("from",), "cc": ("cc",), "bcc": ("bcc",), "reply-to": ("reply_to",),
                  "addressed": ("to", "from", "cc", "bcc", "reply_to")}
        if value and prefix in fields:
            test = (lambda keys, v: lambda e: v in _addresses_text(e, *keys))(fields[prefix], value)
        elif value and prefix == "subject":
            test = (lambda v: lambda e: v in (e.view.get("subject") or "").lower())(value)
        elif value and prefix == "message-id":
            test = (lambda v: lambda e: v in (e.view.get("message_id") or "").lower())(value)
        elif low in ("is:read", "is:unread"):
            test = (lambda want: lambda e: (e.id in read) == want)(low == "is:read")
        elif low in ("has:attachment", "has:attachments"):
            test = lambda e: bool(e.attachments())  # noqa: E731
        elif low in ("has:inline", "has:inlines"):
            test = lambda e: bool(e.inline())  # noqa: E731
        elif prefix in ("larger", "smaller") and _size_bytes(value) is not None:
            size = _size_bytes(value)
            test = (lambda s: lambda e: len(e.raw) > s)(size) if prefix == "larger" else (lambda s: lambda e: len(e.raw) < s)(size)
        else:
            test = (lambda v: lambda e: v in _search_text(e))(low)
        tests.append((lambda t, x: lambda e: t(e) != x)(test, exclude))
    return lambda entry: all(t(entry) for t in tests)
