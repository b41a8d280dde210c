"""A leaf part's content with transfer encoding and charset undone, for SEARCH."""

import codecs
from typing import Any

from mailsuite.imap.mime.limits import UnknownTransferEncoding
from mailsuite.imap.mime.sections import decode_transfer
from mailsuite.imap.mime.tree import Part


# ---------------------------------------------------------------------------
# Decoded content, for SEARCH
# ---------------------------------------------------------------------------


def decoded_body(buf: Any, part: Part) -> bytes:
    """A leaf part's body with its transfer encoding undone (unknown encodings: as is)."""
    data = bytes(buf[part.body_start : part.end])
    try:
        return decode_transfer(data, part.encoding)
    except UnknownTransferEncoding:
        return data


def charset_decoder(charset: bytes | None) -> str:
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
        return data.decode(charset_decoder(part.param(b"charset")), "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")
