"""The IMAP message model: MIME structure, ENVELOPE, BODYSTRUCTURE and BODY[section].

Public API (FETCH calls these; pure functions, no reactor, no store):

* ``envelope(header: bytes) -> bytes``: the ENVELOPE list (RFC 3501 7.4.2),
  from the header block alone.
* ``bodystructure(message, extended=True) -> bytes``: BODYSTRUCTURE
  (``extended=True``) or BODY (``extended=False``); ``extensible=`` is
  accepted as a synonym.
* ``section(message, part, specifier="", names=(), *, binary=False) -> bytes``:
  the octets of ``BODY[part.specifier]`` (RFC 3501 6.4.5); ``part`` is a
  tuple of part numbers, or a whole section text (``"1.2.HEADER.FIELDS (FROM)"``)
  with the other arguments left out.  ``binary`` decodes the
  Content-Transfer-Encoding (RFC 3516 BINARY[]); an unknown encoding raises
  :class:`UnknownTransferEncoding` (``NO [UNKNOWN-CTE]``).
* ``binary_size(message, part) -> int`` for BINARY.SIZE.
* ``rfc822_header`` / ``rfc822_text`` / ``rfc822_size`` for the RFC822.* items.
* ``partial(data, origin, octets) -> bytes``: the ``<origin.octets>`` slice.
* ``read_header(fp) -> bytes``: the header block of an open message, reading
  no further than the blank line.
* ``header_fields(header, names, exclude=False) -> bytes``: HEADER.FIELDS[.NOT].
* ``parse(message) -> Part``: the structure tree (byte offsets), for search
  and tests; ``Part.walk()`` yields ``(part numbers, Part)``.
* ``decoded_body(buf, part) -> bytes`` / ``body_text(buf, part) -> str``:
  a leaf part's content with the transfer encoding (and charset) undone.

``message`` is ``bytes``-like (an ``mmap`` too) or a seekable binary file; files with a
``fileno`` are memory-mapped rather than read, so only the pages a request
touches are loaded.

Implementation notes:

* Structure is parsed from the raw octets in one pass (RFC 2045, 2046):
  sections are returned byte-exact from the stored message, never
  re-serialised.  The CRLF before a boundary delimiter belongs to the
  delimiter (RFC 2046 5.1.1); the epilogue belongs to the multipart.
* Boundaries are matched innermost first against the whole stack of open
  multiparts, so a part missing its close delimiter ends at its parent's
  next delimiter, and a message with no final boundary ends at EOF.  A
  delimiter line is ``--boundary`` [``--``] plus only transport padding
  (RFC 2046 5.1.1; Dovecot also accepts trailing junk, we do not).
  Nesting is limited to :data:`MAX_DEPTH` levels and :data:`MAX_PARTS`
  parts; deeper content is treated as an opaque leaf.
* Work is linear in the message size whatever its shape: delimiters are
  found by one regex per boundary stack, headers end at a blank line or a
  delimiter searched in :attr:`_Parser.WINDOW` windows, each body is scanned
  once, and line counts (body-fld-lines) are computed only for text and
  message/rfc822 parts, from their children's counts.
* Part numbers follow RFC 3501 6.4.5: a non-multipart message is its own
  part 1; the parts of a message/rfc822 are those of the encapsulated
  message; HEADER/TEXT on a message/rfc822 part address the encapsulated
  message, MIME the part's own header.  A part that does not exist is the
  empty string.
* Content-* headers are honoured with or without MIME-Version; an
  unparsable Content-Type falls back to text/plain (RFC 2045 5.2); a
  multipart without a boundary is a leaf; message/rfc822 is always parsed
  as an encapsulated message (its BODYSTRUCTURE needs envelope and body).
* Output follows Dovecot where RFC 3501 leaves a choice: type and parameter
  text as written in the message, ``("charset" "us-ascii")`` added to text
  parts without a charset, RFC 2231 continuations merged into ``name*``,
  Content-Language always a list, MD5 NIL unless a Content-MD5 header exists,
  missing address parts as ``MISSING_MAILBOX``/``MISSING_DOMAIN``, the
  last occurrence of an envelope header wins, encoded words left as they are.
* Nothing here raises on malformed input except :class:`UnknownTransferEncoding`
  for BINARY; structure and envelope degrade to the RFC defaults.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import io
import mmap
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Sequence, Union

from mailsuite.imap import wire

__all__ = [
    "Part", "UnknownTransferEncoding", "parse", "envelope", "bodystructure", "section", "partial",
    "binary_size", "rfc822_header", "rfc822_text", "rfc822_size", "read_header", "header_fields", "decoded_body", "body_text", "header_value",
    "split_fields", "unfold", "section_range", "shallow_root", "find_part", "structure_of",
]

#: Multipart nesting depth parsed (Dovecot's default limit is the same).
MAX_DEPTH = 100
#: Parts parsed per message; the rest is treated as opaque content.
MAX_PARTS = 10000
#: Octets of one header parsed for its fields (Content-* beyond this are ignored).
MAX_HEADER_PARSED = 1 << 20

Message = Union[bytes, bytearray, memoryview, BinaryIO]


class UnknownTransferEncoding(ValueError):
    """BINARY[] of a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 4.3)."""


# ---------------------------------------------------------------------------
# Getting at the octets
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _octets(message: Message) -> Iterator[Any]:
    """The message as a bytes-like object supporting find/startswith/slicing."""
    if isinstance(message, (bytes, bytearray, mmap.mmap)):
        yield message
        return
    if isinstance(message, memoryview):
        yield message.tobytes()
        return
    mapped = None
    try:
        fileno = message.fileno()
        mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        mapped = None
    if mapped is None:
        message.seek(0)
        yield message.read()
        return
    try:
        yield mapped
    finally:
        mapped.close()


def read_header(fp: BinaryIO | bytes | None) -> bytes:
    """The header block (blank line included), reading no more of the file than that."""
    if fp is None:
        return b""
    if isinstance(fp, (bytes, bytearray, memoryview)):
        data = bytes(fp)
        return data[: _header_end(data, 0, len(data))]
    fp.seek(0)
    lines = []
    for line in fp:
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(lines)


def partial(data: bytes, origin: int, octets: int) -> bytes:
    """``<origin.octets>`` (RFC 3501 6.4.5): an origin past the end gives the empty string."""
    return data[origin : origin + octets]


# ---------------------------------------------------------------------------
# Header blocks
# ---------------------------------------------------------------------------


def _header_end(buf: Any, start: int, limit: int) -> int:
    """Offset just after the blank line ending the header at ``start`` (or ``limit``)."""
    if start >= limit:
        return limit
    if buf[start : start + 2] == b"\r\n":
        return start + 2
    if buf[start : start + 1] == b"\n":
        return start + 1
    crlf = buf.find(b"\n\r\n", start, limit)
    lf = buf.find(b"\n\n", start, crlf + 1 if crlf >= 0 else limit)
    if crlf < 0 and lf < 0:
        return limit
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 3
    return lf + 2


_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e\x80-\xff]+)[ \t]*:")


class Field:
    """One header field: lower-cased name ("" for a line that is not a field),
    its raw octets (continuation lines and line ends included)."""

    __slots__ = ("name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name
        self.raw = raw

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.raw!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and (self.name, self.raw) == (other.name, other.raw)

    __hash__ = None  # type: ignore[assignment]

    @property
    def value(self) -> bytes:
        """The unfolded value after the colon, outer whitespace stripped."""
        colon = self.raw.find(b":")
        return unfold(self.raw[colon + 1 :]) if colon >= 0 else b""


def unfold(value: bytes) -> bytes:
    """RFC 5322 2.2.3 unfolding (line breaks removed), outer whitespace stripped."""
    return value.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"").strip(b" \t")


def split_fields(header: bytes) -> list[Field]:
    """The fields of a header block in order, stopping at the blank line."""
    fields: list[Field] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n", b"\r"):
            break
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] = Field(fields[-1].name, fields[-1].raw + line)
            else:
                fields.append(Field("", line))
            continue
        m = _FIELD_NAME.match(line)
        fields.append(Field(m.group(1).decode("latin-1").lower() if m else "", line))
    return fields


def header_value(header: bytes, name: str, *, last: bool = False) -> bytes | None:
    """The unfolded value of the first (or last) field called ``name``, or None."""
    wanted = name.lower()
    found = None
    for f in split_fields(header):
        if f.name == wanted:
            if not last:
                return f.value
            found = f.value
    return found


def header_fields(header: bytes, names: Sequence[str] | Sequence[bytes], exclude: bool = False) -> bytes:
    """HEADER.FIELDS / HEADER.FIELDS.NOT (RFC 3501 6.4.5): the matching fields
    byte-exact in their order, then the blank line (always included)."""
    wanted = {(n.decode("latin-1") if isinstance(n, (bytes, bytearray)) else n).lower() for n in names}
    kept = [f.raw for f in split_fields(header) if ((f.name in wanted) != exclude) and (f.name or exclude)]
    return b"".join(kept) + b"\r\n"


# ---------------------------------------------------------------------------
# Structured header values (RFC 2045 / RFC 5322 lexical tokens)
# ---------------------------------------------------------------------------

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_WSP = frozenset(b" \t\r\n")


class _Lexer:
    """A cursor over a structured field value: tokens, quoted strings, comments (CFWS)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.comment: bytes | None = None  # the last comment skipped

    def skip_cfws(self) -> None:
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            if c in _WSP:
                self.pos += 1
            elif c == 0x28:  # "(" comment, nested
                self.comment = self._comment()
            else:
                break

    def _comment(self) -> bytes:
        depth = 0
        out = bytearray()
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            self.pos += 1
            if c == 0x5C and self.pos < n:
                out.append(data[self.pos])
                self.pos += 1
                continue
            if c == 0x28:
                depth += 1
                if depth == 1:
                    continue
            elif c == 0x29:
                depth -= 1
                if depth == 0:
                    break
            out.append(c)
        return bytes(out)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def token(self) -> bytes:
        """RFC 2045 token (8-bit octets tolerated)."""
        start = self.pos
        data = self.data
        n = len(data)
        while self.pos < n and data[self.pos] > 0x20 and data[self.pos] != 0x7F and data[self.pos] not in _TSPECIALS:
            self.pos += 1
        return data[start : self.pos]

    def quoted(self) -> bytes:
        """A quoted-string's content (escapes removed); unterminated runs to the end."""
        self.pos += 1
        out = bytearray()
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                break
            if c == 0x5C and self.pos < n:
                c = data[self.pos]
                self.pos += 1
            elif c in (0x0D, 0x0A):
                continue
            out.append(c)
        return bytes(out)


def _params(lex: _Lexer) -> list[tuple[bytes, bytes]]:
    """``*(";" attribute "=" value)`` leniently, then RFC 2231 merging as Dovecot does."""
    plain: list[tuple[bytes, bytes]] = []
    pieces: list[tuple[bytes, int, bool, bytes]] = []  # key, index, extended, value
    while True:
        lex.skip_cfws()
        c = lex.peek()
        if c is None:
            break
        if c != 0x3B:  # junk: skip to the next ";"
            nxt = lex.data.find(b";", lex.pos)
            if nxt < 0:
                break
            lex.pos = nxt
        lex.pos += 1
        lex.skip_cfws()
        key = lex.token()
        lex.skip_cfws()
        if not key or lex.peek() != 0x3D:
            continue
        lex.pos += 1
        lex.skip_cfws()
        value = lex.quoted() if lex.peek() == 0x22 else lex.token()
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        rest = key[star + 1 :]
        m = re.fullmatch(rb"(\d*)(\*?)", rest)
        if m is None or (not m.group(1) and not m.group(2)) and rest:
            plain.append((key, value))
            continue
        index = int(m.group(1)) if m.group(1) else 0
        extended = bool(m.group(2)) or (not m.group(1) and rest == b"")
        if rest == b"":  # "name*" alone
            extended = True
        pieces.append((key[:star], index, extended, value))
    if not pieces:
        return plain
    pieces.sort(key=lambda p: (p[0], p[1]))
    merged: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(pieces):
        j = i
        while j < len(pieces) and pieces[j][0].lower() == pieces[i][0].lower():
            j += 1
        group = pieces[i:j]
        complete = all(p[1] == k for k, p in enumerate(group))
        if not complete:
            for key, index, extended, value in group:
                merged.append((key + b"*%d" % index + (b"*" if extended else b""), value))
        else:
            any_extended = any(p[2] for p in group)
            out = b"''" if any_extended and not group[0][2] else b""
            for _key, _index, extended, value in group:
                out += value.replace(b"%", b"%25") if (any_extended and not extended) else value
            merged.append((group[0][0] + (b"*" if any_extended else b""), out))
        i = j
    return plain + merged


def _rfc2231_value(value: bytes) -> bytes:
    """``charset'language'%XX..`` (RFC 2231 4) to its octets (the charset is not applied)."""
    parts = value.split(b"'", 2)
    text = parts[2] if len(parts) == 3 else value
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text)


def _content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """``type/subtype; params`` or None when the type is unusable (RFC 2045 5.2)."""
    lex = _Lexer(value)
    lex.skip_cfws()
    major = lex.token()
    lex.skip_cfws()
    if not major or lex.peek() != 0x2F:
        return None
    lex.pos += 1
    lex.skip_cfws()
    minor = lex.token()
    if not minor:
        return None
    return major, minor, _params(lex)


def _token_and_params(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    lex = _Lexer(value)
    lex.skip_cfws()
    token = lex.token()
    if not token:
        return None
    return token, _params(lex)


def _single_token(value: bytes) -> bytes | None:
    lex = _Lexer(value)
    lex.skip_cfws()
    token = lex.token()
    lex.skip_cfws()
    if not token or lex.peek() is not None:
        return None
    return token


def _languages(value: bytes) -> list[bytes]:
    lex = _Lexer(value)
    langs = []
    while True:
        lex.skip_cfws()
        tag = lex.token()
        if not tag:
            break
        langs.append(tag)
        lex.skip_cfws()
        if lex.peek() != 0x2C:
            break
        lex.pos += 1
    return langs


# ---------------------------------------------------------------------------
# The structure tree
# ---------------------------------------------------------------------------


@dataclass
class Part:
    """One MIME entity, by byte offsets into the message.

    ``start``..``body_start`` is the header (blank line included),
    ``body_start``..``end`` the body.  A multipart has ``children``; a
    parsed message/rfc822 has ``message`` (the encapsulated message as a
    Part spanning this part's body).
    """

    start: int
    body_start: int
    end: int
    fields: list[Field]
    media_type: bytes = b"text"
    subtype: bytes = b"plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    has_content_type: bool = False
    children: list["Part"] = field(default_factory=list)
    message: "Part | None" = None
    multipart: bool = False
    _lines: int | None = field(default=None, repr=False)

    def body_lines(self, buf: Any) -> int:
        """LF count of the body (RFC 3501 body-fld-lines), computed once and
        from the children's counts, so nested message/rfc822 parts cost one pass."""
        if self._lines is None:
            if self.multipart:
                total = 0
                pos = self.body_start
                for child in self.children:
                    total += _count_lf(buf, pos, child.body_start) + child.body_lines(buf)
                    pos = child.end
                total += _count_lf(buf, pos, self.end)
            elif self.message is not None:
                inner = self.message
                total = (
                    _count_lf(buf, self.body_start, inner.body_start)
                    + inner.body_lines(buf)
                    + _count_lf(buf, inner.end, self.end)
                )
            else:
                total = _count_lf(buf, self.body_start, self.end)
            self._lines = total
        return self._lines

    @property
    def size(self) -> int:
        return self.end - self.body_start

    @property
    def is_text(self) -> bool:
        return self.media_type.lower() == b"text" and not self.multipart and self.message is None

    def field(self, name: str) -> bytes | None:
        """First value of a header field of this entity."""
        wanted = name.lower()
        for f in self.fields:
            if f.name == wanted:
                return f.value
        return None

    def param(self, name: bytes) -> bytes | None:
        """A Content-Type parameter's value; an RFC 2231 ``name*`` form is
        decoded (charset'language'%XX) when the plain form is absent."""
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        for key, value in self.params:
            if key.lower() == wanted + b"*":
                return _rfc2231_value(value)
        return None

    @property
    def encoding(self) -> bytes | None:
        """The Content-Transfer-Encoding token as written, or None."""
        value = self.field("content-transfer-encoding")
        return _single_token(value) if value is not None else None

    def walk(self, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], "Part"]]:
        """``(part numbers, Part)`` for this entity and every entity below it
        (RFC 3501 6.4.5 numbering; a non-multipart message is its own part 1,
        so the parts of a top-level message/rfc822 are 1.1, 1.2...)."""
        yield prefix, self
        if self.multipart:
            for i, child in enumerate(self.children, 1):
                yield from child.walk(prefix + (i,))
        elif self.message is not None:
            inner = self.message
            base = prefix or (1,)
            if inner.multipart:
                for i, child in enumerate(inner.children, 1):
                    yield from child.walk(base + (i,))
            else:
                yield from inner.walk(base + (1,))

    def leaves(self) -> Iterator["Part"]:
        """Leaf entities (not multipart, not parsed message/rfc822), in order."""
        if self.multipart:
            for child in self.children:
                yield from child.leaves()
        elif self.message is not None:
            yield from self.message.leaves()
        else:
            yield self


@dataclass
class _Hit:
    """A boundary delimiter line found: which boundary, where, close or not."""

    index: int  # into the boundary stack
    line_start: int  # the "--"
    after: int  # just after the line's LF (or at EOF)
    close: bool
    newline: int  # length of the line break before the "--" (2 CRLF, 1 LF, 0 none)

    def content_end(self, floor: int) -> int:
        """Where the content before this delimiter ends: its preceding line break
        belongs to the delimiter (RFC 2046 5.1.1)."""
        return max(floor, self.line_start - self.newline)


class _Parser:
    """One pass over the octets building the Part tree."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.length = len(buf)
        self.parts = 0
        self._patterns: dict[tuple[bytes, ...], re.Pattern[bytes]] = {}

    def _delimiters(self, stack: list[bytes]) -> re.Pattern[bytes]:
        """A regex finding ``LF "--" boundary`` for any open boundary (one C-level scan)."""
        key = tuple(stack)
        pattern = self._patterns.get(key)
        if pattern is None:
            alternatives = b"|".join(re.escape(b) for b in sorted(set(stack), key=len, reverse=True))
            pattern = re.compile(b"\n--(?:" + alternatives + b")")
            self._patterns[key] = pattern
        return pattern

    def find_boundary(self, pos: int, stack: list[bytes], end: int | None = None, *, line_start: bool = True) -> _Hit | None:
        """The next delimiter line starting at or after ``pos`` (and before ``end``)
        that matches an open boundary; ``pos`` is a line start unless told otherwise."""
        if not stack:
            return None
        buf = self.buf
        n = self.length
        end = n if end is None else min(end, n)
        if line_start and pos < end and buf[pos : pos + 2] == b"--":
            hit = self._match(pos, stack)
            if hit is not None:
                return hit
        pattern = self._delimiters(stack)
        longest = max(len(b) for b in stack)
        search = pos if line_start else max(0, pos - 1)
        stop = min(n, end + 2 + longest)
        while True:
            m = pattern.search(buf, search, stop)
            if m is None or m.start() + 1 >= end:
                return None
            hit = self._match(m.start() + 1, stack)
            if hit is not None:
                return hit
            search = m.start() + 1

    #: Headers are searched for their end in windows this big, so a part
    #: without a blank line never makes us scan the rest of the message.
    WINDOW = 1 << 16

    def header_end(self, start: int, stack: list[bytes]) -> tuple[int, _Hit | None]:
        """Where the header at ``start`` ends: after its blank line, or before a
        delimiter line of an open multipart (then the entity has no body)."""
        buf = self.buf
        n = self.length
        if buf[start : start + 2] == b"\r\n":
            return start + 2, None
        if buf[start : start + 1] == b"\n":
            return start + 1, None
        pos = start
        while pos < n:
            window_end = min(n, pos + self.WINDOW)
            first = max(start, pos - 2)
            crlf = buf.find(b"\n\r\n", first, min(n, window_end + 2))
            lf = buf.find(b"\n\n", first, crlf + 2 if crlf >= 0 else min(n, window_end + 1))
            if lf >= 0 and (crlf < 0 or lf < crlf):
                blank, blank_end = lf + 1, lf + 2
            elif crlf >= 0:
                blank, blank_end = crlf + 1, crlf + 3
            else:
                blank, blank_end = -1, -1
            hit = self.find_boundary(pos, stack, blank if blank >= 0 else window_end, line_start=pos == start)
            if hit is not None:
                return hit.content_end(start), hit
            if blank >= 0:
                return blank_end, None
            pos = window_end
        return n, None

    def _match(self, at: int, stack: list[bytes]) -> _Hit | None:
        buf = self.buf
        for index in range(len(stack) - 1, -1, -1):
            delim = b"--" + stack[index]
            if buf[at : at + len(delim)] != delim:
                continue
            p = at + len(delim)
            close = buf[p : p + 2] == b"--"
            if close:
                p += 2
            while p < self.length and buf[p] in (0x20, 0x09):
                p += 1
            if p < self.length and buf[p] not in (0x0D, 0x0A):
                continue  # RFC 2046 5.1.1: only transport padding may follow
            if buf[p : p + 2] == b"\r\n":
                after = p + 2
            elif p < self.length:
                after = p + 1
            else:
                after = p
            if at >= 2 and buf[at - 2 : at] == b"\r\n":
                newline = 2
            elif at >= 1 and buf[at - 1 : at] == b"\n":
                newline = 1
            else:
                newline = 0
            return _Hit(index, at, after, close, newline)
        return None

    def entity(self, start: int, stack: list[bytes], digest: bool, depth: int) -> tuple[Part, _Hit | None]:
        """Parse the entity at ``start`` up to the next delimiter of ``stack`` (or EOF)."""
        self.parts += 1
        body_start, header_hit = self.header_end(start, stack)
        fields = split_fields(bytes(self.buf[start : min(body_start, start + MAX_HEADER_PARSED)]))
        part = Part(start, body_start, body_start, fields)
        if digest:
            part.media_type, part.subtype = b"message", b"rfc822"
        ctype = part.field("content-type")
        parsed = _content_type(ctype) if ctype is not None else None
        if parsed is not None:
            part.media_type, part.subtype, part.params = parsed
            part.has_content_type = True
        if header_hit is not None:
            return part, header_hit  # a delimiter inside the header: no body at all
        major = part.media_type.lower()
        minor = part.subtype.lower()
        nested_ok = depth < MAX_DEPTH and self.parts < MAX_PARTS
        if major == b"multipart" and part.param(b"boundary") and nested_ok:
            part.multipart = True
            boundary = part.param(b"boundary") or b""
            inner = stack + [boundary]
            own = len(inner) - 1
            hit = self.find_boundary(body_start, inner)
            while hit is not None and hit.index == own and not hit.close:
                if self.parts >= MAX_PARTS:
                    hit = self._skip_to_outer(hit.after, inner, own)
                    break
                child, hit = self.entity(hit.after, inner, minor == b"digest", depth + 1)
                part.children.append(child)
            if hit is not None and hit.index == own and hit.close:
                hit = self.find_boundary(hit.after, stack)  # the epilogue runs to the parent's next delimiter
            part.end = max(hit.content_end(body_start) if hit is not None else self.length, body_start)
            return part, hit
        if major == b"message" and minor == b"rfc822" and nested_ok:
            # parsed whatever the encoding, so BODYSTRUCTURE always carries the
            # envelope and body that RFC 3501's grammar requires for message/rfc822
            inner_part, hit = self.entity(body_start, stack, False, depth + 1)
            part.message = inner_part
            part.end = max(inner_part.end, body_start)
            return part, hit
        hit = self.find_boundary(body_start, stack)
        part.end = max(hit.content_end(body_start) if hit is not None else self.length, body_start)
        return part, hit

    def _skip_to_outer(self, pos: int, stack: list[bytes], own: int) -> _Hit | None:
        hit = self.find_boundary(pos, stack)
        while hit is not None and hit.index == own:
            hit = self.find_boundary(hit.after, stack)
        return hit


def _count_lf(buf: Any, start: int, end: int) -> int:
    """Line count of a body: its LF octets (mmap has no count(); 1 MiB slices bound the copy)."""
    if isinstance(buf, (bytes, bytearray)):
        return buf.count(b"\n", start, end)
    total = 0
    step = 1 << 20
    for offset in range(start, end, step):
        total += bytes(buf[offset : min(end, offset + step)]).count(b"\n")
    return total


def _parse_octets(buf: Any) -> Part:
    root, _ = _Parser(buf).entity(0, [], False, 0)
    root.end = len(buf)  # anything after a stray delimiter still belongs to the message
    return root


def parse(message: Message) -> Part:
    """The structure tree of a message (offsets into its octets)."""
    with _octets(message) as buf:
        return _parse_octets(buf)


# ---------------------------------------------------------------------------
# ENVELOPE (RFC 3501 7.4.2)
# ---------------------------------------------------------------------------

_ADDR_SPECIALS = frozenset(b'()<>[]:;@\\,."')


def _for_humans(value: bytes) -> bytes:
    """Subject and display names as Dovecot sends them: CR/LF dropped, tabs and
    runs of blanks collapsed to one space, outer blanks trimmed, NUL as 0x80."""
    cleaned = value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\t", b" ").replace(b"\x00", b"\x80")
    return re.sub(rb" {2,}", b" ", cleaned).strip(b" ")


_ADDRESS_TOKEN = re.compile(rb'([ \t\r\n]+)|([^\x00-\x20()<>\[\]:;@\\,."\x7f]+)|(.)', re.S)


def _address_tokens(value: bytes) -> list[tuple[str, bytes, bool]]:
    """(kind, text, space-before) tokens of an address header; kinds: atom qs dl comment or a special char."""
    tokens: list[tuple[str, bytes, bool]] = []
    lex = _Lexer(value)
    data = value
    n = len(data)
    space = False
    match = _ADDRESS_TOKEN.match
    while lex.pos < n:
        m = match(data, lex.pos)
        assert m is not None  # the last alternative matches any octet
        if m.group(1):
            lex.pos = m.end()
            space = True
            continue
        if m.group(2):
            tokens.append(("atom", m.group(2), space))
            lex.pos = m.end()
        else:
            c = data[lex.pos]
            if c == 0x28:
                tokens.append(("comment", lex._comment(), space))
            elif c == 0x22:
                tokens.append(("qs", lex.quoted(), space))
            elif c == 0x5B:
                end = data.find(b"]", lex.pos)
                end = n - 1 if end < 0 else end
                tokens.append(("dl", data[lex.pos : end + 1], space))
                lex.pos = end + 1
            else:
                tokens.append((chr(c), bytes([c]), space))
                lex.pos += 1
        space = False
    return tokens


Address = tuple[Union[bytes, None], Union[bytes, None], Union[bytes, None], Union[bytes, None]]


class _AddressParser:
    """RFC 5322 3.4 address-list over tokens, lenient like Dovecot's."""

    def __init__(self, value: bytes) -> None:
        self.tokens = _address_tokens(value)
        self.i = 0
        self.out: list[Address] = []

    def kind(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.tokens[j][0] if j < len(self.tokens) else None

    def skip_comments(self) -> bytes | None:
        last = None
        while self.kind() == "comment":
            last = self.tokens[self.i][1]
            self.i += 1
        return last

    def phrase(self) -> tuple[bytes, bytes | None]:
        """Words (atoms, quoted strings, dots) and the last comment seen."""
        out = b""
        comment = None
        while self.i < len(self.tokens):
            kind, text, space = self.tokens[self.i]
            if kind == "comment":
                comment = text
            elif kind in ("atom", "qs", "."):
                if out and space:
                    out += b" "
                out += text
            else:
                break
            self.i += 1
        return out, comment

    def parse(self) -> list[Address]:
        guard = 0
        while self.i < len(self.tokens):
            guard += 1
            if guard > 10000:
                break
            if self.kind() in (",", ";", ">"):
                self.i += 1
                continue
            start = self.i
            name, _comment = self.phrase()
            if self.kind() == ":":
                self.i += 1
                self.group(name)
                continue
            self.i = start
            self.mailbox()
            if self.i == start:
                self.i += 1  # never stall on junk
        return self.out

    def group(self, name: bytes) -> None:
        # RFC 3501 7.4.2: group start (NIL NIL name NIL), group end (NIL NIL NIL NIL)
        self.out.append((None, None, name, None))
        while self.i < len(self.tokens) and self.kind() != ";":
            if self.kind() in (",", ">", ":"):
                self.i += 1
                continue
            start = self.i
            self.mailbox()
            if self.i == start:
                self.i += 1
        if self.kind() == ";":
            self.i += 1
        self.out.append((None, None, None, None))

    def mailbox(self) -> None:
        start = self.i
        name, comment = self.phrase()
        if self.kind() == "<":
            self.i += 1
            self.angle(name or None)
            return
        self.i = start
        local, comment = self.local_part()
        domain = None
        if self.kind() == "@":
            self.i += 1
            domain, c2 = self.domain()
            comment = c2 or comment
        trailing = self.skip_comments()
        comment = trailing or comment
        if local is None and domain is None:
            return  # nothing but comments or junk: no address (the caller moves on)
        self.add(comment, None, local, domain)

    def angle(self, name: bytes | None) -> None:
        route = None
        self.skip_comments()
        if self.kind() == "@":
            hops = []
            while self.kind() in ("@", ","):
                if self.kind() == ",":
                    self.i += 1
                    continue
                self.i += 1
                hop, _ = self.domain()
                hops.append(b"@" + (hop or b""))
            if self.kind() == ":":
                self.i += 1
                route = b",".join(hops)
            else:
                route = b"INVALID_ROUTE"
        local, _ = self.local_part()
        domain = None
        if self.kind() == "@":
            self.i += 1
            domain, _ = self.domain()
        broken = self.kind() != ">"
        while self.i < len(self.tokens) and self.kind() != ">" and self.kind() not in (",", ";"):
            self.i += 1
        if self.kind() == ">":
            self.i += 1
        self.skip_comments()
        if broken:
            domain = b"SYNTAX_ERROR"
        self.add(name, route, local, domain)

    def local_part(self) -> tuple[bytes | None, bytes | None]:
        return self._run_of(("atom", "qs", "."))

    def domain(self) -> tuple[bytes | None, bytes | None]:
        return self._run_of(("atom", ".", "dl"))

    def _run_of(self, kinds: tuple[str, ...]) -> tuple[bytes | None, bytes | None]:
        """The text of the tokens of ``kinds`` from here (None if there are none) and the last comment among them."""
        out = b""
        comment = None
        seen = False
        while self.i < len(self.tokens):
            kind, text, _space = self.tokens[self.i]
            if kind == "comment":
                comment = text
            elif kind in kinds:
                out += text
                seen = True
            else:
                break
            self.i += 1
        return (out if seen else None), comment

    def add(self, name: bytes | None, route: bytes | None, local: bytes | None, domain: bytes | None) -> None:
        self.out.append((
            _for_humans(name) if name else None,
            route,
            local if local is not None else b"MISSING_MAILBOX",
            domain if domain is not None else b"MISSING_DOMAIN",
        ))


def parse_addresses(value: bytes) -> list[Address]:
    """(name, route, mailbox, host) tuples of an address header, with group markers."""
    return _AddressParser(value).parse()


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    addresses = parse_addresses(value)
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(wire.nstring(x) for x in a) + b")" for a in addresses) + b")"


_ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id")


def _envelope_from_fields(fields: list[Field]) -> bytes:
    values: dict[str, bytes] = {}
    for f in fields:
        if f.name in _ENVELOPE_FIELDS:
            values[f.name] = f.value  # the last occurrence wins, as in Dovecot
    def text(name: str) -> bytes:
        value = values.get(name)
        if value is None:
            return b"NIL"
        return wire.string(_for_humans(value) if name == "subject" else value)
    from_ = _address_list(values.get("from"))
    sender = _address_list(values.get("sender"))
    reply_to = _address_list(values.get("reply-to"))
    # RFC 3501 7.4.2: sender and reply-to default to from
    if sender == b"NIL":
        sender = from_
    if reply_to == b"NIL":
        reply_to = from_
    items = [
        text("date"), text("subject"), from_, sender, reply_to,
        _address_list(values.get("to")), _address_list(values.get("cc")), _address_list(values.get("bcc")),
        text("in-reply-to"), text("message-id"),
    ]
    return b"(" + b" ".join(items) + b")"


def envelope(header: bytes | BinaryIO) -> bytes:
    """The ENVELOPE list of a message from its header block (RFC 3501 7.4.2)."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        header = read_header(header)
    return _envelope_from_fields(split_fields(bytes(header)))


# ---------------------------------------------------------------------------
# BODY / BODYSTRUCTURE (RFC 3501 7.4.2)
# ---------------------------------------------------------------------------

_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'


def _param_list(params: list[tuple[bytes, bytes]], default_charset: bool) -> bytes:
    items = []
    seen_charset = False
    for key, value in params:
        if key.lower() == b"charset":
            seen_charset = True
        items.append(wire.string(key) + b" " + wire.string(value))
    if default_charset and not seen_charset:
        items.append(b'"charset" "us-ascii"')
    if not items:
        return b"NIL"
    return b"(" + b" ".join(items) + b")"


def _nstring_nolf(value: bytes | None) -> bytes:
    return wire.nstring(value)


def _extension_common(part: Part) -> bytes:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    disposition = part.field("content-disposition")
    parsed = _token_and_params(disposition) if disposition is not None else None
    if parsed is None:
        dsp = b"NIL"
    else:
        dsp = b"(" + wire.string(parsed[0]) + b" " + _param_list(parsed[1], False) + b")"
    language = part.field("content-language")
    langs = _languages(language) if language is not None else []
    lang = b"(" + b" ".join(wire.string(x) for x in langs) + b")" if langs else b"NIL"
    return dsp + b" " + lang + b" " + _nstring_nolf(part.field("content-location"))


def _structure(buf: Any, part: Part, extended: bool) -> bytes:
    if part.multipart:
        if part.children:
            inner = b"".join(_structure(buf, child, extended) for child in part.children)
        else:
            inner = _EMPTY_BODYSTRUCTURE if extended else _EMPTY_BODY
        out = inner + b" " + wire.string(part.subtype)
        if extended:
            out += b" " + _param_list(part.params, False) + b" " + _extension_common(part)
        return b"(" + out + b")"
    if part.message is not None:
        head = b'"message" "rfc822"'
        text = False
    elif not part.has_content_type and part.media_type == b"text":
        head = b'"text" "plain"'
        text = True
    else:
        head = wire.string(part.media_type) + b" " + wire.string(part.subtype)
        text = part.media_type.lower() == b"text"
    encoding = part.encoding
    items = [
        head,
        _param_list(part.params, text),
        _nstring_nolf(part.field("content-id")),
        _nstring_nolf(part.field("content-description")),
        wire.string(encoding) if encoding else b'"7bit"',
        b"%d" % part.size,
    ]
    if text:
        items.append(b"%d" % part.body_lines(buf))
    elif part.message is not None:
        inner = part.message
        items.append(_envelope_from_fields(inner.fields))
        items.append(_structure(buf, inner, extended))
        items.append(b"%d" % part.body_lines(buf))
    if extended:
        items.append(_nstring_nolf(part.field("content-md5")))
        items.append(_extension_common(part))
    return b"(" + b" ".join(items) + b")"


def structure_of(buf: Any, root: Part, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY from a tree :func:`parse` already built over ``buf``."""
    return _structure(buf, root, extended)


def bodystructure(message: Message, extended: bool = True, *, extensible: bool | None = None) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY of a whole message, as one parenthesised list."""
    if extensible is not None:
        extended = extensible
    with _octets(message) as buf:
        return _structure(buf, _parse_octets(buf), extended)


# ---------------------------------------------------------------------------
# BODY[section] (RFC 3501 6.4.5)
# ---------------------------------------------------------------------------


def _descend(node: Part, number: int) -> Part | None:
    """Part ``number`` below ``node``: a multipart's child, an encapsulated
    message's part, or for any other entity part 1 is the entity itself."""
    if node.multipart:
        return node.children[number - 1] if 0 < number <= len(node.children) else None
    if node.message is not None:
        inner = node.message
        if inner.multipart:
            return inner.children[number - 1] if 0 < number <= len(inner.children) else None
        return inner if number == 1 else None
    return node if number == 1 else None


def find_part(root: Part, numbers: Sequence[int]) -> Part | None:
    """The entity named by ``numbers`` (``()`` is the whole message), or None.

    A non-multipart message is its own part 1 (RFC 3501 6.4.5), so for a
    top-level message/rfc822 ``1`` is the whole encapsulated message and
    ``1.1`` the encapsulated message's part 1, as Dovecot answers.
    """
    if not numbers:
        return root
    first = numbers[0]
    node: Part | None
    if root.multipart:
        node = root.children[first - 1] if 0 < first <= len(root.children) else None
    else:
        node = root if first == 1 else None
    for number in numbers[1:]:
        if node is None:
            return None
        node = _descend(node, number)
    return node


def _parse_section_text(text: str) -> tuple[tuple[int, ...], str, tuple[str, ...]]:
    reader = wire.Reader(b"BODY[" + text.encode("ascii", "replace") + b"]")
    att = reader.fetch_attributes()[0]
    return att.section or (), att.specifier, att.fields


def _decode_transfer(data: bytes, encoding: bytes | None) -> bytes:
    enc = (encoding or b"7bit").lower()
    if enc in (b"7bit", b"8bit", b"binary"):
        return data
    if enc == b"base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return b""
    if enc == b"quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownTransferEncoding(enc.decode("latin-1"))


def section_range(root: Part, numbers: Sequence[int], specifier: str) -> tuple[int, int] | None:
    """Where ``BODY[numbers.specifier]`` lies in the message: ``(start, end)`` offsets, or
    None when it is the empty string (a part that does not exist, MIME of the whole message).

    Every section but HEADER.FIELDS[.NOT] is one run of the stored octets, so FETCH can
    stream it from the file (or read only a partial's octets) instead of copying it; for
    HEADER.FIELDS[.NOT] this is the header block the fields are chosen from.
    """
    specifier = specifier.upper()
    node = find_part(root, numbers)
    if node is None:
        return None
    if specifier == "MIME":
        return (node.start, node.body_start) if numbers else None
    if specifier in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"):
        # on a part, these address the encapsulated message (RFC 3501 6.4.5)
        target = node.message if (numbers and node.message is not None) else node
        if specifier == "TEXT":
            return target.body_start, target.end
        return target.start, target.body_start
    if not numbers:
        return 0, root.end
    return node.body_start, node.end


def shallow_root(buf: Any) -> Part:
    """The whole message as a Part whose structure is not parsed: its header and body
    offsets only, enough for :func:`section_range` of the top-level HEADER, TEXT and
    whole message without parsing a multipart's body (the same header end as :func:`parse`)."""
    n = len(buf)
    return Part(0, _header_end(buf, 0, n), n, [])


def _section_octets(buf: Any, root: Part, numbers: Sequence[int], specifier: str, names: Sequence[str], binary: bool) -> bytes:
    specifier = specifier.upper()
    extent = section_range(root, numbers, specifier)
    if extent is None:
        return b""
    data = bytes(buf[extent[0] : extent[1]])
    if specifier.startswith("HEADER.FIELDS"):
        return header_fields(data, names, exclude=specifier.endswith(".NOT"))
    if binary and numbers and specifier == "":
        node = find_part(root, numbers)
        assert node is not None
        if node.multipart or node.message is not None:
            return data
        return _decode_transfer(data, node.encoding)
    return data


def section(
    message: Message,
    part: Sequence[int] | str = (),
    specifier: str = "",
    names: Sequence[str] = (),
    *,
    binary: bool = False,
) -> bytes:
    """The octets of ``BODY[section]`` (RFC 3501 6.4.5), or ``b""`` for a part that does not exist."""
    if isinstance(part, str):
        part, specifier, names = _parse_section_text(part)
    numbers = tuple(part)
    if not numbers and specifier.upper() in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT") and not binary:
        # header-only: read no further than the blank line
        header = read_header(message)  # type: ignore[arg-type]
        if specifier.upper() == "HEADER":
            return header
        return header_fields(header, names, exclude=specifier.upper().endswith(".NOT"))
    with _octets(message) as buf:
        if not numbers and specifier == "":
            return bytes(buf[:])
        root = _parse_octets(buf)
        return _section_octets(buf, root, numbers, specifier, names, binary)


def rfc822_header(message: Message) -> bytes:
    """RFC822.HEADER: the same octets as BODY.PEEK[HEADER] (RFC 3501 6.4.5)."""
    return read_header(message) if not isinstance(message, memoryview) else read_header(message.tobytes())


def rfc822_text(message: Message) -> bytes:
    """RFC822.TEXT: the same octets as BODY[TEXT] (setting \\Seen is the caller's business)."""
    return section(message, (), "TEXT")


def rfc822_size(message: Message) -> int:
    """RFC822.SIZE: the stored octets (CRLF line ends), normally known without reading."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return len(message)
    message.seek(0, 2)
    return message.tell()


def binary_size(message: Message, part: Sequence[int]) -> int:
    """BINARY.SIZE[part] (RFC 3516): the decoded size of the part's body."""
    return len(section(message, tuple(part), "", (), binary=True))


# ---------------------------------------------------------------------------
# Decoded content, for SEARCH
# ---------------------------------------------------------------------------


def decoded_body(buf: Any, part: Part) -> bytes:
    """A leaf part's body with its transfer encoding undone (unknown encodings: as is)."""
    data = bytes(buf[part.body_start : part.end])
    try:
        return _decode_transfer(data, part.encoding)
    except UnknownTransferEncoding:
        return data


def _charset_decoder(charset: bytes | None) -> str:
    name = (charset or b"us-ascii").decode("ascii", "replace").strip().lower() or "us-ascii"
    if name in ("us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        return "utf-8"  # 8-bit octets in "us-ascii" text are UTF-8 in practice
    try:
        codecs.lookup(name)
    except LookupError:
        return "utf-8"
    return name


def body_text(buf: Any, part: Part) -> str:
    """A leaf text part's content as text (transfer encoding and charset undone)."""
    data = decoded_body(buf, part)
    try:
        return data.decode(_charset_decoder(part.param(b"charset")), "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")
