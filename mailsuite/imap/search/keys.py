"""The search key tree (RFC 3501 6.4.4, RFC 7162 3.1.5): one class per kind of key, each saying how much it reads."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mailsuite.imap.search.context import MessageContext
from mailsuite.imap.wire import SequenceSet

_NEEDS_ORDER = {"meta": 0, "header": 1, "body": 2}


class BadCharset(Exception):
    """CHARSET names something other than UTF-8 or US-ASCII (RFC 3501 6.4.4)."""

    code = "BADCHARSET (UTF-8 US-ASCII)"

    def __init__(self, charset: str) -> None:
        super().__init__(f"Unsupported charset {charset[:40]}")
        self.charset = charset


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


class Key:
    """A search key; ``needs`` is the most a test of it may read."""

    needs = "meta"

    def match(self, ctx: MessageContext) -> bool:  # pragma: no cover - abstract
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

    def match(self, ctx: MessageContext) -> bool:
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

    def match(self, ctx: MessageContext) -> bool:
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

    def match(self, ctx: MessageContext) -> bool:
        return not self.key.match(ctx)

    def bind(self, resolve: Callable[[Any, bool], Iterable[int]]) -> None:
        self.key.bind(resolve)


@dataclass
class Everything(Key):
    def match(self, ctx: MessageContext) -> bool:
        return True


@dataclass
class Flag(Key):
    """A system flag or keyword present (or absent); keywords compare case-insensitively."""

    flag: str
    present: bool = True

    def __post_init__(self) -> None:
        self._system = self.flag.startswith("\\")
        self._lower = self.flag.lower()

    def match(self, ctx: MessageContext) -> bool:
        flags = ctx.msg.info.flags
        if self._system or self.flag in flags:
            return (self.flag in flags) == self.present
        wanted = self._lower
        return any(f.lower() == wanted for f in flags) == self.present


@dataclass
class Recent(Key):
    present: bool = True

    def match(self, ctx: MessageContext) -> bool:
        return ctx.msg.recent == self.present


@dataclass
class New(Key):
    """NEW = RECENT UNSEEN."""

    def match(self, ctx: MessageContext) -> bool:
        return ctx.msg.recent and "\\Seen" not in ctx.msg.info.flags


@dataclass
class Size(Key):
    """LARGER / SMALLER: RFC822.SIZE strictly above / below."""

    larger: bool
    octets: int

    def match(self, ctx: MessageContext) -> bool:
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

    def match(self, ctx: MessageContext) -> bool:
        # RFC 3501 6.4.4: "disregarding time and timezone": the stored date's own day
        return _compare(ctx.msg.info.internal_date.date(), self.op, self.day)


@dataclass
class SentDate(Key):
    op: str
    day: datetime.date
    needs = "header"

    def match(self, ctx: MessageContext) -> bool:
        sent = ctx.sent_day()
        return sent is not None and _compare(sent, self.op, self.day)


def _ascii_needle(needle: str) -> bytes | None:
    return needle.encode("ascii") if needle.isascii() else None


@dataclass
class HeaderContains(Key):
    """FROM/TO/CC/BCC/SUBJECT/HEADER: substring of a decoded value; "" = the field exists."""

    name: str  # lower-case field name
    needle: str  # folded
    address: bool = False  # FROM/TO/CC/BCC (not HEADER): the envelope's address form counts too
    needs = "header"

    def __post_init__(self) -> None:
        self._ascii = _ascii_needle(self.needle)
        self._spaced = any(c in self.needle for c in " \t")
        self._address = self.address

    def match(self, ctx: MessageContext) -> bool:
        if not self.needle:
            return bool(ctx.header_texts(self.name))
        facts = ctx.facts
        texts = facts.fields.get(self.name) if facts is not None else None
        if texts is None:
            if ctx.header_excludes(self._ascii, self._spaced, self._address):
                return False
            texts = ctx.header_texts(self.name)
        needle = self.needle
        for value in texts:
            if needle in value:
                return True
        if self._address and any(self._envelope_may_hold(value) for value in texts):
            for value in ctx.envelope_texts(self.name):
                if needle in value:
                    return True
        return False

    def _envelope_may_hold(self, text: str) -> bool:
        """Could the envelope form of a field whose text is ``text`` contain the needle?  Without
        comments it is the text's tokens with quoting and blanks dropped, so only if the needle,
        blanks dropped too, is in the text with those dropped (spares the address parse)."""
        if "(" in text:
            return True
        squeezed = "".join(text.replace('"', "").replace("\\", "").split())
        return "".join(self.needle.split()) in squeezed


@dataclass
class BodyContains(Key):
    needle: str
    needs = "body"

    def __post_init__(self) -> None:
        self._ascii = _ascii_needle(self.needle)

    def match(self, ctx: MessageContext) -> bool:
        start = ctx.plain_ascii_body()
        if start is not None:
            # the common plain message: one ASCII us-ascii text part, matched as bytes
            return self._ascii is not None and ctx.lower().find(self._ascii, start) >= 0  # type: ignore[union-attr]
        if ctx.excluded(self._ascii, text=False):
            return False
        return ctx.body_contains(self.needle, self._ascii)


@dataclass
class TextContains(Key):
    needle: str
    needs = "body"

    def __post_init__(self) -> None:
        self._ascii = _ascii_needle(self.needle)

    def match(self, ctx: MessageContext) -> bool:
        if ctx.excluded(self._ascii, text=True):
            return False
        return ctx.body_contains(self.needle, self._ascii) or ctx.headers_contain(self.needle, self._ascii)


@dataclass
class InSet(Key):
    """A sequence set of message numbers or (``uid``) UIDs."""

    numbers: SequenceSet
    uid: bool
    bound: frozenset[int] | None = None

    def match(self, ctx: MessageContext) -> bool:
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

    def match(self, ctx: MessageContext) -> bool:
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
