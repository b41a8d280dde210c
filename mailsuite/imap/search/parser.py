"""SEARCH criteria syntax (RFC 3501 6.4.4, 9) into a :class:`~.keys.Query`."""

from __future__ import annotations

from mailsuite.imap.search.keys import (
    AllOf,
    AnyOf,
    BadCharset,
    BodyContains,
    Everything,
    Flag,
    HeaderContains,
    InSet,
    InternalDate,
    Key,
    ModSeq,
    New,
    Not,
    Query,
    Recent,
    SentDate,
    Size,
    TextContains,
)
from mailsuite.imap.search.text import ADDRESS_FIELDS, fold
from mailsuite.imap.wire import ParseError, Reader

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
            return fold(raw.decode("utf-8"))
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
            field = _HEADER_KEYS[word]
            return HeaderContains(field, self.text(), address=field in ADDRESS_FIELDS)
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


def parse_reader(reader: Reader) -> Query:
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
    return parse_reader(Reader(data))
