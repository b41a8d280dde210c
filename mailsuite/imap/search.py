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
  ``evaluate(query, candidates, opener, headers=None, cache=None, folder=None, reader=None)
  -> [(seq, uid, modseq)]``;
  with ``cache`` (:mod:`mailsuite.imap.search_cache`) what is learnt of each
  message is shared across searches and sessions.

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

Speed without changing an answer (tests/imap/test_search_cache.py compares
every shortcut with a full decode):

* Decoded, folded header values and the Date: day are cached per message
  (:mod:`search_cache`, keyed by folder incarnation, UID, Maildir name and
  size); so is the MIME structure (header ranges, text leaves with their
  transfer encoding and codec) of messages that needed work to find it.  A
  message without any Content-* header field is one text/plain us-ascii leaf;
  a single-part one is read from its first Content-Type and
  Content-Transfer-Encoding fields; only multiparts and message/rfc822 take a
  full :func:`mime.parse`.
* A field is found by a regex when the header's lines end in LF or CRLF only
  (as :func:`mime.split_fields` would split them; a bare CR takes the
  split_fields path).
* A text part with no transfer encoding to undo, an ASCII-safe stateless
  codec and only ASCII octets is matched as bytes (ASCII case-folds like
  ``bytes.lower()``).
* Negative pre-filters from raw octets, only where decoding cannot create the
  needle: a header block that is ASCII without encoded words, for header
  keys; a whole message that is ASCII with no base64/quoted-printable, only
  readable ASCII-safe charsets and (TEXT) no encoded words, for BODY/TEXT.
  Non-ASCII octets are never pre-filtered: Unicode case folding maps some of
  them to ASCII letters (KELVIN SIGN to "k", LONG S to "s").
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import datetime
import email.utils
import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from mailsuite.imap import mime, search_cache
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


#: RFC 3501 6.4.4: FROM, TO, CC and BCC look in the envelope structure's address fields.
ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc"})
_BLANKS = re.compile(rb"[ \t\r\n]+")


def address_texts(value: bytes) -> list[str]:
    """The addresses of an address field as the envelope has them (RFC 3501 6.4.4): comments
    dropped, quoting and the blanks around '@' undone, ``name <mailbox@host>`` or ``mailbox@host``;
    group markers give nothing.  Matched besides the field's own text, so that
    ``FROM user@domain.org`` finds ``<user (a comment)@ domain.org>``."""
    out = []
    try:
        addresses = mime.parse_addresses(value)
    except Exception:  # a header no parser can read still has its own text to match
        return out
    for name, _route, mailbox, host in addresses:
        if mailbox is None or host is None:
            continue
        address = decode_header_text(mailbox + b"@" + host)
        out.append(f"{decode_header_text(name)} <{address}>" if name else address)
    return out


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


#: Codecs (Python's canonical names) that turn every ASCII octet into the same ASCII character
#: and keep no state, so ASCII text in them can be matched as bytes without decoding.
#: Stateful or multi-byte ones (UTF-7, ISO-2022-*, HZ, UTF-16) are deliberately absent.
_ASCII_SAFE = frozenset(
    ["utf-8", "ascii", "koi8-r", "koi8-u", "cp437", "cp850", "mac-roman"]
    + [f"iso8859-{n}" for n in range(1, 17) if n != 12]
    + [f"cp{n}" for n in range(1250, 1259)]
)
_ascii_safe_names: dict[str, bool] = {}


def _ascii_safe(codec: str) -> bool:
    """Does ``codec`` decode ASCII octets to themselves (statelessly)?"""
    known = _ascii_safe_names.get(codec)
    if known is None:
        try:
            known = codecs.lookup(codec).name in _ASCII_SAFE
        except LookupError:
            known = False  # body_text falls back to UTF-8 then, which is safe, but stay simple
        if len(_ascii_safe_names) < 1000:
            _ascii_safe_names[codec] = known
    return known


#: ``charset=name`` as a whole Content-Type parameter: the raw pre-filter applies only when
#: every occurrence of "charset" in a message reads like this with an ASCII-safe name.
_CHARSET_PARAM = re.compile(rb'charset[ \t]*=[ \t]*"?([a-z0-9_.:+-]{1,40})"?[ \t]*(?=[;\r\n]|$)')

# A text leaf of a message: (body start, body end, transfer encoding to undo or None, charset codec,
# codec is ASCII-safe).  What mime.body_text() does to that part, without the Part tree.
Leaf = tuple[int, int, Optional[bytes], str, bool]
# The structure SEARCH keeps per message: header ranges (the message's and those of encapsulated
# messages, as TEXT reads them) and the text leaves (as BODY reads them).
Structure = tuple[tuple[tuple[int, int], ...], tuple[Leaf, ...]]


def _leaf(part: mime.Part) -> Leaf:
    encoding = (part.encoding or b"7bit").lower()
    transfer = encoding if encoding in (b"base64", b"quoted-printable") else None  # else: octets as they are
    codec = mime._charset_decoder(part.param(b"charset"))
    return (part.body_start, part.end, transfer, codec, _ascii_safe(codec))


def _header_range(part: mime.Part) -> tuple[int, int]:
    # the octets mime's parser splits into Part.fields
    return (part.start, min(part.body_start, part.start + mime.MAX_HEADER_PARSED))


_PLAIN_CODEC = mime._charset_decoder(None)  # what body_text uses for text without a charset
_PLAIN_SAFE = _ascii_safe(_PLAIN_CODEC)


def simple_structure(data: bytes, lower: bytes | None = None) -> Structure | None:
    """The structure of a message whose header has no Content-* field (one text/plain
    us-ascii leaf, RFC 2045 5.2), found without a MIME parse; None for any other message.
    ``lower``: ``data.lower()`` if the caller has it."""
    body_start = mime._header_end(data, 0, len(data))  # where mime's parser ends the top-level header
    header_end = min(body_start, mime.MAX_HEADER_PARSED)
    if lower is not None:
        if lower.find(b"content-", 0, header_end) >= 0:
            return None
    elif b"content-" in data[:header_end].lower():
        return None
    return (((0, header_end),), ((body_start, len(data), None, _PLAIN_CODEC, _PLAIN_SAFE),))


_MEMO_SIZE = 2048
_content_types: dict[bytes | None, tuple[str, str, bool]] = {}
_transfers: dict[bytes, bytes | None] = {}


def _memo(table: dict[Any, Any], key: Any, compute: Callable[[Any], Any]) -> Any:
    """``compute(key)`` remembered in a small table (a folder's messages repeat a handful of
    Content-Type and Content-Transfer-Encoding values; mime's lexer is pure Python)."""
    try:
        return table[key]
    except KeyError:
        pass
    value = compute(key)
    if len(table) >= _MEMO_SIZE:
        table.clear()
    table[key] = value
    return value


def _content_kind(value: bytes | None) -> tuple[str, str, bool]:
    """What a top-level Content-Type value (None: absent) makes of a message, as mime's parser
    sees it: ("parse", "", False) for a multipart with a boundary or a message/rfc822, ("other",
    "", False) for a non-text leaf, ("text", codec, ASCII-safe) for a text leaf."""
    part = mime.Part(0, 0, 0, [])
    parsed = mime._content_type(value) if value is not None else None
    if parsed is not None:
        part.media_type, part.subtype, part.params = parsed[0], parsed[1], list(parsed[2])
    major = part.media_type.lower()
    if (major == b"multipart" and part.param(b"boundary")) or (major == b"message" and part.subtype.lower() == b"rfc822"):
        return ("parse", "", False)
    if major != b"text":
        return ("other", "", False)
    codec = mime._charset_decoder(part.param(b"charset"))
    return ("text", codec, _ascii_safe(codec))


def _transfer(value: bytes) -> bytes | None:
    """The transfer encoding to undo for a Content-Transfer-Encoding value (None: as is)."""
    encoding = (mime._single_token(value) or b"7bit").lower()
    return encoding if encoding in (b"base64", b"quoted-printable") else None


def single_part_structure(data: bytes) -> Structure | None:
    """The structure of a message that is not multipart nor message/rfc822, read from its
    Content-Type and Content-Transfer-Encoding fields alone (found by regex as in header
    SEARCH) instead of a MIME parse; None when a parse is needed (a multipart, an encapsulated
    message, a header with a bare CR)."""
    body_start = mime._header_end(data, 0, len(data))
    header_end = min(body_start, mime.MAX_HEADER_PARSED)
    lines = _lf_fields(data[:header_end])
    if lines is None:
        return None
    # mime's parser reads the first Content-Type and the first Content-Transfer-Encoding
    ctype = _field_pattern("content-type").search(lines)
    kind, codec, safe = _memo(_content_types, mime.unfold(ctype.group(1)) if ctype is not None else None, _content_kind)
    if kind == "parse":
        return None
    headers = ((0, header_end),)
    if kind == "other":
        return (headers, ())
    cte = _field_pattern("content-transfer-encoding").search(lines)
    transfer = _memo(_transfers, mime.unfold(cte.group(1)), _transfer) if cte is not None else None
    return (headers, ((body_start, len(data), transfer, codec, safe),))


def message_structure(data: bytes) -> Structure:
    """Header ranges and text leaves of a whole message, as mime.parse() sees them."""
    simple = simple_structure(data)
    if simple is None:
        simple = single_part_structure(data)
    if simple is not None:
        return simple
    return parsed_structure(data)


def parsed_structure(data: bytes) -> Structure:
    """The structure from a full MIME parse (what the shortcuts above must agree with)."""
    root = mime.parse(data)
    headers = [_header_range(root)]
    headers.extend(_header_range(part.message) for _numbers, part in root.walk() if part.message is not None)
    leaves = tuple(_leaf(part) for part in root.leaves() if part.media_type.lower() == b"text")
    return (tuple(headers), leaves)


def _structure_cost(structure: Structure) -> int:
    return 120 + 40 * len(structure[0]) + 120 * len(structure[1])


def leaf_text(data: bytes, leaf: Leaf) -> str:
    """A text leaf as text, exactly as :func:`mime.body_text` decodes it."""
    start, end, transfer, codec, _safe = leaf
    raw = data[start:end]
    if transfer is not None:
        raw = mime._decode_transfer(raw, transfer)
    try:
        return raw.decode(codec, "replace")
    except (LookupError, ValueError):
        return raw.decode("utf-8", "replace")


def raw_excludes(data: bytes, lower: bytes, needle_ascii: bytes | None, *, text: bool) -> bool:
    """True when no text BODY (``text``: TEXT) searches in this message can contain the needle,
    judged from the raw octets alone: an all-ASCII message with no base64 or quoted-printable
    anywhere, only ASCII-safe charsets (and for TEXT no encoded word) decodes every part to a
    substring of itself, and ASCII text case-folds like bytes.lower().  False means "maybe"."""
    if not data.isascii():
        return False  # Unicode case folding of non-ASCII text can produce ASCII letters
    if b"base64" in lower or b"quoted-printable" in lower:
        return False
    if text and b"=?" in data:
        return False
    if b"charset" in lower:
        names = _CHARSET_PARAM.findall(lower)
        if len(names) != lower.count(b"charset"):
            return False
        for name in set(names):
            if not _ascii_safe(mime._charset_decoder(name)):
                return False
    if needle_ascii is None:
        return True  # a non-ASCII needle in all-ASCII text
    if needle_ascii in lower:
        return False
    if text and needle_ascii in lower.replace(b"\r\n", b"").replace(b"\n", b""):
        return False  # header fields are matched unfolded
    return True


_field_patterns: dict[str, re.Pattern[bytes]] = {}


def _field_pattern(name: str) -> re.Pattern[bytes]:
    """``name:`` at a line start and its continuation lines (in a header split at LF only)."""
    pattern = _field_patterns.get(name)
    if pattern is None:
        pattern = re.compile(b"^" + re.escape(name.encode("latin-1")) + rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)
        if len(_field_patterns) < 256:
            _field_patterns[name] = pattern
    return pattern


def _lf_fields(header: bytes) -> bytes | None:
    """The part of a header block :func:`mime.split_fields` reads, if its lines end in LF or
    CRLF only (then a regex finds a field as split_fields would); None if a bare CR is in it."""
    if header.count(b"\r") != header.count(b"\r\n"):
        return None
    if header[:1] == b"\n" or header[:2] == b"\r\n":
        return b""
    crlf = header.find(b"\n\r\n")
    lf = header.find(b"\n\n")
    ends = [i for i in (crlf, lf) if i >= 0]
    return header[: min(ends) + 1] if ends else header


class _Context:
    """Per-message caches so each file is read and each header parsed at most once;
    ``facts`` (the shared :mod:`search_cache` entry) carries them across searches."""

    __slots__ = ("msg", "last_seq", "last_uid", "facts", "cache", "key", "_header", "_fields", "_lf_header", "_message",
                 "_structure", "_simple", "_lower", "_leaf_texts", "_header_texts")

    def __init__(self, msg: SearchMessage, last_seq: int, last_uid: int,
                 facts: search_cache.MessageFacts | None = None, cache: search_cache.SearchCache | None = None,
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
            self._lf_header = _lf_fields(self.header()) if self._fields is None else None
        if self._lf_header is not None:
            return [mime.unfold(m.group(1)) for m in _field_pattern(name).finditer(self._lf_header)]
        return [f.value for f in self.fields().get(name, ())]

    def header_texts(self, name: str) -> tuple[str, ...]:
        """The folded, decoded values of field ``name`` (empty: no such field)."""
        facts = self.facts
        if facts is not None:
            texts = facts.fields.get(name)
            if texts is not None:
                return texts
        texts = tuple(_fold(decode_header_text(value)) for value in self.field_values(name))
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
        texts = tuple(_fold(text) for value in self.field_values(name) for text in address_texts(value))
        store = self._store()
        if store is not None:
            store.add_field(self.facts, key, texts)  # type: ignore[arg-type]
        return texts

    def _store(self) -> search_cache.SearchCache | None:
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
            return _BLANKS.sub(b"", needle_ascii) not in _BLANKS.sub(b"", lower)
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
            store.set_structure(self.facts, structure, _structure_cost(structure))  # type: ignore[arg-type]

    def _text_of(self, index: int, leaf: Leaf) -> str:
        if self._leaf_texts is None:
            self._leaf_texts = {}
        text = self._leaf_texts.get(index)
        if text is None:
            text = self._leaf_texts[index] = _fold(leaf_text(self.message(), leaf))
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
        if not _PLAIN_SAFE or self._structure is not None or (self.facts is not None and self.facts.structure is not None):
            return None
        lower = self.lower()
        if lower is None:
            return None
        body_start = mime._header_end(lower, 0, len(lower))  # the same offsets as in the octets
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
                    texts.append(_fold(decode_header_text(unfolded_field(f.raw))))
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

    def match(self, ctx: _Context) -> bool:
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

    def match(self, ctx: _Context) -> bool:
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

    def match(self, ctx: _Context) -> bool:
        if ctx.excluded(self._ascii, text=True):
            return False
        return ctx.body_contains(self.needle, self._ascii) or ctx.headers_contain(self.needle, self._ascii)


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


#: Stands for "the Date: header's day" among field names (no field name contains a space).
SENT = " sent"


def header_fields_needed(key: Key) -> frozenset[str]:
    """Lower-cased names of the header fields a key tree matches on (:data:`SENT` for SENT*)."""
    if isinstance(key, HeaderContains):
        return frozenset([key.name])
    if isinstance(key, SentDate):
        return frozenset([SENT])
    if isinstance(key, AllOf):
        return frozenset().union(*(header_fields_needed(k) for k in key.keys))
    if isinstance(key, AnyOf):
        return header_fields_needed(key.first) | header_fields_needed(key.second)
    if isinstance(key, Not):
        return header_fields_needed(key.key)
    return frozenset()


def facts_answer(facts: search_cache.MessageFacts | None, names: frozenset[str]) -> bool:
    """Do the cached facts of a message answer every header key (``names``) without its header?"""
    if facts is None:
        return False
    fields = facts.fields
    for name in names:
        if name == SENT:
            if not facts.has_sent:
                return False
        elif name not in fields:
            return False
    return True


def _never_read() -> bytes:  # pragma: no cover - meta keys never call it
    raise AssertionError("a meta-only search tried to read a message")


def _required_header_key(key: Key) -> HeaderContains | None:
    """A header substring key that must hold for ``key`` to hold (itself, or a member of an AND).

    Address keys are left to the per-message rule, which also tries their envelope form."""
    if isinstance(key, HeaderContains):
        return key if key.needle and not key._address else None
    if isinstance(key, AllOf):
        for k in key.keys:
            if isinstance(k, HeaderContains) and k.needle and not k._address:
                return k
    return None


def _batch_excluded(key: Key, candidates: Sequence[tuple[int, int, Any, bool]], known: dict[int, bytes],
                    cache: search_cache.SearchCache | None, folder: Any) -> set[int]:
    """UIDs of a batch whose header blocks rule ``key`` out, found with one scan of all the
    blocks joined instead of one call per message (the per-message rule of
    :meth:`_Context.header_excludes`; needles with blanks, which may span a fold, are left to it)."""
    required = _required_header_key(key)
    if required is None or required._spaced:
        return set()
    uids = []
    blocks = []
    for _seq, uid, info, _recent in candidates:
        block = known.get(uid)
        if block is None:
            continue
        if cache is not None:
            facts = cache.get_quiet((folder, uid, info.key, info.size))
            if facts is not None and required.name in facts.fields:
                continue  # answered from the cache anyway
        uids.append(uid)
        blocks.append(block)
    if not blocks:
        return set()
    joined = b"\0".join(blocks)  # a hit across a separator only makes a message a candidate
    if joined.isascii() and b"=?" not in joined:
        plain = None  # every block is
    else:
        plain = [b.isascii() and b"=?" not in b for b in blocks]
    needle = required._ascii
    hit = [False] * len(blocks)
    if needle is not None:
        lower = joined.lower()
        starts = list(itertools.accumulate((len(b) + 1 for b in blocks[:-1]), initial=0))
        pos = lower.find(needle)
        while pos >= 0:
            index = bisect.bisect_right(starts, pos) - 1
            hit[index] = True
            following = index + 1
            if following >= len(starts):
                break
            pos = lower.find(needle, starts[following])
    return {uid for i, uid in enumerate(uids) if not hit[i] and (plain is None or plain[i])}


class _StoredMessage:
    """A candidate as :func:`evaluate` sees it: the :class:`SearchMessage` fields, octets read
    through the store's opener (no per-message closures)."""

    __slots__ = ("seq", "info", "recent", "_open", "_block", "_read")

    def __init__(self, seq: int, info: Any, recent: bool, open_file: Callable[[], Any], block: bytes | None,
                 read: Callable[[int], bytes] | None) -> None:
        self.seq = seq
        self.info = info
        self.recent = recent
        self._open = open_file
        self._block = block
        self._read = read

    def header(self) -> bytes:
        if self._block is not None:
            return self._block
        with self._open() as fp:
            return mime.read_header(fp)

    def message(self) -> bytes:
        if self._read is not None:
            return self._read(self.info.uid)
        with self._open() as fp:
            fp.seek(0)
            return bytes(fp.read())


def evaluate(
    query: Query,
    candidates: Sequence[tuple[int, int, Any, bool]],
    opener: Callable[[int], Callable[[], Any]],
    headers: dict[int, bytes] | None = None,
    cache: search_cache.SearchCache | None = None,
    folder: Any = None,
    reader: Callable[[int], bytes] | None = None,
) -> list[tuple[int, int, int]]:
    """Drop-in for ``search_fallback.evaluate``: ``(seq, uid, modseq)`` of the matches among
    ``(seq, uid, info, recent)`` candidates; ``opener(uid)()`` opens the message file;
    ``headers`` may hold header blocks already read (by UID), used instead of the file.
    With ``cache``, what is learnt of each message is shared under
    ``(folder, uid, info.key, info.size)`` (``folder``: the folder incarnation's
    :meth:`~search_cache.SearchCache.folder_id`).
    ``reader(uid)``, if given, returns a whole message (cheaper than the opener for BODY/TEXT).

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
    match = key.match
    hits: list[Any] = []  # cache entries used, marked recently used in one go
    excluded = _batch_excluded(key, candidates, known, cache, folder) if known else ()
    for seq, uid, info, recent in candidates:
        if uid in excluded:
            continue
        facts = None
        if cache is not None:
            message_key = (folder, uid, info.key, info.size)
            facts = cache.get_quiet(message_key)
            if facts is not None:
                hits.append(message_key)
        else:
            message_key = None
        msg = _StoredMessage(seq, info, recent, opener(uid), known.get(uid), reader)
        try:
            if match(_Context(msg, last_seq, last_uid, facts, cache, message_key)):  # type: ignore[arg-type]
                out.append((seq, uid, info.modseq))
        except OSError:
            continue
        except Exception as e:  # the store's NoSuchMessage: expunged meanwhile, no match
            if type(e).__name__ == "NoSuchMessage":
                continue
            raise
    if hits and cache is not None:
        cache.touch(hits)
    return out
