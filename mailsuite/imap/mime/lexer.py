"""Structured header values (RFC 2045 / RFC 5322 lexical tokens): Content-Type and friends, parameters, RFC 2231."""

import re



# ---------------------------------------------------------------------------
# Structured header values (RFC 2045 / RFC 5322 lexical tokens)
# ---------------------------------------------------------------------------

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')
_WSP = frozenset(b" \t\r\n")


class Lexer:
    """A cursor over a structured field value: tokens, quoted strings, comments (CFWS)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.comment: bytes | None = None  # the last comment skipped

    def skip_cfws(self) -> None:
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            if c in _WSP:
                self.pos += 1
            elif c == 0x28:  # "(" comment, nested
                self.comment = self._comment()
            else:
                break

    def _comment(self) -> bytes:
        depth = 0
        out = bytearray()
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            self.pos += 1
            if c == 0x5C and self.pos < n:
                out.append(data[self.pos])
                self.pos += 1
                continue
            if c == 0x28:
                depth += 1
                if depth == 1:
                    continue
            elif c == 0x29:
                depth -= 1
                if depth == 0:
                    break
            out.append(c)
        return bytes(out)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def token(self) -> bytes:
        """RFC 2045 token (8-bit octets tolerated)."""
        start = self.pos
        data = self.data
        n = len(data)
        while self.pos < n and data[self.pos] > 0x20 and data[self.pos] != 0x7F and data[self.pos] not in _TSPECIALS:
            self.pos += 1
        return data[start : self.pos]

    def quoted(self) -> bytes:
        """A quoted-string's content (escapes removed); unterminated runs to the end."""
        self.pos += 1
        out = bytearray()
        data = self.data
        n = len(data)
        while self.pos < n:
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                break
            if c == 0x5C and self.pos < n:
                c = data[self.pos]
                self.pos += 1
            elif c in (0x0D, 0x0A):
                continue
            out.append(c)
        return bytes(out)


def _params(lex: Lexer) -> list[tuple[bytes, bytes]]:
    """``*(";" attribute "=" value)`` leniently, then RFC 2231 merging as Dovecot does."""
    plain: list[tuple[bytes, bytes]] = []
    pieces: list[tuple[bytes, int, bool, bytes]] = []  # key, index, extended, value
    while True:
        lex.skip_cfws()
        c = lex.peek()
        if c is None:
            break
        if c != 0x3B:  # junk: skip to the next ";"
            nxt = lex.data.find(b";", lex.pos)
            if nxt < 0:
                break
            lex.pos = nxt
        lex.pos += 1
        lex.skip_cfws()
        key = lex.token()
        lex.skip_cfws()
        if not key or lex.peek() != 0x3D:
            continue
        lex.pos += 1
        lex.skip_cfws()
        value = lex.quoted() if lex.peek() == 0x22 else lex.token()
        star = key.find(b"*")
        if star < 0:
            plain.append((key, value))
            continue
        rest = key[star + 1 :]
        m = re.fullmatch(rb"(\d*)(\*?)", rest)
        if m is None or (not m.group(1) and not m.group(2)) and rest:
            plain.append((key, value))
            continue
        index = int(m.group(1)) if m.group(1) else 0
        extended = bool(m.group(2)) or (not m.group(1) and rest == b"")
        if rest == b"":  # "name*" alone
            extended = True
        pieces.append((key[:star], index, extended, value))
    if not pieces:
        return plain
    pieces.sort(key=lambda p: (p[0], p[1]))
    merged: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(pieces):
        j = i
        while j < len(pieces) and pieces[j][0].lower() == pieces[i][0].lower():
            j += 1
        group = pieces[i:j]
        complete = all(p[1] == k for k, p in enumerate(group))
        if not complete:
            for key, index, extended, value in group:
                merged.append((key + b"*%d" % index + (b"*" if extended else b""), value))
        else:
            any_extended = any(p[2] for p in group)
            out = b"''" if any_extended and not group[0][2] else b""
            for _key, _index, extended, value in group:
                out += value.replace(b"%", b"%25") if (any_extended and not extended) else value
            merged.append((group[0][0] + (b"*" if any_extended else b""), out))
        i = j
    return plain + merged


def rfc2231_value(value: bytes) -> bytes:
    """``charset'language'%XX..`` (RFC 2231 4) to its octets (the charset is not applied)."""
    parts = value.split(b"'", 2)
    text = parts[2] if len(parts) == 3 else value
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text)


def content_type(value: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """``type/subtype; params`` or None when the type is unusable (RFC 2045 5.2)."""
    lex = Lexer(value)
    lex.skip_cfws()
    major = lex.token()
    lex.skip_cfws()
    if not major or lex.peek() != 0x2F:
        return None
    lex.pos += 1
    lex.skip_cfws()
    minor = lex.token()
    if not minor:
        return None
    return major, minor, _params(lex)


def token_and_params(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    lex = Lexer(value)
    lex.skip_cfws()
    token = lex.token()
    if not token:
        return None
    return token, _params(lex)


def single_token(value: bytes) -> bytes | None:
    lex = Lexer(value)
    lex.skip_cfws()
    token = lex.token()
    lex.skip_cfws()
    if not token or lex.peek() is not None:
        return None
    return token


def languages(value: bytes) -> list[bytes]:
    lex = Lexer(value)
    langs = []
    while True:
        lex.skip_cfws()
        tag = lex.token()
        if not tag:
            break
        langs.append(tag)
        lex.skip_cfws()
        if lex.peek() != 0x2C:
            break
        lex.pos += 1
    return langs
