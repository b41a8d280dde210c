"""SEARCH criteria (RFC 3501 6.4.4, RFC 7162 3.1.5): parse into a tree, evaluate per message.

Public API:

* ``parse_search(data: bytes) -> Query``: ``[CHARSET x SP] key *(SP key)``
  exactly as it follows ``SEARCH `` in the command (literals in place, as
  :mod:`mailsuite.imap.wire` describes).  Syntax errors raise
  :class:`wire.ParseError` (``BAD``); a charset other than UTF-8/US-ASCII
  raises :class:`BadCharset` (``NO [BADCHARSET (UTF-8 US-ASCII)]``, its
  ``code`` attribute).
* ``Query.key`` is the tree (:class:`Key` nodes, each with ``needs`` =
  "meta", "header" or "body"); ``Query.uses_modseq`` says whether the
  response must carry ``(MODSEQ n)``; ``Query.bind(resolve)`` turns the
  sequence sets into UID sets with the session's resolver, after which the
  key is independent of ``*`` (useful when evaluating in batches).
* ``SearchMessage(seq, info, recent, header, message)``: one message as the
  evaluator sees it; ``header`` and ``message`` are zero-argument callables
  returning the header block / the whole message as bytes, called only when
  a key needs them (at most once each).
* ``matches(query, message, *, last_seq, last_uid) -> bool``.
* Compatibility with ``search_fallback`` (the server's stand-in):
  ``parse(args, resolve) -> Query`` (``args`` has ``data``/``pos``) and
  ``evaluate(query, candidates, opener) -> [(seq, uid, modseq)]``.

Implementation notes:

* Flag, size, date, UID, sequence and MODSEQ keys read only the
  :class:`MessageInfo`; header keys read only the header; BODY and TEXT the
  whole message.  AND groups test cheap keys first, so ``SEEN FROM x`` reads
  no header of an unseen message.
* Strings match as case-insensitive substrings (RFC 3501 6.4.4) after
  Unicode case folding.  Header values are matched unfolded with RFC 2047
  encoded words decoded (8-bit octets as UTF-8, else Latin-1); BODY and TEXT
  look at the text parts with their transfer encoding and charset undone,
  TEXT also at the headers (of the message and of encapsulated messages).
* HEADER with an empty string matches every message that has the field.
* BEFORE/ON/SINCE use the internal date's own calendar day; SENTBEFORE/
  SENTON/SENTSINCE the Date: header's day in its own zone ("disregarding
  time and timezone"); a message without a parsable Date: never matches
  those keys.
* ``$`` (SEARCHRES) is not supported and is a ParseError.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from mailsuite.imap import mime
from mailsuite.imap.wire import ParseError, Reader, SequenceSet

__all__ = [
    "BadCharset", "Key", "Query", "SearchMessage", "parse_search", "matches", "parse", "evaluate",
    "decode_header_text",
]

_NEEDS_ORDER = {"meta": 0, "header": 1, "body": 2}


class BadCharset(Exception):
    """CHARSET names something other than UTF-8 or US-ASCII (RFC 3501 6.4.4)."""

    code = "BADCHARSET (UTF-8 US-ASCII)"

    def __init__(self, charset: str) -> None:
        super().__init__(f"Unsupported charset {charset[:40]}")
        self.charset = charset


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")


def _bytes_to_text(data: bytes, charset: str = "utf-8") -> str:
    try:
        return data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")


def _decode_word(m: re.Match[bytes]) -> str:
    charset = m.group(1).decode("ascii", "replace").split("*", 1)[0]  # RFC 2231 5: charset*language
    kind = m.group(2).upper()
    payload = m.group(3)
    try:
        if kind == b"Q":
            raw = binascii.a2b_qp(payload.replace(b"_", b" "), header=True)
        else:
            raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return m.group(0).decode("latin-1")
    return _bytes_to_text(raw, charset)


def decode_header_text(value: bytes) -> str:
    """An unfolded header value as text: RFC 2047 encoded words decoded (the
    whitespace between adjacent ones dropped, RFC 2047 6.2), raw 8-bit as
    UTF-8 (Latin-1 if it is not valid UTF-8)."""
    if b"=?" not in value:
        return _bytes_to_text(value)
    value = _BETWEEN_WORDS.sub(rb"\1\2", value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        out.append(_bytes_to_text(value[pos : m.start()]))
        out.append(_decode_word(m))
        pos = m.end()
    out.append(_bytes_to_text(value[pos:]))
    return "".join(out)


def _fold(text: str) -> str:
    return text.casefold()


# ---------------------------------------------------------------------------
# The message as keys see it
# ---------------------------------------------------------------------------


@dataclass
class SearchMessage:
    """One message: cheap facts plus lazy access to its octets."""

    seq: int
    info: Any  # mailsuite.interfaces.MessageInfo
    recent: bool
    header: Callable[[], bytes]
    message: Callable[[], bytes]


class _Context:
    """Per-message caches so each file is read and each header parsed at most once."""

    __slots__ = ("msg", "last_seq", "last_uid", "_header", "_fields", "_message", "_bodies", "_text")

    def __init__(self, msg: SearchMessage, last_seq: int, last_uid: int) -> None:
        self.msg = msg
        self.last_seq = last_seq
        self.last_uid = last_uid
        self._header: bytes | None = None
        self._fields: dict[str, list[mime.Field]] | None = None
        self._message: bytes | None = None
        self._bodies: list[str] | None = None
        self._text: list[str] | None = None

    def header(self) -> bytes:
        if self._header is None:
            if self._message is not None:
                self._header = mime.read_header(self._message)
            else:
                self._header = self.msg.header()
        return self._header

    def fields(self) -> dict[str, list[mime.Field]]:
        """Fields by lower-cased name (values unfolded only when asked for)."""
        if self._fields is None:
            found: dict[str, list[mime.Field]] = {}
            for f in mime.split_fields(self.header()):
                if f.name:
                    found.setdefault(f.name, []).append(f)
            self._fields = found
        return self._fields

    def header_texts(self, name: str) -> list[str]:
        return [_fold(decode_header_text(f.value)) for f in self.fields().get(name, [])]

    def message(self) -> bytes:
        if self._message is None:
            self._message = self.msg.message()
        return self._message

    def bodies(self) -> list[str]:
        """Folded text of every text part (transfer encoding and charset undone)."""
        if self._bodies is None:
            data = self.message()
            root = mime.parse(data)
            texts = []
            for part in root.leaves():
                if part.media_type.lower() == b"text":
                    texts.append(_fold(mime.body_text(data, part)))
            self._bodies = texts
        return self._bodies

    def all_text(self) -> list[str]:
        """Headers (message and encapsulated messages) and bodies, for TEXT."""
        if self._text is None:
            data = self.message()
            root = mime.parse(data)
            texts = []
            headers = [root.fields]
            headers.extend(part.message.fields for _numbers, part in root.walk() if part.message is not None)
            for fields in headers:
                for f in fields:
                    texts.append(_fold(decode_header_text(unfolded_field(f.raw))))
            texts.extend(self.bodies())
            self._text = texts
        return self._text


def unfolded_field(raw: bytes) -> bytes:
    """A whole header field (name and value) on one line."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"").strip()


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


class Key:
    """A search key; ``needs`` is the most a test of it may read."""

    needs = "meta"

    def match(self, ctx: _Context) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        """Resolve sequence sets against the session's view (no-op for most keys)."""


@dataclass
class AllOf(Key):
    """Implicit AND of a key list or a parenthesised group (cheapest keys first)."""

    keys: list[Key]

    def __post_init__(self) -> None:
        self.keys.sort(key=lambda k: _NEEDS_ORDER[k.needs])
        self.needs = max((k.needs for k in self.keys), key=_NEEDS_ORDER.__getitem__, default="meta")

    def match(self, ctx: _Context) -> bool:
        for k in self.keys:
            if not k.match(ctx):
                return False
        return True

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        for k in self.keys:
            k.bind(resolve)


@dataclass
class AnyOf(Key):
    """OR (RFC 3501: exactly two keys)."""

    first: Key
    second: Key

    def __post_init__(self) -> None:
        self.needs = max(self.first.needs, self.second.needs, key=_NEEDS_ORDER.__getitem__)

    def match(self, ctx: _Context) -> bool:
        if _NEEDS_ORDER[self.second.needs] < _NEEDS_ORDER[self.first.needs]:
            return self.second.match(ctx) or self.first.match(ctx)
        return self.first.match(ctx) or self.second.match(ctx)

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        self.first.bind(resolve)
        self.second.bind(resolve)


@dataclass
class Not(Key):
    key: Key

    def __post_init__(self) -> None:
        self.needs = self.key.needs

    def match(self, ctx: _Context) -> bool:
        return not self.key.match(ctx)

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        self.key.bind(resolve)


@dataclass
class Everything(Key):
    def match(self, ctx: _Context) -> bool:
        return True


@dataclass
class Flag(Key):
    """A system flag or keyword present (or absent); keywords compare case-insensitively."""

    flag: str
    present: bool = True

    def __post_init__(self) -> None:
        self._system = self.flag.startswith("\\")
        self._lower = self.flag.lower()

    def match(self, ctx: _Context) -> bool:
        flags = ctx.msg.info.flags
        if self._system or self.flag in flags:
            return (self.flag in flags) == self.present
        wanted = self._lower
        return any(f.lower() == wanted for f in flags) == self.present


@dataclass
class Recent(Key):
    present: bool = True

    def match(self, ctx: _Context) -> bool:
        return ctx.msg.recent == self.present


@dataclass
class New(Key):
    """NEW = RECENT UNSEEN."""

    def match(self, ctx: _Context) -> bool:
        return ctx.msg.recent and "\\Seen" not in ctx.msg.info.flags


@dataclass
class Size(Key):
    """LARGER / SMALLER: RFC822.SIZE strictly above / below."""

    larger: bool
    octets: int

    def match(self, ctx: _Context) -> bool:
        size = ctx.msg.info.size
        return size > self.octets if self.larger else size < self.octets


def _compare(day: datetime.date, op: str, wanted: datetime.date) -> bool:
    if op == "BEFORE":
        return day < wanted
    if op == "ON":
        return day == wanted
    return day >= wanted  # SINCE


@dataclass
class InternalDate(Key):
    op: str  # BEFORE ON SINCE
    day: datetime.date

    def match(self, ctx: _Context) -> bool:
        # RFC 3501 6.4.4: "disregarding time and timezone": the stored date's own day
        return _compare(ctx.msg.info.internal_date.date(), self.op, self.day)


@dataclass
class SentDate(Key):
    op: str
    day: datetime.date
    needs = "header"

    def match(self, ctx: _Context) -> bool:
        values = ctx.fields().get("date")
        if not values:
            return False
        parsed = email.utils.parsedate_tz(values[-1].value.decode("latin-1"))
        if parsed is None:
            return False
        try:
            sent = datetime.date(parsed[0], parsed[1], parsed[2])
        except (ValueError, TypeError):
            return False
        return _compare(sent, self.op, self.day)


@dataclass
class HeaderContains(Key):
    """FROM/TO/CC/BCC/SUBJECT/HEADER: substring of a decoded value; "" = the field exists."""

    name: str  # lower-case field name
    needle: str  # folded
    needs = "header"

    def match(self, ctx: _Context) -> bool:
        if not self.needle:
            return self.name in ctx.fields()
        return any(self.needle in value for value in ctx.header_texts(self.name))


@dataclass
class BodyContains(Key):
    needle: str
    needs = "body"

    def match(self, ctx: _Context) -> bool:
        return any(self.needle in text for text in ctx.bodies())


@dataclass
class TextContains(Key):
    needle: str
    needs = "body"

    def match(self, ctx: _Context) -> bool:
        return any(self.needle in text for text in ctx.all_text())


@dataclass
class InSet(Key):
    """A sequence set of message numbers or (``uid``) UIDs."""

    numbers: SequenceSet
    uid: bool
    bound: frozenset[int] | None = None

    def match(self, ctx: _Context) -> bool:
        if self.bound is not None:
            return ctx.msg.info.uid in self.bound
        value = ctx.msg.info.uid if self.uid else ctx.msg.seq
        top = ctx.last_uid if self.uid else ctx.last_seq
        for low, high in self.numbers.ranges:
            a = top if low is None else low
            b = top if high is None else high
            if a > b:
                a, b = b, a
            if a <= value <= b:
                return True
        return False

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        self.bound = frozenset(resolve(list(self.numbers.ranges), self.uid))


@dataclass
class ModSeq(Key):
    """MODSEQ n: messages changed at or after n (RFC 7162 3.1.5)."""

    value: int

    def match(self, ctx: _Context) -> bool:
        return ctx.msg.info.modseq >= self.value


@dataclass
class Query:
    """A parsed SEARCH."""

    key: Key
    charset: str = "US-ASCII"
    uses_modseq: bool = False

    @property
    def needs(self) -> str:
        return self.key.needs

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> "Query":
        """Replace sequence sets by the UIDs ``resolve(ranges, is_uid)`` names."""
        self.key.bind(resolve)
        return self


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
#: Nesting limit for parentheses, NOT and OR (a hostile client could nest deeply).
MAX_DEPTH = 100


class _Parser:
    def __init__(self, reader: Reader) -> None:
        self.r = reader
        self.uses_modseq = False
        self.depth = 0

    def text(self) -> str:
        raw = self.r.astring()
        try:
            return _fold(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("Search string is not valid UTF-8") from None

    def keys(self, closing: bool) -> list[Key]:
        keys = [self.key()]
        while True:
            if closing and self.r.accept(b")"):
                return keys
            if self.r.at_end():
                if closing:
                    raise ParseError("Missing ) in search")
                return keys
            self.r.space()
            keys.append(self.key())

    def key(self) -> Key:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("Search keys nested too deeply")
        try:
            return self._key()
        finally:
            self.depth -= 1

    def _key(self) -> Key:
        r = self.r
        c = r.peek()
        if c is None:
            raise ParseError("Missing search key")
        if c == 0x28:
            r.pos += 1
            if r.accept(b")"):
                raise ParseError("Empty search group")
            return AllOf(self.keys(closing=True))
        if c == 0x2A or 0x30 <= c <= 0x39 or c == 0x24:
            numbers = r.sequence_set()
            if numbers.saved:
                raise ParseError("SEARCHRES ($) is not supported")
            return InSet(numbers, uid=False)
        word = r.atom().upper()
        if word == "ALL":
            return Everything()
        if word in _FLAG_KEYS:
            return Flag(*_FLAG_KEYS[word])
        if word == "RECENT":
            return Recent(True)
        if word == "OLD":
            return Recent(False)
        if word == "NEW":
            return New()
        r.space()
        if word == "NOT":
            return Not(self.key())
        if word == "OR":
            first = self.key()
            r.space()
            return AnyOf(first, self.key())
        if word in ("KEYWORD", "UNKEYWORD"):
            return Flag(str(r.atom()), word == "KEYWORD")
        if word in ("LARGER", "SMALLER"):
            return Size(word == "LARGER", r.number())
        if word in ("BEFORE", "ON", "SINCE"):
            return InternalDate(word, r.date())
        if word in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            return SentDate(word[4:], r.date())
        if word in _HEADER_KEYS:
            return HeaderContains(_HEADER_KEYS[word], self.text())
        if word == "HEADER":
            name = r.astring()
            if not name or any(ch <= 0x20 or ch >= 0x7F or ch == 0x3A for ch in name):
                raise ParseError("Invalid header field name")
            r.space()
            return HeaderContains(name.decode("ascii").lower(), self.text())
        if word == "BODY":
            return BodyContains(self.text())
        if word == "TEXT":
            return TextContains(self.text())
        if word == "UID":
            numbers = r.sequence_set()
            if numbers.saved:
                raise ParseError("SEARCHRES ($) is not supported")
            return InSet(numbers, uid=True)
        if word == "MODSEQ":
            # RFC 7162 3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
            self.uses_modseq = True
            if r.peek() == 0x22:
                r.quoted()
                r.space()
                kind = r.atom().lower()
                if kind not in ("priv", "shared", "all"):
                    raise ParseError("Invalid MODSEQ entry type")
                r.space()
            return ModSeq(r.number64())
        raise ParseError(f"Unknown search key {word[:30]}")


def _parse_reader(reader: Reader) -> Query:
    charset = "US-ASCII"
    if reader.data[reader.pos : reader.pos + 8].upper() == b"CHARSET ":
        reader.pos += 8
        name = reader.astring().decode("ascii", "replace").upper()
        if name not in ("UTF-8", "US-ASCII"):
            raise BadCharset(name)
        charset = name
        reader.space()
    parser = _Parser(reader)
    key = AllOf(parser.keys(closing=False))
    reader.end()
    if len(key.keys) == 1:
        return Query(key.keys[0], charset, parser.uses_modseq)
    return Query(key, charset, parser.uses_modseq)


def parse_search(data: bytes) -> Query:
    """Parse SEARCH's arguments (everything after ``SEARCH ``)."""
    return _parse_reader(Reader(data))


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def matches(query: Query, message: SearchMessage, *, last_seq: int, last_uid: int) -> bool:
    """Does ``message`` satisfy the query?  ``last_seq``/``last_uid`` give ``*`` its meaning."""
    return query.key.match(_Context(message, last_seq, last_uid))


def parse(args: Any, resolve: Callable[[Any, bool], Iterable[int]] | None = None) -> Query:
    """Drop-in for ``search_fallback.parse``: reads ``args`` (``data``/``pos``) to its end and,
    with ``resolve``, binds the sequence sets to UIDs."""
    data = args.data if isinstance(args.data, bytes) else bytes(args.data)
    reader = Reader(data, args.pos)
    query = _parse_reader(reader)
    args.pos = reader.pos
    if resolve is not None:
        query.bind(resolve)
    return query


def _never_read() -> bytes:  # pragma: no cover - meta keys never call it
    raise AssertionError("a meta-only search tried to read a message")


def evaluate(
    query: Query,
    candidates: Sequence[tuple[int, int, Any, bool]],
    opener: Callable[[int], Callable[[], Any]],
    headers: dict[int, bytes] | None = None,
) -> list[tuple[int, int, int]]:
    """Drop-in for ``search_fallback.evaluate``: ``(seq, uid, modseq)`` of the matches among
    ``(seq, uid, info, recent)`` candidates; ``opener(uid)()`` opens the message file;
    ``headers`` may hold header blocks already read (by UID), used instead of the file.

    Sequence sets must be bound (:meth:`Query.bind`) when candidates are a batch.
    A message that vanished meanwhile (open fails) does not match.
    """
    out = []
    last_seq = candidates[-1][0] if candidates else 0
    last_uid = candidates[-1][1] if candidates else 0
    key = query.key
    if key.needs == "meta":
        # no file is read: one reused context, no per-message allocation (100,000-message folders)
        probe = SearchMessage(0, None, False, _never_read, _never_read)
        ctx = _Context(probe, last_seq, last_uid)
        match = key.match
        for seq, uid, info, recent in candidates:
            probe.seq, probe.info, probe.recent = seq, info, recent
            if match(ctx):
                out.append((seq, uid, info.modseq))
        return out
    known = headers or {}
    for seq, uid, info, recent in candidates:
        open_file = opener(uid)

        def header(open_file: Callable[[], Any] = open_file, block: bytes | None = known.get(uid)) -> bytes:
            if block is not None:
                return block
            with open_file() as fp:
                return mime.read_header(fp)

        def whole(open_file: Callable[[], Any] = open_file) -> bytes:
            with open_file() as fp:
                fp.seek(0)
                return bytes(fp.read())

        ctx = _Context(SearchMessage(seq, info, recent, header, whole), last_seq, last_uid)
        try:
            if key.match(ctx):
                out.append((seq, uid, info.modseq))
        except OSError:
            continue
        except Exception as e:  # the store's NoSuchMessage: expunged meanwhile, no match
            if type(e).__name__ == "NoSuchMessage":
                continue
            raise
    return out
