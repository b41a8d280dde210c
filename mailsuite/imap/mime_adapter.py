"""The few message-structure calls FETCH makes, in one place.

ENVELOPE, BODYSTRUCTURE and BODY[section] extraction belong to
:mod:`mailsuite.imap.mime` (another developer's module); FETCH calls them
only through this adapter so a change of their signatures touches one file.
The top-level header items (``BODY[HEADER.FIELDS (...)]``) are answered
here from the header block alone, which is what lets a header-only FETCH
avoid reading message bodies.
"""

from __future__ import annotations

import re
from typing import BinaryIO

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def literal(data: bytes) -> bytes:
    """``{n}\\r\\n`` + data: the safe way to send any bytes (RFC 3501 4.3)."""
    return b"{%d}\r\n" % len(data) + data


def read_header(fp: BinaryIO | None) -> bytes:
    """The header block of an open message, blank line included."""
    if fp is None:
        return b""
    fp.seek(0)
    lines = []
    for line in fp:
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(lines)


def header_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, whole field incl. folded lines and CRLF) in order."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + line)
            continue
        m = _FIELD_NAME.match(line)
        fields.append(((m.group(1).lower() if m else b""), line))
    return fields


def header_section(header: bytes, specifier: str, names: tuple[str, ...]) -> bytes:
    """BODY[HEADER], BODY[HEADER.FIELDS (..)], BODY[HEADER.FIELDS.NOT (..)] of the top-level message."""
    if specifier == "HEADER":
        return header
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    keep_matching = specifier == "HEADER.FIELDS"
    out = [text for name, text in header_fields(header) if (name in wanted) == keep_matching]
    # RFC 3501 6.4.5: the blank line ending the header is included
    return b"".join(out) + b"\r\n"


def _mime():  # type: ignore[no-untyped-def]
    from mailsuite.imap import mime

    return mime


def envelope(header: bytes) -> bytes:
    """The ENVELOPE list (RFC 3501 7.4.2)."""
    return _mime().envelope(header)  # type: ignore[no-any-return]


def bodystructure(fp: BinaryIO | None, *, extended: bool) -> bytes:
    """BODYSTRUCTURE (extended) or BODY (not extended)."""
    assert fp is not None
    fp.seek(0)
    return _mime().bodystructure(fp, extended=extended)  # type: ignore[no-any-return]


def section(fp: BinaryIO | None, part: tuple[int, ...], specifier: str, names: tuple[str, ...], *, binary: bool = False) -> bytes:
    """The bytes of BODY[part.specifier] (RFC 3501 6.4.5), nested multiparts included."""
    assert fp is not None
    fp.seek(0)
    if not part and specifier in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return header_section(read_header(fp), specifier, names)
    if not part and specifier == "":
        return fp.read()
    if not part and specifier == "TEXT":
        header = read_header(fp)
        fp.seek(len(header))
        return fp.read()
    return _mime().section(fp, part, specifier, names, binary=binary)  # type: ignore[no-any-return]
