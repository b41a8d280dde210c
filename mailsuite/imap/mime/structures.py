"""BODY and BODYSTRUCTURE (RFC 3501 7.4.2) from the structure tree."""

from typing import Any

from mailsuite.imap import wire
from mailsuite.imap.mime.addresses import envelope_from_fields
from mailsuite.imap.mime.lexer import languages, token_and_params
from mailsuite.imap.mime.limits import Message
from mailsuite.imap.mime.octets import octets_of
from mailsuite.imap.mime.tree import Part, parse_octets


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
    parsed = token_and_params(disposition) if disposition is not None else None
    if parsed is None:
        dsp = b"NIL"
    else:
        dsp = b"(" + wire.string(parsed[0]) + b" " + _param_list(parsed[1], False) + b")"
    language = part.field("content-language")
    langs = languages(language) if language is not None else []
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
        items.append(envelope_from_fields(inner.fields))
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
    with octets_of(message) as buf:
        return _structure(buf, parse_octets(buf), extended)
