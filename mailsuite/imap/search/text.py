"""Header text as SEARCH matches it: RFC 2047 encoded words decoded, Unicode case folding, address forms."""

from __future__ import annotations

import base64
import binascii
import re

from mailsuite.imap import mime

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


def fold(text: str) -> str:
    return text.casefold()


#: RFC 3501 6.4.4: FROM, TO, CC and BCC look in the envelope structure's address fields.
ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc"})
BLANKS = re.compile(rb"[ \t\r\n]+")


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
