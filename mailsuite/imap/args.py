"""A cursor over one command's arguments, as the command handlers read them.

The handlers of :mod:`mailsuite.imap.server` read their arguments through
:class:`Arguments` (``args.mailbox()``, ``args.seqset()``, ``args.end()``)
so the grammar of each command reads like RFC 3501 9.  The token rules
(atoms, quoted strings, literals, sequence sets, modified UTF-7) are the
ones of RFC 3501 4 and 9; where :mod:`mailsuite.imap.wire` provides a
parser for a production it is used, this module only keeps the cursor.

Every syntax error raises :class:`ParseError`, which the server answers with
a tagged BAD (the connection stays usable).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

try:  # the data-format module of the other IMAP developer
    from mailsuite.imap.wire import ParseError as _WireParseError
except Exception:  # pragma: no cover - until wire.py lands
    _WireParseError = None  # type: ignore[assignment,misc]


if _WireParseError is not None:
    class ParseError(_WireParseError):  # type: ignore[valid-type,misc]
        """The command's arguments do not follow the grammar (answered BAD)."""
else:
    class ParseError(ValueError):  # type: ignore[no-redef]
        """The command's arguments do not follow the grammar (answered BAD)."""


_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 0x20)) | {0x7F}
_LITERAL = re.compile(rb"~?\{(\d{1,20})\+?\}\r\n")
_DATE_TIME = re.compile(r"^([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")
_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")


def is_atom_char(c: int) -> bool:
    """ATOM-CHAR of RFC 3501 9."""
    return c not in _ATOM_SPECIALS and c < 0x80


def decode_mutf7(raw: bytes) -> str:
    """Modified UTF-7 mailbox name (RFC 3501 5.1.3) to str; 8-bit UTF-8 accepted as is."""
    try:
        from mailsuite.imap import wire

        decoder = getattr(wire, "decode_mailbox_name", None) or getattr(wire, "decode_mutf7", None)
        if decoder is not None:
            return decoder(raw)  # type: ignore[no-any-return]
    except ImportError:
        pass
    if any(b >= 0x80 for b in raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Mailbox name is not valid UTF-8") from None
    text = raw.decode("ascii")
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ParseError("Invalid modified UTF-7 in mailbox name")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            import base64

            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except Exception:
                raise ParseError("Invalid modified UTF-7 in mailbox name") from None
        i = end + 1
    return "".join(out)


def encode_mutf7(name: str) -> bytes:
    """str mailbox name to modified UTF-7 (RFC 3501 5.1.3)."""
    try:
        from mailsuite.imap import wire

        encoder = getattr(wire, "encode_mailbox_name", None) or getattr(wire, "encode_mutf7", None)
        if encoder is not None:
            result = encoder(name)
            return result if isinstance(result, bytes) else result.encode("ascii")
    except ImportError:
        pass
    import base64

    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    flush()
    return "".join(out).encode("ascii")


def normalise_mailbox(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1); other names are kept as given."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX" + name[5:]
    return name


@dataclass
class FetchAtt:
    """One FETCH data item: ``name`` ("FLAGS", "BODY", "BINARY"...), section parts, partial range.

    ``section`` is the text inside ``[]`` split into the part numbers and the
    text specifier; ``fields`` the header field names of HEADER.FIELDS[.NOT].
    """

    name: str
    peek: bool = False
    section: tuple[int, ...] | None = None  # None: no [] at all
    specifier: str = ""  # "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    raw_section: str = ""

    def response_name(self) -> bytes:
        """How the item is named in the response: ``BODY[1.HEADER.FIELDS (FROM)]<0>``."""
        if self.section is None:
            return self.name.encode()
        name = "BODY" if self.name == "BODY" else self.name
        text = f"{name}[{self.raw_section}]"
        if self.partial is not None:
            text += f"<{self.partial[0]}>"
        return text.encode()


@dataclass
class Arguments:
    """The unread rest of a command; methods consume one production each."""

    data: bytes
    pos: int = 0

    # -- low level ---------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def end(self) -> None:
        """No more arguments may follow."""
        if not self.at_end():
            raise ParseError(f"Unexpected arguments: {self.data[self.pos:self.pos + 30]!r}")

    def space(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("Missing argument" if self.at_end() else "Expected a space")
        self.pos += 1

    def maybe_space(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def expect(self, text: bytes) -> None:
        if self.data[self.pos : self.pos + len(text)].upper() != text.upper():
            raise ParseError(f"Expected {text.decode()}")
        self.pos += len(text)

    def accept(self, text: bytes) -> bool:
        if self.data[self.pos : self.pos + len(text)].upper() == text.upper():
            self.pos += len(text)
            return True
        return False

    # -- tokens --------------------------------------------------------------
    def atom(self, extra: bytes = b"") -> str:
        """An atom (RFC 3501 9); ``extra`` adds allowed characters (e.g. ``]`` or ``%*``)."""
        start = self.pos
        allowed_extra = set(extra)
        while self.pos < len(self.data):
            c = self.data[self.pos]
            if is_atom_char(c) or c in allowed_extra:
                self.pos += 1
            else:
                break
        if self.pos == start:
            raise ParseError("Missing argument" if self.at_end() else "Expected an atom")
        return self.data[start : self.pos].decode("ascii")

    def number(self) -> int:
        text = self.atom()
        if not text.isdigit() or len(text) > 20:
            raise ParseError(f"Expected a number, got {text[:20]}")
        return int(text)

    def quoted(self) -> bytes:
        assert self.data[self.pos] == 0x22
        self.pos += 1
        out = bytearray()
        while True:
            if self.pos >= len(self.data):
                raise ParseError("Unterminated quoted string")
            c = self.data[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                self.pos += 1
                if self.pos >= len(self.data) or self.data[self.pos] not in (0x22, 0x5C):
                    raise ParseError("Invalid escape in quoted string")
                c = self.data[self.pos]
            elif c in (0x0D, 0x0A, 0):
                raise ParseError("Invalid character in quoted string")
            out.append(c)
            self.pos += 1

    def literal(self) -> bytes:
        return bytes(self.literal_view())

    def literal_view(self) -> memoryview:
        """A literal without copying it (APPEND's message can be tens of megabytes)."""
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            raise ParseError("Expected a literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError("Truncated literal")
        self.pos = start + size
        return memoryview(self.data)[start : self.pos]

    def string(self) -> bytes:
        """quoted / literal."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c in (0x7B, 0x7E):
            return self.literal()
        raise ParseError("Missing argument" if c is None else "Expected a string")

    def astring(self) -> bytes:
        """atom / string, ``]`` allowed in the atom form (RFC 3501 9 ASTRING-CHAR)."""
        c = self.peek()
        if c in (0x22, 0x7B, 0x7E):
            return self.string()
        return self.atom(b"]").encode("ascii")

    def nstring_or_nil(self) -> bytes | None:
        if self.accept(b"NIL"):
            return None
        return self.string()

    def text_astring(self) -> str:
        """An astring as UTF-8 text (user names, passwords)."""
        raw = self.astring()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Not valid UTF-8") from None

    def mailbox(self) -> str:
        """A mailbox name (astring, modified UTF-7 decoded, INBOX normalised)."""
        return normalise_mailbox(decode_mutf7(self.astring()))

    def list_mailbox(self) -> str:
        """LIST's pattern: list-char atoms (with ``%``, ``*``, ``]``) or a string, decoded."""
        c = self.peek()
        if c in (0x22, 0x7B, 0x7E):
            raw = self.string()
        else:
            raw = self.atom(b"%*]").encode("ascii")
        return decode_mutf7(raw)

    def paren_atoms(self, extra: bytes = b"") -> list[str]:
        """``(A B C)``: a list of atoms (flag lists use :meth:`flag_list`)."""
        if self.peek() != 0x28:
            raise ParseError("Expected (")
        self.pos += 1
        items: list[str] = []
        while True:
            if self.accept(b")"):
                return items
            if items:
                self.space()
            items.append(self.atom(extra))

    def flag(self) -> str:
        """A flag: ``\\Seen`` or a keyword atom; ``\\Recent`` and ``\\*`` are not storable."""
        if self.accept(b"\\"):
            name = self.atom()
            canonical = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}
            flag = canonical.get("\\" + name.lower())
            if flag is None:
                raise ParseError(f"Invalid system flag \\{name}")
            return flag
        return self.atom()

    def flag_list(self) -> list[str]:
        """``(\\Seen $Work)`` or, for STORE, a bare space-separated list (RFC 3501 9 store-att-flags)."""
        if self.peek() != 0x28:
            flags = [self.flag()]
            while self.maybe_space():
                flags.append(self.flag())
            return flags
        self.pos += 1
        flags: list[str] = []
        while True:
            if self.accept(b")"):
                return flags
            if flags:
                self.space()
            flags.append(self.flag())

    def seqset(self) -> list[tuple[int | None, int | None]]:
        """sequence-set (RFC 3501 9): inclusive pairs, None for ``*``."""
        text = self.atom(b"*")
        if text == "$":
            raise ParseError("SEARCHRES is not supported")
        ranges: list[tuple[int | None, int | None]] = []
        for item in text.split(","):
            first, sep, last = item.partition(":")
            a = self._seq_number(first)
            b = self._seq_number(last) if sep else a
            ranges.append((a, b))
        return ranges

    @staticmethod
    def _seq_number(text: str) -> int | None:
        if text == "*":
            return None
        if not text.isdigit() or text.startswith("0") or len(text) > 10:
            raise ParseError("Invalid messageset")
        value = int(text)
        if value > 0xFFFFFFFF:
            raise ParseError("Invalid messageset")
        return value

    def date_time(self) -> datetime.datetime:
        """date-time (RFC 3501 9): ``"17-Jul-1996 02:44:25 -0700"``."""
        raw = self.string().decode("ascii", "replace")
        m = _DATE_TIME.match(raw)
        month = _MONTHS.get(m.group(2).lower()) if m else None
        if m is None or month is None:
            raise ParseError("Invalid date-time")
        offset = datetime.timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
        if m.group(7) == "-":
            offset = -offset
        try:
            return datetime.datetime(int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)), int(m.group(6)), tzinfo=datetime.timezone(offset))
        except ValueError:
            raise ParseError("Invalid date-time") from None

    # -- FETCH -----------------------------------------------------------------
    def fetch_atts(self) -> list[FetchAtt]:
        """``ALL`` / ``FAST`` / ``FULL`` / one fetch-att / ``(fetch-att ...)`` (RFC 3501 6.4.5)."""
        if self.peek() == 0x28:
            self.pos += 1
            atts: list[FetchAtt] = []
            while True:
                if self.accept(b")"):
                    if not atts:
                        raise ParseError("Empty fetch list")
                    return atts
                if atts:
                    self.space()
                atts.append(self._fetch_att(macros=False)[0])
        return self._fetch_att(macros=True)

    def _fetch_att(self, macros: bool) -> list[FetchAtt]:
        start = self.pos
        while self.pos < len(self.data) and (is_atom_char(self.data[self.pos]) and self.data[self.pos] != 0x5B):
            self.pos += 1
        name = self.data[start : self.pos].decode("ascii").upper()
        if not name:
            raise ParseError("Invalid fetch item")
        if macros and name in ("ALL", "FAST", "FULL"):
            base = ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
            if name != "FAST":
                base.append("ENVELOPE")
            if name == "FULL":
                base.append("BODY")
            return [FetchAtt(n) for n in base]
        simple = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ"}
        if name in simple:
            return [FetchAtt(name)]
        if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            if self.peek() != 0x5B:
                if name == "BODY":
                    return [FetchAtt("BODY")]
                raise ParseError(f"Invalid fetch item {name}")
            att = FetchAtt(name.split(".")[0] if name != "BINARY.SIZE" else name, peek=name.endswith(".PEEK"))
            self._section(att)
            if self.peek() == 0x3C and name != "BINARY.SIZE":
                self.pos += 1
                end = self.data.find(b">", self.pos)
                if end < 0:
                    raise ParseError("Invalid partial")
                spec = self.data[self.pos : end].decode("ascii", "replace")
                self.pos = end + 1
                first, dot, count = spec.partition(".")
                if not first.isdigit() or not dot or not count.isdigit():
                    raise ParseError("Invalid partial")
                att.partial = (int(first), int(count))
            return [att]
        raise ParseError(f"Invalid fetch item {name[:30]}")

    def _section(self, att: FetchAtt) -> None:
        self.pos += 1  # [
        start = self.pos
        parts: list[int] = []
        while True:
            m = re.compile(rb"([1-9]\d{0,8})(\.|\])").match(self.data, self.pos)
            if m is None:
                break
            parts.append(int(m.group(1)))
            self.pos = m.end(1)
            if m.group(2) == b"]":
                break
            self.pos += 1
        if self.peek() == 0x5D:
            att.section = tuple(parts)
            att.raw_section = self.data[start : self.pos].decode("ascii")
            self.pos += 1
            return
        spec_start = self.pos
        while self.pos < len(self.data) and (is_atom_char(self.data[self.pos]) and self.data[self.pos] != 0x5D):
            self.pos += 1
        spec = self.data[spec_start : self.pos].decode("ascii").upper()
        if spec not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME") or (spec == "MIME" and not parts):
            raise ParseError("Invalid section")
        if att.name.startswith("BINARY"):
            raise ParseError("Invalid BINARY section")
        att.section = tuple(parts)
        att.specifier = spec
        if spec.startswith("HEADER.FIELDS"):
            self.space()
            names = self._header_list()
            att.fields = tuple(names)
        raw_end = self.pos
        if self.peek() != 0x5D:
            raise ParseError("Expected ]")
        self.pos += 1
        prefix = ".".join(str(p) for p in parts)
        text = (prefix + "." if prefix else "") + spec
        if att.fields:
            text += " (" + " ".join(f.upper() for f in att.fields) + ")"
        att.raw_section = text
        del raw_end

    def _header_list(self) -> list[str]:
        if self.peek() != 0x28:
            raise ParseError("Expected (")
        self.pos += 1
        names: list[str] = []
        while True:
            if self.accept(b")"):
                if not names:
                    raise ParseError("Empty header list")
                return names
            if names:
                self.space()
            names.append(self.astring().decode("ascii", "replace"))

    def search_date(self) -> datetime.date:
        """date (RFC 3501 9): ``1-Feb-1994`` or quoted."""
        raw = self.astring().decode("ascii", "replace")
        m = _DATE.match(raw)
        month = _MONTHS.get(m.group(2).lower()) if m else None
        if m is None or month is None:
            raise ParseError("Invalid date")
        try:
            return datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise ParseError("Invalid date") from None


def string_out(value: bytes | str) -> bytes:
    """A string in a response: quoted when safe, else a literal (RFC 3501 4.3)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if any(c in (0x0D, 0x0A, 0) or c >= 0x80 for c in data) or len(data) > 1000:
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def mailbox_out(name: str) -> bytes:
    """A mailbox name in a response: modified UTF-7, quoted."""
    return string_out(encode_mutf7(name))
