"""Addresses and the ENVELOPE list (RFC 3501 7.4.2, RFC 5322 3.4)."""

import re
from typing import BinaryIO, Union

from mailsuite.imap import wire
from mailsuite.imap.mime.lexer import Lexer
from mailsuite.imap.mime.octets import Field, read_header, split_fields


# ---------------------------------------------------------------------------
# ENVELOPE (RFC 3501 7.4.2)
# ---------------------------------------------------------------------------

_ADDR_SPECIALS = frozenset(b'()<>[]:;@\\,."')


def _for_humans(value: bytes) -> bytes:
    """Subject and display names as Dovecot sends them: CR/LF dropped, tabs and
    runs of blanks collapsed to one space, outer blanks trimmed, NUL as 0x80."""
    cleaned = value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\t", b" ").replace(b"\x00", b"\x80")
    return re.sub(rb" {2,}", b" ", cleaned).strip(b" ")


_ADDRESS_TOKEN = re.compile(rb'([ \t\r\n]+)|([^\x00-\x20()<>\[\]:;@\\,."\x7f]+)|(.)', re.S)


def _address_tokens(value: bytes) -> list[tuple[str, bytes, bool]]:
    """(kind, text, space-before) tokens of an address header; kinds: atom qs dl comment or a special char."""
    tokens: list[tuple[str, bytes, bool]] = []
    lex = Lexer(value)
    data = value
    n = len(data)
    space = False
    match = _ADDRESS_TOKEN.match
    while lex.pos < n:
        m = match(data, lex.pos)
        assert m is not None  # the last alternative matches any octet
        if m.group(1):
            lex.pos = m.end()
            space = True
            continue
        if m.group(2):
            tokens.append(("atom", m.group(2), space))
            lex.pos = m.end()
        else:
            c = data[lex.pos]
            if c == 0x28:
                tokens.append(("comment", lex._comment(), space))
            elif c == 0x22:
                tokens.append(("qs", lex.quoted(), space))
            elif c == 0x5B:
                end = data.find(b"]", lex.pos)
                end = n - 1 if end < 0 else end
                tokens.append(("dl", data[lex.pos : end + 1], space))
                lex.pos = end + 1
            else:
                tokens.append((chr(c), bytes([c]), space))
                lex.pos += 1
        space = False
    return tokens


Address = tuple[Union[bytes, None], Union[bytes, None], Union[bytes, None], Union[bytes, None]]


class _AddressParser:
    """RFC 5322 3.4 address-list over tokens, lenient like Dovecot's."""

    def __init__(self, value: bytes) -> None:
        self.tokens = _address_tokens(value)
        self.i = 0
        self.out: list[Address] = []

    def kind(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.tokens[j][0] if j < len(self.tokens) else None

    def skip_comments(self) -> bytes | None:
        last = None
        while self.kind() == "comment":
            last = self.tokens[self.i][1]
            self.i += 1
        return last

    def phrase(self) -> tuple[bytes, bytes | None]:
        """Words (atoms, quoted strings, dots) and the last comment seen."""
        out = b""
        comment = None
        while self.i < len(self.tokens):
            kind, text, space = self.tokens[self.i]
            if kind == "comment":
                comment = text
            elif kind in ("atom", "qs", "."):
                if out and space:
                    out += b" "
                out += text
            else:
                break
            self.i += 1
        return out, comment

    def parse(self) -> list[Address]:
        guard = 0
        while self.i < len(self.tokens):
            guard += 1
            if guard > 10000:
                break
            if self.kind() in (",", ";", ">"):
                self.i += 1
                continue
            start = self.i
            name, _comment = self.phrase()
            if self.kind() == ":":
                self.i += 1
                self.group(name)
                continue
            self.i = start
            self.mailbox()
            if self.i == start:
                self.i += 1  # never stall on junk
        return self.out

    def group(self, name: bytes) -> None:
        # RFC 3501 7.4.2: group start (NIL NIL name NIL), group end (NIL NIL NIL NIL)
        self.out.append((None, None, name, None))
        while self.i < len(self.tokens) and self.kind() != ";":
            if self.kind() in (",", ">", ":"):
                self.i += 1
                continue
            start = self.i
            self.mailbox()
            if self.i == start:
                self.i += 1
        if self.kind() == ";":
            self.i += 1
        self.out.append((None, None, None, None))

    def mailbox(self) -> None:
        start = self.i
        name, comment = self.phrase()
        if self.kind() == "<":
            self.i += 1
            self.angle(name or None)
            return
        self.i = start
        local, comment = self.local_part()
        domain = None
        if self.kind() == "@":
            self.i += 1
            domain, c2 = self.domain()
            comment = c2 or comment
        trailing = self.skip_comments()
        comment = trailing or comment
        if local is None and domain is None:
            return  # nothing but comments or junk: no address (the caller moves on)
        self.add(comment, None, local, domain)

    def angle(self, name: bytes | None) -> None:
        route = None
        self.skip_comments()
        if self.kind() == "@":
            hops = []
            while self.kind() in ("@", ","):
                if self.kind() == ",":
                    self.i += 1
                    continue
                self.i += 1
                hop, _ = self.domain()
                hops.append(b"@" + (hop or b""))
            if self.kind() == ":":
                self.i += 1
                route = b",".join(hops)
            else:
                route = b"INVALID_ROUTE"
        local, _ = self.local_part()
        domain = None
        if self.kind() == "@":
            self.i += 1
            domain, _ = self.domain()
        broken = self.kind() != ">"
        while self.i < len(self.tokens) and self.kind() != ">" and self.kind() not in (",", ";"):
            self.i += 1
        if self.kind() == ">":
            self.i += 1
        self.skip_comments()
        if broken:
            domain = b"SYNTAX_ERROR"
        self.add(name, route, local, domain)

    def local_part(self) -> tuple[bytes | None, bytes | None]:
        return self._run_of(("atom", "qs", "."))

    def domain(self) -> tuple[bytes | None, bytes | None]:
        return self._run_of(("atom", ".", "dl"))

    def _run_of(self, kinds: tuple[str, ...]) -> tuple[bytes | None, bytes | None]:
        """The text of the tokens of ``kinds`` from here (None if there are none) and the last comment among them."""
        out = b""
        comment = None
        seen = False
        while self.i < len(self.tokens):
            kind, text, _space = self.tokens[self.i]
            if kind == "comment":
                comment = text
            elif kind in kinds:
                out += text
                seen = True
            else:
                break
            self.i += 1
        return (out if seen else None), comment

    def add(self, name: bytes | None, route: bytes | None, local: bytes | None, domain: bytes | None) -> None:
        self.out.append((
            _for_humans(name) if name else None,
            route,
            local if local is not None else b"MISSING_MAILBOX",
            domain if domain is not None else b"MISSING_DOMAIN",
        ))


def parse_addresses(value: bytes) -> list[Address]:
    """(name, route, mailbox, host) tuples of an address header, with group markers."""
    return _AddressParser(value).parse()


def _address_list(value: bytes | None) -> bytes:
    if value is None:
        return b"NIL"
    addresses = parse_addresses(value)
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(wire.nstring(x) for x in a) + b")" for a in addresses) + b")"


_ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id")


def envelope_from_fields(fields: list[Field]) -> bytes:
    values: dict[str, bytes] = {}
    for f in fields:
        if f.name in _ENVELOPE_FIELDS:
            values[f.name] = f.value  # the last occurrence wins, as in Dovecot
    def text(name: str) -> bytes:
        value = values.get(name)
        if value is None:
            return b"NIL"
        return wire.string(_for_humans(value) if name == "subject" else value)
    from_ = _address_list(values.get("from"))
    sender = _address_list(values.get("sender"))
    reply_to = _address_list(values.get("reply-to"))
    # RFC 3501 7.4.2: sender and reply-to default to from
    if sender == b"NIL":
        sender = from_
    if reply_to == b"NIL":
        reply_to = from_
    items = [
        text("date"), text("subject"), from_, sender, reply_to,
        _address_list(values.get("to")), _address_list(values.get("cc")), _address_list(values.get("bcc")),
        text("in-reply-to"), text("message-id"),
    ]
    return b"(" + b" ".join(items) + b")"


def envelope(header: bytes | BinaryIO) -> bytes:
    """The ENVELOPE list of a message from its header block (RFC 3501 7.4.2)."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        header = read_header(header)
    return envelope_from_fields(split_fields(bytes(header)))
