"""The few header calls FETCH makes on its reactor-thread path, in one place.

ENVELOPE and header blocks are :mod:`mailsuite.imap.mime`'s; the header-only
FETCH path (``BODY[HEADER.FIELDS (...)]``, ``RFC822.HEADER``, ``ENVELOPE`` from
small header blocks of the shared header cache) calls them only through this
adapter, so a change of their signatures touches one file.  Everything that
needs more of a message (structure, sections) is worked out on the store's
threads by :mod:`mailsuite.imap.mime_fetch`.
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
