"""A byte-exact IMAP client for replaying what a given mail client sends, with a strict response parser.

Why not imaplib: a client profile must send exactly the bytes that client
sends (its tags, its quoting, LITERAL+, IDLE/DONE) and the test must see
every response line as it came, not imaplib's digest.  Every line the server
sends is parsed against the RFC 3501 9 response grammar (plus the extensions
we announce: ESEARCH-less SEARCH with MODSEQ, ENABLED, ID, NAMESPACE,
LIST-EXTENDED child info); a line that does not parse fails the test with the
line shown.  Values come back as Python objects: ``bytes`` for atoms and
strings, ``int`` for numbers, ``None`` for NIL, lists for parenthesised lists.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
import time
from typing import Any, Iterable

CRLF = b"\r\n"


class ProtocolViolation(AssertionError):
    """The server sent something the IMAP grammar does not allow."""


class Atom(bytes):
    """An atom (as opposed to a quoted string or literal with the same bytes)."""


@dataclasses.dataclass
class Untagged:
    """One ``*`` response: ``kind`` is FETCH/EXISTS/LIST/OK/...; ``number`` for numbered ones."""

    raw: bytes
    kind: str
    number: int | None = None
    code: list[Any] | None = None  # [CODE args...] of OK/NO/BAD/BYE/PREAUTH
    text: str = ""
    values: list[Any] = dataclasses.field(default_factory=list)

    def fetch_items(self) -> dict[str, Any]:
        """A FETCH response's items, names upper-cased (``BODY[HEADER.FIELDS (DATE)]<0>``...)."""
        assert self.kind == "FETCH", self
        pairs = self.values[0]
        return {bytes(pairs[i]).decode().upper(): pairs[i + 1] for i in range(0, len(pairs), 2)}


@dataclasses.dataclass
class Result:
    """What one command got: its untagged responses and the tagged completion."""

    tag: str
    status: str
    code: list[Any] | None
    text: str
    untagged: list[Untagged]
    raw: bytes

    def of(self, kind: str) -> list[Untagged]:
        return [u for u in self.untagged if u.kind == kind]

    def fetches(self) -> dict[int, dict[str, Any]]:
        """Sequence number -> FETCH items, merged when the server sends more than one line per message."""
        out: dict[int, dict[str, Any]] = {}
        for u in self.of("FETCH"):
            out.setdefault(u.number, {}).update(u.fetch_items())
        return out

    def ok(self) -> "Result":
        if self.status != "OK":
            raise AssertionError(f"{self.tag} answered {self.status} {self.code} {self.text}:\n{self.raw.decode(errors='replace')}")
        return self


class Parser:
    """Parses one response (lines joined with their literals) by RFC 3501 9."""

    #: Bytes that end an atom here (RFC 3501 9 atom-specials, less the list-wildcards and backslash
    #: that flags like ``\*`` and ``\Seen`` use).
    _ATOM_SPECIALS = frozenset(b'(){ "]') | frozenset(range(0, 32)) | {127}

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, why: str) -> ProtocolViolation:
        return ProtocolViolation(f"{why} at byte {self.pos}: {self.data!r}")

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def expect(self, token: bytes) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def accept(self, token: bytes) -> bool:
        if self.data[self.pos:self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("unexpected trailing data")

    def number(self) -> int:
        m = re.compile(rb"\d+").match(self.data, self.pos)
        if not m:
            raise self.fail("expected a number")
        self.pos = m.end()
        value = int(m.group())
        if value > 2**63:
            raise self.fail("number too large")
        return value

    def atom(self, *, fetch_key: bool = False) -> Atom:
        start = self.pos
        while self.pos < len(self.data):
            c = self.data[self.pos]
            if c == 0x5B and fetch_key:  # BODY[section (fields)] and <partial>
                close = self.data.find(b"]", self.pos)
                if close < 0:
                    raise self.fail("unclosed [")
                self.pos = close + 1
                if self.peek() == 0x3C:
                    m = re.compile(rb"<\d+>").match(self.data, self.pos)
                    if not m:
                        raise self.fail("bad <origin>")
                    self.pos = m.end()
                break
            if c in self._ATOM_SPECIALS:
                break
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected an atom")
        return Atom(self.data[start:self.pos])

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        while True:
            c = self.peek()
            if c is None or c in (0x0D, 0x0A):
                raise self.fail("unterminated quoted string")
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                nxt = self.peek()
                if nxt not in (0x22, 0x5C):
                    raise self.fail("bad escape in quoted string")
                out.append(nxt)
                self.pos += 1
            else:
                out.append(c)

    def literal(self) -> bytes:
        m = re.compile(rb"\{(\d+)\}\r\n").match(self.data, self.pos)
        if not m:
            raise self.fail("bad literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise self.fail("literal shorter than announced")
        self.pos = start + size
        return self.data[start:self.pos]

    def value(self, *, fetch_key: bool = False) -> Any:
        c = self.peek()
        if c is None:
            raise self.fail("expected a value")
        if c == 0x28:
            return self.paren_list(fetch_key=fetch_key)
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        if self.data[self.pos:self.pos + 3].upper() == b"NIL" and (self.pos + 3 == len(self.data) or self.data[self.pos + 3] in b" )"):
            self.pos += 3
            return None
        if 0x30 <= c <= 0x39:
            m = re.compile(rb"\d+(?=[ )\]]|$)").match(self.data, self.pos)
            if m:
                return self.number()
        return self.atom(fetch_key=fetch_key)

    def paren_list(self, *, fetch_key: bool = False) -> list[Any]:
        self.expect(b"(")
        items: list[Any] = []
        while True:
            if self.peek() == 0x29:
                self.pos += 1
                return items
            if items:
                # body-type-mpart: "1*body SP media-subtype", the parts not separated (RFC 3501 9)
                if not (isinstance(items[-1], list) and self.peek() == 0x28):
                    self.expect(b" ")
            # in a FETCH list every even position is an item name
            items.append(self.value(fetch_key=fetch_key and len(items) % 2 == 0))

    def values_to_end(self) -> list[Any]:
        out = []
        while not self.at_end():
            self.expect(b" ")
            out.append(self.value())
        return out

    def resp_text(self) -> tuple[list[Any] | None, str]:
        """[resp-text-code] text (RFC 3501 9 "resp-text")."""
        code = None
        if self.at_end():
            return None, ""
        self.expect(b" ")
        if self.peek() == 0x5B:
            self.pos += 1
            close = self.data.find(b"]", self.pos)
            if close < 0:
                raise self.fail("unclosed response code")
            inner = Parser(self.data[self.pos:close])
            code = [inner.atom()]
            while not inner.at_end():
                inner.expect(b" ")
                code.append(inner.value())
            self.pos = close + 1
            if self.peek() == 0x20:
                self.pos += 1
        text = self.data[self.pos:]
        if b"\r" in text or b"\n" in text:
            raise self.fail("CR or LF in text")
        self.pos = len(self.data)
        return code, text.decode("utf-8", "replace")


def parse_untagged(raw: bytes) -> Untagged:
    """Parse a ``* ...`` response (CRLF removed) strictly."""
    p = Parser(raw)
    p.expect(b"* ")
    if p.peek() is not None and 0x30 <= p.peek() <= 0x39:
        number = p.number()
        p.expect(b" ")
        kind = p.atom().decode().upper()
        u = Untagged(raw, kind, number)
        if kind == "FETCH":
            p.expect(b" ")
            u.values = [p.paren_list(fetch_key=True)]
            items = u.values[0]
            if len(items) % 2:
                raise p.fail("FETCH list with an odd number of items")
        elif kind not in ("EXISTS", "RECENT", "EXPUNGE"):
            raise p.fail(f"unknown numbered response {kind}")
        p.end()
        return u
    kind = p.atom().decode().upper()
    u = Untagged(raw, kind)
    if kind in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        u.code, u.text = p.resp_text()
    elif kind in ("CAPABILITY", "ENABLED"):
        while not p.at_end():
            p.expect(b" ")
            u.values.append(p.atom(fetch_key=False))
    elif kind in ("LIST", "LSUB"):
        p.expect(b" ")
        flags = p.paren_list()
        p.expect(b" ")
        delimiter = p.value()
        if delimiter is not None and (not isinstance(delimiter, bytes) or len(delimiter) != 1):
            raise p.fail("bad hierarchy delimiter")
        p.expect(b" ")
        name = p.value()
        if not isinstance(name, bytes):
            raise p.fail("bad mailbox name")
        u.values = [flags, delimiter, name, *p.values_to_end()]
    elif kind == "STATUS":
        p.expect(b" ")
        name = p.value()
        p.expect(b" ")
        items = p.paren_list()
        if len(items) % 2 or not all(isinstance(items[i + 1], int) for i in range(0, len(items), 2)):
            raise p.fail("STATUS items must be name/number pairs")
        u.values = [name, items]
    elif kind == "SEARCH":
        while not p.at_end():
            p.expect(b" ")
            if p.peek() == 0x28:  # RFC 7162 3.1.5 (MODSEQ n)
                u.values.append(p.paren_list())
            else:
                u.values.append(p.number())
    elif kind == "FLAGS":
        p.expect(b" ")
        u.values = [p.paren_list()]
    elif kind in ("NAMESPACE", "ID"):
        u.values = p.values_to_end()
    else:
        u.values = p.values_to_end()
    p.end()
    return u


class Wire:
    """One connection: send exact bytes, read responses as they come."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.sock: Any = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="mail.example.test")
        self.buffer = b""
        self.closed = False
        self.timeout = timeout
        self.transcript: list[bytes] = []
        self.greeting = parse_untagged(self.read_response())

    # -- reading ---------------------------------------------------------
    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def _line(self) -> bytes:
        while CRLF not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(CRLF)
        return line

    def read_response(self) -> bytes:
        """One logical response: a line, with each ``{n}`` literal and the line that follows it."""
        out = self._line()
        while True:
            m = re.search(rb"\{(\d+)\}$", out)
            if not m:
                break
            size = int(m.group(1))
            while len(self.buffer) < size:
                self._fill()
            out += CRLF + self.buffer[:size]
            self.buffer = self.buffer[size:]
            out += self._line()
        self.transcript.append(b"S: " + out)
        return out

    def starttls(self, context: ssl.SSLContext) -> None:
        assert not self.buffer, "server sent data after the STARTTLS OK"
        self.sock = context.wrap_socket(self.sock, server_hostname="mail.example.test")

    # -- writing ---------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.transcript.append(b"C: " + data)
        self.sock.sendall(data)

    def continuation(self) -> bytes:
        """Wait for ``+ ...`` (literal or IDLE go-ahead); untagged responses before it are collected."""
        line = self.read_response()
        if not line.startswith(b"+"):
            raise ProtocolViolation(f"expected a continuation, got {line!r}")
        if line != b"+" and not line.startswith(b"+ "):
            raise ProtocolViolation(f"bad continuation {line!r}")
        return line

    def command(self, tag: str, *parts: bytes | str, literal_plus: bool = False) -> Result:
        """Send ``tag parts...`` where a ``bytes`` part after the first is sent as a literal."""
        pieces = [p.encode() if isinstance(p, str) else p for p in parts]
        head = f"{tag} ".encode() + pieces[0]
        rest = pieces[1:]
        line = head
        # literal parts alternate with text: text, literal, text, literal...
        for i, piece in enumerate(rest):
            if i % 2 == 0:  # a literal
                marker = f"{{{len(piece)}{'+' if literal_plus else ''}}}".encode()
                self.send(line + marker + CRLF)
                if not literal_plus:
                    self.continuation()
                self.send(piece)
                line = b""
            else:
                line += piece
        self.send(line + CRLF)
        return self.finish(tag)

    def finish(self, tag: str) -> Result:
        """Read untagged responses up to ``tag``'s completion, checking each one's syntax."""
        untagged: list[Untagged] = []
        raw = []
        while True:
            line = self.read_response()
            raw.append(line)
            if line.startswith(b"* "):
                untagged.append(parse_untagged(line))
                continue
            if line.startswith(b"+"):
                raise ProtocolViolation(f"unexpected continuation {line!r} for {tag}")
            p = Parser(line)
            got = p.atom()
            if got.decode() != tag:
                raise ProtocolViolation(f"tagged response for {got!r} while waiting for {tag}: {line!r}")
            p.expect(b" ")
            status = p.atom().decode().upper()
            if status not in ("OK", "NO", "BAD"):
                raise ProtocolViolation(f"bad status {status!r}: {line!r}")
            code, text = p.resp_text()
            if not text:
                raise ProtocolViolation(f"tagged response without text: {line!r}")  # RFC 3501 9: text = 1*TEXT-CHAR
            return Result(tag, status, code, text, untagged, CRLF.join(raw))

    def read_untagged(self, until: float) -> list[Untagged]:
        """Untagged responses that arrive within ``until`` seconds (for IDLE)."""
        out: list[Untagged] = []
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if CRLF not in self.buffer:
                    self._fill()
                while CRLF in self.buffer:
                    out.append(parse_untagged(self.read_response()))
            except (socket.timeout, TimeoutError):
                break
            except ConnectionError:
                self.closed = True  # what came before the close (a BYE) is still returned
                break
            finally:
                self.sock.settimeout(self.timeout)
        return out

    def wait_untagged(self, predicate: Any, timeout: float) -> list[Untagged]:
        """Collect untagged responses until one satisfies ``predicate`` (fail after ``timeout``)."""
        seen: list[Untagged] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += self.read_untagged(min(0.2, deadline - time.monotonic()))
            if any(predicate(u) for u in seen):
                return seen
            if self.closed:
                break
        raise AssertionError(f"no matching untagged response within {timeout}s; got {[u.raw for u in seen]}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def quote(text: str) -> str:
    """An IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def flags_of(items: dict[str, Any]) -> set[str]:
    return {bytes(f).decode() for f in items["FLAGS"]}


def names(values: Iterable[Any]) -> list[str]:
    return [bytes(v).decode() for v in values]
