"""One message during one evaluation: each file read and each header parsed at most once."""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

from mailsuite.facts import FactsCache, MessageFacts
from mailsuite.imap import mime
from mailsuite.imap.search.structure import (
    PLAIN_SAFE,
    Leaf,
    SearchMessage,
    Structure,
    field_pattern,
    leaf_text,
    lf_fields,
    parsed_structure,
    raw_excludes,
    simple_structure,
    single_part_structure,
    structure_cost,
)
from mailsuite.imap.search.text import BLANKS, address_texts, decode_header_text, fold


class MessageContext:
    """Per-message caches so each file is read and each header parsed at most once;
    ``facts`` (the store's :mod:`mailsuite.facts` entry) carries them across searches."""

    __slots__ = ("msg", "last_seq", "last_uid", "facts", "cache", "key", "_header", "_fields", "_lf_header", "_message",
                 "_structure", "_simple", "_lower", "_leaf_texts", "_header_texts")

    def __init__(self, msg: SearchMessage, last_seq: int, last_uid: int,
                 facts: MessageFacts | None = None, cache: FactsCache | None = None,
                 key: Any = None) -> None:
        self.msg = msg
        self.last_seq = last_seq
        self.last_uid = last_uid
        self.facts = facts  # the cached entry, if there was one
        self.cache = cache
        self.key = key  # the cache key (entries are created only to store something)
        self._header: bytes | None = None
        self._fields: dict[str, list[mime.Field]] | None = None
        self._lf_header: Any = False  # not looked at yet
        self._message: bytes | None = None
        self._structure: Structure | None = None
        self._simple: Any = None  # False once simple_structure() is known to say None
        self._lower: Any = False  # not computed yet
        self._leaf_texts: dict[int, str] | None = None
        self._header_texts: list[str] | None = None

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

    def field_values(self, name: str) -> list[bytes]:
        """The unfolded values of every field ``name`` (lower case), in order."""
        if self._lf_header is False:
            self._lf_header = lf_fields(self.header()) if self._fields is None else None
        if self._lf_header is not None:
            return [mime.unfold(m.group(1)) for m in field_pattern(name).finditer(self._lf_header)]
        return [f.value for f in self.fields().get(name, ())]

    def header_texts(self, name: str) -> tuple[str, ...]:
        """The folded, decoded values of field ``name`` (empty: no such field)."""
        facts = self.facts
        if facts is not None:
            texts = facts.fields.get(name)
            if texts is not None:
                return texts
        texts = tuple(fold(decode_header_text(value)) for value in self.field_values(name))
        store = self._store()
        if store is not None:
            store.add_field(self.facts, name, texts)  # type: ignore[arg-type]
        return texts

    def envelope_texts(self, name: str) -> tuple[str, ...]:
        """The folded envelope forms (:func:`address_texts`) of address field ``name``, cached
        beside the field's own text under their own key (HEADER FROM matches only the text)."""
        key = name + "\0envelope"
        facts = self.facts
        if facts is not None:
            texts = facts.fields.get(key)
            if texts is not None:
                return texts
        texts = tuple(fold(text) for value in self.field_values(name) for text in address_texts(value))
        store = self._store()
        if store is not None:
            store.add_field(self.facts, key, texts)  # type: ignore[arg-type]
        return texts

    def _store(self) -> FactsCache | None:
        """The cache to remember a fact in (``self.facts`` made to exist), or None."""
        cache = self.cache
        if cache is None:
            return None
        if self.facts is None:
            if self.key is None:
                return None
            self.facts = cache.facts(self.key)
        return cache

    def header_excludes(self, needle_ascii: bytes | None, spaced: bool, address: bool = False) -> bool:
        """True when no field value of the header block can contain the needle: an ASCII
        block without encoded words decodes each value to a substring of itself, once its line
        breaks are gone (only a needle with blanks can span a fold).  For an address key the
        envelope form counts too (:func:`address_texts`): without comments, quoted strings or
        escapes it is the block's tokens in order, so it can hold the needle only if the block
        does once every blank is gone from both."""
        header = self.header()
        if not header.isascii() or b"=?" in header:
            return False
        if needle_ascii is None:
            return True
        lower = header.lower()
        if needle_ascii in lower:
            return False
        if spaced and needle_ascii in lower.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b""):
            return False
        if address:
            if b"(" in lower or b'"' in lower or b"\\" in lower:
                return False
            return BLANKS.sub(b"", needle_ascii) not in BLANKS.sub(b"", lower)
        return True

    def sent_day(self) -> datetime.date | None:
        """The Date: header's own calendar day (None: no parsable Date:)."""
        facts = self.facts
        if facts is not None and facts.has_sent:
            return facts.sent  # type: ignore[no-any-return]
        day = _sent_day(self.field_values("date"))
        store = self._store()
        if store is not None:
            store.set_sent(self.facts, day)  # type: ignore[arg-type]
        return day

    def message(self) -> bytes:
        if self._message is None:
            self._message = self.msg.message()
        return self._message

    def structure(self) -> Structure:
        if self._structure is None:
            facts = self.facts
            if facts is not None and facts.structure is not None:
                self._structure = facts.structure
            else:
                data = self.message()
                simple = simple_structure(data) if self._simple is not False else None
                if simple is not None:
                    self._structure = simple  # as cheap to find again as to look up: not cached
                else:
                    single = single_part_structure(data)
                    self._remember(single if single is not None else parsed_structure(data))
        return self._structure  # type: ignore[return-value]

    def _remember(self, structure: Structure) -> None:
        self._structure = structure
        store = self._store()
        if store is not None:
            store.set_structure(self.facts, structure, structure_cost(structure))  # type: ignore[arg-type]

    def _text_of(self, index: int, leaf: Leaf) -> str:
        if self._leaf_texts is None:
            self._leaf_texts = {}
        text = self._leaf_texts.get(index)
        if text is None:
            text = self._leaf_texts[index] = fold(leaf_text(self.message(), leaf))
        return text

    def body_contains(self, needle: str, needle_ascii: bytes | None) -> bool:
        """Does a text part contain ``needle`` (folded; ``needle_ascii`` its bytes if ASCII)?
        Parts that need no decoding and are ASCII are matched as bytes."""
        leaves = self.structure()[1]
        data = self.message()
        for i, leaf in enumerate(leaves):
            if leaf[2] is None and leaf[4] and (self._leaf_texts is None or i not in self._leaf_texts):
                lower = self.lower()
                if lower is not None:
                    # the whole message is ASCII
                    if needle_ascii is not None and lower.find(needle_ascii, leaf[0], leaf[1]) >= 0:
                        return True
                    continue
                chunk = data[leaf[0] : leaf[1]]
                if chunk.isascii():
                    # ASCII decodes to itself in an ASCII-safe codec, and folds like bytes.lower()
                    if needle_ascii is not None and needle_ascii in chunk.lower():
                        return True
                    continue
            if needle in self._text_of(i, leaf):
                return True
        return False

    def excluded(self, needle_ascii: bytes | None, *, text: bool) -> bool:
        """The raw pre-filter (:func:`raw_excludes`), tried only when the structure is unknown
        and would take a MIME parse; a True answer spares that parse."""
        if self._structure is not None:
            return False
        facts = self.facts
        if facts is not None and facts.structure is not None:
            self._structure = facts.structure
            return False
        data = self.message()
        lower = self.lower()
        simple = simple_structure(data, lower) if self._simple is not False else None
        if simple is not None:
            self._structure = simple  # as cheap to find again as to look up: not cached
            return False
        self._simple = False
        single = single_part_structure(data)
        if single is not None:
            self._remember(single)
            return False
        if lower is None:
            return False  # not ASCII: no raw pre-filter
        return raw_excludes(data, lower, needle_ascii, text=text)

    def plain_ascii_body(self) -> int | None:
        """Where the body starts if the message is all ASCII and has no Content-* header field
        (one text/plain us-ascii part from there to the end, :func:`simple_structure`), else None.
        A shortcut for BODY taken before any structure is known."""
        if not PLAIN_SAFE or self._structure is not None or (self.facts is not None and self.facts.structure is not None):
            return None
        lower = self.lower()
        if lower is None:
            return None
        body_start = mime.header_end(lower, 0, len(lower))  # the same offsets as in the octets
        if lower.find(b"content-", 0, min(body_start, mime.MAX_HEADER_PARSED)) >= 0:
            self._simple = False  # simple_structure would say None too
            return None
        return body_start

    def lower(self) -> bytes | None:
        """The whole message lower-cased, if it is all ASCII (else None)."""
        if self._lower is False:
            data = self.message()
            self._lower = data.lower() if data.isascii() else None
        return self._lower  # type: ignore[return-value]

    def header_texts_all(self) -> list[str]:
        """Every header field (message and encapsulated messages), folded, for TEXT."""
        if self._header_texts is None:
            data = self.message()
            texts = []
            for start, end in self.structure()[0]:
                for f in mime.split_fields(data[start:end]):
                    texts.append(fold(decode_header_text(unfolded_field(f.raw))))
            self._header_texts = texts
        return self._header_texts

    def headers_contain(self, needle: str, needle_ascii: bytes | None) -> bool:
        data = self.message()
        if self._header_texts is None:
            for start, end in self.structure()[0]:
                block = data[start:end]
                if block.isascii() and b"=?" not in block:
                    # unfolded ASCII fields are substrings of the block without its line breaks
                    if needle_ascii is not None and needle_ascii in block.lower().replace(b"\r\n", b"").replace(b"\n", b""):
                        break
                    continue
                break
            else:
                return False
        return any(needle in t for t in self.header_texts_all())


def _sent_day(values: list[bytes]) -> datetime.date | None:
    if not values:
        return None
    parsed = email.utils.parsedate_tz(values[-1].decode("latin-1"))
    if parsed is None:
        return None
    try:
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except (ValueError, TypeError):
        return None


def unfolded_field(raw: bytes) -> bytes:
    """A whole header field (name and value) on one line."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"").strip()
