"""Getting at a message's octets (bytes, mmap or file) and its header blocks and fields."""

import contextlib
import io
import mmap
import re
from typing import Any, BinaryIO, Iterator, Sequence

from mailsuite.imap.mime.limits import Message


# ---------------------------------------------------------------------------
# Getting at the octets
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def octets_of(message: Message) -> Iterator[Any]:
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
        return data[: header_end(data, 0, len(data))]
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


def header_end(buf: Any, start: int, limit: int) -> int:
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
