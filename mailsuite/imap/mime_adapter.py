"""The few message-structure calls FETCH makes, in one place.

ENVELOPE, BODYSTRUCTURE, header blocks and BODY[section] extraction are
:mod:`mailsuite.imap.mime`'s; FETCH calls them only through this adapter,
so a change of their signatures touches one file.  The top-level header
items (``BODY[HEADER.FIELDS (...)]``, ``RFC822.HEADER``, ``ENVELOPE``) are
answered from the header block alone, which is what lets a header-only
FETCH avoid reading message bodies (and use the shared header cache).
"""

from __future__ import annotations

from typing import BinaryIO

from mailsuite.imap import mime, wire


def literal(data: bytes) -> bytes:
    """``{n}\\r\\n`` + data: the safe way to send any bytes (RFC 3501 4.3)."""
    return wire.literal(data)


def read_header(fp: BinaryIO | None) -> bytes:
    """The header block of an open message, blank line included."""
    if fp is None:
        return b""
    fp.seek(0)
    return mime.read_header(fp)


def header_section(header: bytes, specifier: str, names: tuple[str, ...]) -> bytes:
    """BODY[HEADER], BODY[HEADER.FIELDS (..)], BODY[HEADER.FIELDS.NOT (..)] of the top-level message."""
    if specifier == "HEADER":
        return header
    return mime.header_fields(header, names, exclude=specifier == "HEADER.FIELDS.NOT")


def envelope(header: bytes) -> bytes:
    """The ENVELOPE list (RFC 3501 7.4.2)."""
    return mime.envelope(header)


def bodystructure(fp: BinaryIO | None, *, extended: bool) -> bytes:
    """BODYSTRUCTURE (extended) or BODY (not extended)."""
    assert fp is not None
    fp.seek(0)
    return mime.bodystructure(fp, extended=extended)


def section(fp: BinaryIO | None, part: tuple[int, ...], specifier: str, names: tuple[str, ...], *, binary: bool = False) -> bytes:
    """The bytes of BODY[part.specifier] (RFC 3501 6.4.5), nested multiparts included."""
    assert fp is not None
    fp.seek(0)
    return mime.section(fp, part, specifier, names, binary=binary)
