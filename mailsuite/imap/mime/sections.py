"""BODY[section] and the RFC822.* items (RFC 3501 6.4.5), BINARY (RFC 3516)."""

import base64
import binascii
import re
from typing import Any, Sequence

from mailsuite.imap import wire
from mailsuite.imap.mime.limits import Message, UnknownTransferEncoding
from mailsuite.imap.mime.octets import header_end, header_fields, octets_of, read_header
from mailsuite.imap.mime.tree import Part, parse_octets


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


def decode_transfer(data: bytes, encoding: bytes | None) -> bytes:
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
    return Part(0, header_end(buf, 0, n), n, [])


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
        return decode_transfer(data, node.encoding)
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
    with octets_of(message) as buf:
        if not numbers and specifier == "":
            return bytes(buf[:])
        root = parse_octets(buf)
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
