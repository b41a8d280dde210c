"""The message as search keys see it: its text leaves and header ranges, found with as little parsing as possible."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from mailsuite.imap import mime

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
    codec = mime.charset_decoder(part.param(b"charset"))
    return (part.body_start, part.end, transfer, codec, _ascii_safe(codec))


def _header_range(part: mime.Part) -> tuple[int, int]:
    # the octets mime's parser splits into Part.fields
    return (part.start, min(part.body_start, part.start + mime.MAX_HEADER_PARSED))


_PLAIN_CODEC = mime.charset_decoder(None)  # what body_text uses for text without a charset
PLAIN_SAFE = _ascii_safe(_PLAIN_CODEC)


def simple_structure(data: bytes, lower: bytes | None = None) -> Structure | None:
    """The structure of a message whose header has no Content-* field (one text/plain
    us-ascii leaf, RFC 2045 5.2), found without a MIME parse; None for any other message.
    ``lower``: ``data.lower()`` if the caller has it."""
    body_start = mime.header_end(data, 0, len(data))  # where mime's parser ends the top-level header
    header_end = min(body_start, mime.MAX_HEADER_PARSED)
    if lower is not None:
        if lower.find(b"content-", 0, header_end) >= 0:
            return None
    elif b"content-" in data[:header_end].lower():
        return None
    return (((0, header_end),), ((body_start, len(data), None, _PLAIN_CODEC, PLAIN_SAFE),))


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
    parsed = mime.content_type(value) if value is not None else None
    if parsed is not None:
        part.media_type, part.subtype, part.params = parsed[0], parsed[1], list(parsed[2])
    major = part.media_type.lower()
    if (major == b"multipart" and part.param(b"boundary")) or (major == b"message" and part.subtype.lower() == b"rfc822"):
        return ("parse", "", False)
    if major != b"text":
        return ("other", "", False)
    codec = mime.charset_decoder(part.param(b"charset"))
    return ("text", codec, _ascii_safe(codec))


def _transfer(value: bytes) -> bytes | None:
    """The transfer encoding to undo for a Content-Transfer-Encoding value (None: as is)."""
    encoding = (mime.single_token(value) or b"7bit").lower()
    return encoding if encoding in (b"base64", b"quoted-printable") else None


def single_part_structure(data: bytes) -> Structure | None:
    """The structure of a message that is not multipart nor message/rfc822, read from its
    Content-Type and Content-Transfer-Encoding fields alone (found by regex as in header
    SEARCH) instead of a MIME parse; None when a parse is needed (a multipart, an encapsulated
    message, a header with a bare CR)."""
    body_start = mime.header_end(data, 0, len(data))
    header_end = min(body_start, mime.MAX_HEADER_PARSED)
    lines = lf_fields(data[:header_end])
    if lines is None:
        return None
    # mime's parser reads the first Content-Type and the first Content-Transfer-Encoding
    ctype = field_pattern("content-type").search(lines)
    kind, codec, safe = _memo(_content_types, mime.unfold(ctype.group(1)) if ctype is not None else None, _content_kind)
    if kind == "parse":
        return None
    headers = ((0, header_end),)
    if kind == "other":
        return (headers, ())
    cte = field_pattern("content-transfer-encoding").search(lines)
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


def structure_cost(structure: Structure) -> int:
    return 120 + 40 * len(structure[0]) + 120 * len(structure[1])


def leaf_text(data: bytes, leaf: Leaf) -> str:
    """A text leaf as text, exactly as :func:`mime.body_text` decodes it."""
    start, end, transfer, codec, _safe = leaf
    raw = data[start:end]
    if transfer is not None:
        raw = mime.decode_transfer(raw, transfer)
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
            if not _ascii_safe(mime.charset_decoder(name)):
                return False
    if needle_ascii is None:
        return True  # a non-ASCII needle in all-ASCII text
    if needle_ascii in lower:
        return False
    if text and needle_ascii in lower.replace(b"\r\n", b"").replace(b"\n", b""):
        return False  # header fields are matched unfolded
    return True


_field_patterns: dict[str, re.Pattern[bytes]] = {}


def field_pattern(name: str) -> re.Pattern[bytes]:
    """``name:`` at a line start and its continuation lines (in a header split at LF only)."""
    pattern = _field_patterns.get(name)
    if pattern is None:
        pattern = re.compile(b"^" + re.escape(name.encode("latin-1")) + rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)
        if len(_field_patterns) < 256:
            _field_patterns[name] = pattern
    return pattern


def lf_fields(header: bytes) -> bytes | None:
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
