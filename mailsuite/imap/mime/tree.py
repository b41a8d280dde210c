"""The MIME structure tree (RFC 2045, 2046): one pass over the raw octets, byte offsets for every part."""

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from mailsuite.imap.mime.lexer import content_type, rfc2231_value, single_token
from mailsuite.imap.mime.limits import MAX_DEPTH, MAX_HEADER_PARSED, MAX_PARTS, Message
from mailsuite.imap.mime.octets import Field, octets_of, split_fields


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
                return rfc2231_value(value)
        return None

    @property
    def encoding(self) -> bytes | None:
        """The Content-Transfer-Encoding token as written, or None."""
        value = self.field("content-transfer-encoding")
        return single_token(value) if value is not None else None

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
        parsed = content_type(ctype) if ctype is not None else None
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


def parse_octets(buf: Any) -> Part:
    root, _ = _Parser(buf).entity(0, [], False, 0)
    root.end = len(buf)  # anything after a stray delimiter still belongs to the message
    return root


def parse(message: Message) -> Part:
    """The structure tree of a message (offsets into its octets)."""
    with octets_of(message) as buf:
        return parse_octets(buf)
