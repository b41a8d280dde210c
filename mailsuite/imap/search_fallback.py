"""SEARCH criteria (RFC 3501 6.4.4, RFC 7162 3.1.5): parse and evaluate.

Stand-in used by :mod:`mailsuite.imap.search_adapter` while
``mailsuite.imap.search`` (owned by another developer) is not available.

Implementation notes:

* Criteria parse into a tree of small predicate objects; each says what it
  needs (``meta`` from the cached MessageInfo, ``header`` or ``body``), so a
  search on flags, sizes, dates or UIDs never opens a file.
* Evaluation of criteria that read messages runs on a worker thread, in
  batches, reading each message at most once (header only when enough).
* Strings match case-insensitively as substrings (RFC 3501 6.4.4);
  headers are matched after RFC 2047 decoding, BODY/TEXT against the
  decoded text of text/* parts and, as a fallback, the raw bytes.
"""

from __future__ import annotations

import datetime
import email.header
import email.policy
import email.utils
from email.parser import BytesParser
from typing import Any, Callable

from mailsuite.imap.args import Arguments, ParseError
from mailsuite.imap.mime_adapter import header_fields, read_header

_PARSER = BytesParser(policy=email.policy.compat32)


class Ctx:
    """One message as the predicates see it; header and body are read lazily."""

    __slots__ = ("seq", "uid", "info", "recent", "_open", "_block", "_header", "_message", "_raw")

    def __init__(self, seq: int, uid: int, info: Any, recent: bool, opener: Callable[[], Any], header_block: bytes | None = None) -> None:
        self.seq, self.uid, self.info, self.recent = seq, uid, info, recent
        self._open = opener
        self._block = header_block
        self._header: Any = None
        self._message: Any = None
        self._raw: bytes | None = None

    def raw(self) -> bytes:
        if self._raw is None:
            with self._open() as fp:
                self._raw = fp.read()
        return self._raw

    def header(self) -> dict[str, list[str]]:
        """Lower-cased field name -> unfolded values (no MIME parser: searches touch many messages)."""
        if self._header is None:
            if self._block is not None:
                block = self._block
            elif self._raw is not None:
                block = self._raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            else:
                with self._open() as fp:
                    block = read_header(fp)
            fields: dict[str, list[str]] = {}
            for name, text in header_fields(block):
                value = text.split(b":", 1)[1] if b":" in text else b""
                unfolded = b" ".join(value.split()).decode("utf-8", "replace")
                fields.setdefault(name.decode("ascii", "replace"), []).append(unfolded)
            self._header = fields
        return self._header

    def message(self) -> Any:
        if self._message is None:
            self._message = _PARSER.parsebytes(self.raw())
        return self._message


def _simple_body(ctx: Ctx) -> bool:
    """A single-part message without transfer encoding: its raw bytes are its text."""
    header = ctx.header()
    ctype = " ".join(header.get("content-type", [])).lower()
    encoding = " ".join(header.get("content-transfer-encoding", [])).lower().strip()
    return not ctype.startswith("multipart") and encoding in ("", "7bit", "8bit", "binary")


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _header_values(ctx: Ctx, name: str) -> list[str]:
    return [_decoded(v) if "=?" in v else v for v in ctx.header().get(name.lower(), [])]


def _body_text(ctx: Ctx) -> str:
    texts = []
    for part in ctx.message().walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            texts.append(payload.decode(charset, "replace"))
        except LookupError:
            texts.append(payload.decode("utf-8", "replace"))
    return "\n".join(texts)


class Key:
    """A search key: ``needs`` is "meta", "header" or "body"."""

    needs = "meta"

    def match(self, ctx: Ctx) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class _Fn(Key):
    def __init__(self, fn: Callable[[Ctx], bool], needs: str = "meta") -> None:
        self.fn = fn
        self.needs = needs

    def match(self, ctx: Ctx) -> bool:
        return self.fn(ctx)


class _All(Key):
    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        order = {"meta": 0, "header": 1, "body": 2}
        self.keys.sort(key=lambda k: order[k.needs])  # cheap checks first
        self.needs = max((k.needs for k in keys), key=lambda n: order[n], default="meta")

    def match(self, ctx: Ctx) -> bool:
        return all(k.match(ctx) for k in self.keys)


class _Or(Key):
    def __init__(self, a: Key, b: Key) -> None:
        self.a, self.b = a, b
        self.needs = max(a.needs, b.needs, key=lambda n: {"meta": 0, "header": 1, "body": 2}[n])

    def match(self, ctx: Ctx) -> bool:
        return self.a.match(ctx) or self.b.match(ctx)


class _Not(Key):
    def __init__(self, a: Key) -> None:
        self.a = a
        self.needs = a.needs

    def match(self, ctx: Ctx) -> bool:
        return not self.a.match(ctx)


def _flag(name: str, present: bool = True) -> Key:
    return _Fn(lambda c: (name in c.info.flags) == present)


def _internal_day(ctx: Ctx) -> datetime.date:
    # RFC 3501 6.4.4: dates disregard time and timezone
    return ctx.info.internal_date.date()


def _sent_day(ctx: Ctx) -> datetime.date | None:
    values = ctx.header().get("date")
    if not values:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.date() if parsed else None


def _contains(needle: str) -> Callable[[str], bool]:
    folded = needle.casefold()
    return lambda hay: folded in hay.casefold()


class Criteria:
    """A parsed SEARCH: the key tree, plus whether MODSEQ was used (for the response)."""

    def __init__(self, key: Key, uses_modseq: bool) -> None:
        self.key = key
        self.uses_modseq = uses_modseq


class _Parser:
    def __init__(self, args: Arguments, resolve: Callable[[Any, bool], list[int]]) -> None:
        self.args = args
        self.resolve = resolve
        self.uses_modseq = False

    def text(self) -> str:
        raw = self.args.astring()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Search string is not UTF-8") from None

    def keys_until(self, closing: bool) -> list[Key]:
        keys = [self.key()]
        while True:
            if closing and self.args.peek() == 0x29:
                self.args.pos += 1
                return keys
            if not self.args.maybe_space():
                if closing:
                    raise ParseError("Missing )")
                return keys
            keys.append(self.key())

    def key(self) -> Key:
        a = self.args
        c = a.peek()
        if c is None:
            raise ParseError("Missing search key")
        if c == 0x28:
            a.pos += 1
            return _All(self.keys_until(closing=True))
        if c == 0x2A or 0x30 <= c <= 0x39:
            uids = set(self.resolve(a.seqset(), False))
            return _Fn(lambda ctx: ctx.uid in uids)
        word = a.atom().upper()
        simple = {
            "ALL": lambda: _Fn(lambda ctx: True),
            "ANSWERED": lambda: _flag("\\Answered"),
            "DELETED": lambda: _flag("\\Deleted"),
            "DRAFT": lambda: _flag("\\Draft"),
            "FLAGGED": lambda: _flag("\\Flagged"),
            "SEEN": lambda: _flag("\\Seen"),
            "UNANSWERED": lambda: _flag("\\Answered", False),
            "UNDELETED": lambda: _flag("\\Deleted", False),
            "UNDRAFT": lambda: _flag("\\Draft", False),
            "UNFLAGGED": lambda: _flag("\\Flagged", False),
            "UNSEEN": lambda: _flag("\\Seen", False),
            "RECENT": lambda: _Fn(lambda ctx: ctx.recent),
            "OLD": lambda: _Fn(lambda ctx: not ctx.recent),
            "NEW": lambda: _Fn(lambda ctx: ctx.recent and "\\Seen" not in ctx.info.flags),
        }
        if word in simple:
            return simple[word]()
        a.space()
        if word == "NOT":
            return _Not(self.key())
        if word == "OR":
            first = self.key()
            a.space()
            return _Or(first, self.key())
        if word in ("KEYWORD", "UNKEYWORD"):
            flag = a.atom()
            lowered = flag.lower()
            present = word == "KEYWORD"
            return _Fn(lambda ctx: any(f.lower() == lowered for f in ctx.info.flags) == present)
        if word in ("LARGER", "SMALLER"):
            n = a.number()
            return _Fn((lambda ctx: ctx.info.size > n) if word == "LARGER" else (lambda ctx: ctx.info.size < n))
        if word in ("BEFORE", "ON", "SINCE"):
            day = a.search_date()
            op = {"BEFORE": lambda d: d < day, "ON": lambda d: d == day, "SINCE": lambda d: d >= day}[word]
            return _Fn(lambda ctx: op(_internal_day(ctx)))
        if word in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            day = a.search_date()
            op = {"SENTBEFORE": lambda d: d < day, "SENTON": lambda d: d == day, "SENTSINCE": lambda d: d >= day}[word]
            return _Fn(lambda ctx: (lambda d: d is not None and op(d))(_sent_day(ctx)), "header")
        if word in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            test = _contains(self.text())
            name = word.capitalize() if word != "BCC" else "Bcc"
            return _Fn(lambda ctx: any(test(v) for v in _header_values(ctx, name)), "header")
        if word == "HEADER":
            name = a.astring().decode("ascii", "replace")
            a.space()
            needle = self.text()
            test = _contains(needle)
            if not needle:
                return _Fn(lambda ctx: name.lower() in ctx.header(), "header")
            return _Fn(lambda ctx: any(test(v) for v in _header_values(ctx, name)), "header")
        if word == "BODY":
            needle = self.text()
            test = _contains(needle)
            raw_needle = needle.encode("utf-8").lower()
            return _Fn(lambda ctx: raw_needle in ctx.raw().split(b"\r\n\r\n", 1)[-1].lower() or (not _simple_body(ctx) and test(_body_text(ctx))), "body")
        if word == "TEXT":
            needle = self.text()
            test = _contains(needle)
            raw_needle = needle.encode("utf-8").lower()
            return _Fn(
                lambda ctx: raw_needle in ctx.raw().lower()
                or any(test(_decoded(v)) for values in ctx.header().values() for v in values if "=?" in v)
                or (not _simple_body(ctx) and test(_body_text(ctx))),
                "body",
            )
        if word == "UID":
            uids = set(self.resolve(a.seqset(), True))
            return _Fn(lambda ctx: ctx.uid in uids)
        if word == "MODSEQ":
            # RFC 7162 3.1.5: MODSEQ [<entry-name> <entry-type-req>] <mod-sequence-valzer>
            self.uses_modseq = True
            if a.peek() == 0x22:
                a.string()
                a.space()
                kind = a.atom().lower()
                if kind not in ("priv", "shared", "all"):
                    raise ParseError("Invalid MODSEQ entry type")
                a.space()
            n = a.number()
            return _Fn(lambda ctx: ctx.info.modseq >= n)
        raise ParseError(f"Unknown search key {word[:30]}")


def parse(args: Arguments, resolve: Callable[[Any, bool], list[int]]) -> Criteria:
    """Parse ``[CHARSET x] key...`` (the leading space already read)."""
    parser = _Parser(args, resolve)
    key = _All(parser.keys_until(closing=False))
    args.end()
    return Criteria(key, parser.uses_modseq)


def evaluate(
    criteria: Criteria,
    candidates: list[tuple[int, int, Any, bool]],
    opener: Callable[[int], Callable[[], Any]],
    headers: dict[int, bytes] | None = None,
) -> list[tuple[int, int, int]]:
    """(seq, uid, modseq) of matching messages; ``candidates`` are (seq, uid, info, recent).

    ``headers`` may hold header blocks already read (from the shared cache).
    """
    out = []
    key = criteria.key
    headers = headers or {}
    for seq, uid, info, recent in candidates:
        ctx = Ctx(seq, uid, info, recent, opener(uid), headers.get(uid))
        try:
            if key.match(ctx):
                out.append((seq, uid, info.modseq))
        except FileNotFoundError:
            continue
        except Exception as e:  # NoSuchMessage and parse trouble: the message doesn't match
            if type(e).__name__ == "NoSuchMessage":
                continue
            raise
    return out
