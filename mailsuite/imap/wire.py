"""IMAP data on the wire: formatting responses and parsing command arguments.

Public API (the server modules code against these names):

Formatting (all return ``bytes`` ready to be written):

* :func:`quoted` (``"..."`` with ``\\`` escapes; ``ValueError`` if the text
  cannot be quoted), :func:`literal` (``{n}\\r\\n`` + data),
  :func:`literal8` / :func:`binary_literal` (``~{n}`` for BINARY data with
  NUL, RFC 3516), :func:`string` (quoted when safe, else literal), :func:`nstring` (``NIL``
  for ``None``), :func:`astring` (bare atom when safe), :func:`format_list`,
  :func:`format_flags`, :func:`format_internaldate` (with the DQUOTEs).
* :func:`encode_mailbox_name` / :func:`decode_mailbox_name`: modified UTF-7
  (RFC 3501 5.1.3), strict: a name that does not decode to exactly the
  canonical encoding of its text raises :class:`ParseError`.

Parsing:

* A command arrives as one ``bytes`` object exactly as the client sent it,
  literals left in place: ``{n}\\r\\n<n octets>`` (also ``{n+}`` of
  LITERAL+ and ``~{n}`` of BINARY), without the final CRLF (a trailing CRLF
  is tolerated).  The server's line reader only has to glue the lines and
  literals together.
* :class:`Reader` is a cursor with one method per production of RFC 3501 9:
  ``atom``, ``astring``, ``string``, ``nstring``, ``number``, ``nz_number``,
  ``sequence_set``, ``mailbox``, ``list_mailbox``, ``flag_list``, ``date``,
  ``date_time``, ``fetch_attributes`` (with macros and CONDSTORE modifiers
  via :meth:`Reader.fetch_modifiers`), ``store_arguments``, and ``value`` /
  ``values`` for the generic tree (:class:`Atom`, :class:`Quoted`,
  :class:`Literal`, ``None`` for NIL, ``list`` for parentheses).
* :func:`parse_internaldate`, :func:`parse_sequence_set`,
  :func:`parse_fetch_attributes` are conveniences over the Reader.
* :class:`SequenceSet` keeps ``*`` symbolic; :meth:`SequenceSet.resolve`
  turns it into concrete numbers against the session's view.

Implementation notes:

* Every syntax error raises :class:`ParseError` (a ``ValueError``) with a
  message fit for ``tag BAD <message>``; no other exception escapes the
  parsers, whatever the input (property-tested).
* Strings are returned as ``bytes``; decoding (UTF-8 user names, mailbox
  names) is done by the production that knows the meaning.
* Quoted output never carries CR, LF, NUL, 8-bit octets, ``"`` or ``\\``:
  those go out as literals (RFC 3501 4.3 / 9 ``QUOTED-CHAR``), which every
  client reads, so escapes are only ever needed by :func:`quoted` itself.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

__all__ = [
    "ParseError", "MailboxNameError", "Atom", "Quoted", "Literal", "Value", "SequenceSet", "FetchAttribute",
    "FetchRequest", "StoreRequest", "Reader",
    "quoted", "literal", "literal8", "binary_literal", "string", "nstring", "astring", "format_list", "format_flags",
    "format_internaldate", "parse_internaldate", "encode_mailbox_name", "decode_mailbox_name",
    "parse_sequence_set", "parse_fetch_attributes", "is_atom",
]


class ParseError(ValueError):
    """The client's command does not follow the grammar; the text goes into ``BAD``."""


class MailboxNameError(ParseError):
    """A well-formed astring that is no valid mailbox name (bad modified UTF-7).

    RFC 3501 5.1.3 makes modified UTF-7 a naming convention, not grammar: the
    command is well-formed, so callers answer ``NO`` (a LIST pattern simply
    matches nothing), as Dovecot does; uncaught it is still a ``BAD``.
    """


# ---------------------------------------------------------------------------
# Character classes (RFC 3501 9)
# ---------------------------------------------------------------------------

#: atom-specials: "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_CHARS = frozenset(range(0x21, 0x7F)) - _ATOM_SPECIALS
# Character sets the readers below use, made once (a FETCH may name thousands of items)
_DIGITS = frozenset(b"0123456789")
_FETCH_NAME_CHARS = _ATOM_CHARS - {ord("["), ord("<")}
_MACRO_CHARS = _ATOM_CHARS - {ord("[")}
_SECTION_TEXT_CHARS = _ATOM_CHARS - {ord("]")}
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
_LIST_CHARS = _ATOM_CHARS | set(b"%*]")
_QUOTE_UNSAFE = frozenset(range(0x00, 0x20)) | frozenset(range(0x7F, 0x100)) | {ord('"'), ord("\\")}
_QUOTE_UNSAFE_RE = re.compile(rb'[\x00-\x1f\x7f-\xff"\\]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}
_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}
_LITERAL_START = re.compile(rb"(~?)\{(\d{1,10})(\+?)\}\r\n")
_DATE_TIME = re.compile(rb"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
#: The largest number of RFC 3501 9 (number = 32 bit unsigned).
MAX_NUMBER = 0xFFFFFFFF


def is_atom(data: bytes) -> bool:
    """True if ``data`` can be sent as a bare atom."""
    return bool(data) and all(c in _ATOM_CHARS for c in data)


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def _as_bytes(value: bytes | str | bytearray | memoryview) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def quoted(value: bytes | str) -> bytes:
    """``"value"`` with ``"`` and ``\\`` escaped (RFC 3501 9 quoted).

    Raises ``ValueError`` for text a quoted string cannot carry (CR, LF, NUL,
    other controls, 8-bit octets): use :func:`string` to choose a literal.
    """
    data = _as_bytes(value)
    if any(c < 0x20 or c >= 0x7F for c in data):
        raise ValueError("text not representable as a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: bytes | str) -> bytes:
    """``{n}\\r\\n`` + data: carries any octets (RFC 3501 4.3)."""
    data = _as_bytes(value)
    return b"{%d}\r\n" % len(data) + data


def literal8(value: bytes | str) -> bytes:
    """``~{n}\r\n`` + data (RFC 3516 4.2): BINARY[] content that holds NUL octets."""
    data = _as_bytes(value)
    return b"~{%d}\r\n" % len(data) + data


def binary_literal(value: bytes) -> bytes:
    """A BINARY[] response value: a plain literal unless NUL forces literal8 (RFC 3516 4.2)."""
    return literal8(value) if b"\x00" in value else literal(value)


def string(value: bytes | str) -> bytes:
    """A string: quoted when every octet is a plain 7-bit printable other than
    ``"``/``\\``, else a literal (RFC 3501 4.3, 9)."""
    data = value if type(value) is bytes else _as_bytes(value)
    if _QUOTE_UNSAFE_RE.search(data):
        return b"{%d}\r\n" % len(data) + data
    return b'"' + data + b'"'


def nstring(value: bytes | str | None) -> bytes:
    """``NIL`` for ``None``, else :func:`string` (RFC 3501 9 nstring)."""
    if value is None:
        return b"NIL"
    return string(value)


def astring(value: bytes | str) -> bytes:
    """A bare atom when possible (and not the atom ``NIL``), else :func:`string`."""
    data = _as_bytes(value)
    if data and all(c in _ASTRING_CHARS for c in data) and data.upper() != b"NIL":
        return data
    return string(data)


ListItem = Union[bytes, str, int, None, Sequence["ListItem"]]


def format_list(items: Iterable[ListItem]) -> bytes:
    """A parenthesised list; items: ``bytes`` = already formatted token,
    ``str`` = a string (:func:`nstring` rules, UTF-8), ``int`` = number,
    ``None`` = NIL, list/tuple = nested list."""
    out: list[bytes] = []
    for item in items:
        if item is None:
            out.append(b"NIL")
        elif isinstance(item, bool):
            raise TypeError("bool is not an IMAP value")
        elif isinstance(item, int):
            out.append(b"%d" % item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            out.append(bytes(item))
        elif isinstance(item, str):
            out.append(string(item))
        else:
            out.append(format_list(item))
    return b"(" + b" ".join(out) + b")"


_FLAG_ORDER = {"\\Answered": 0, "\\Flagged": 1, "\\Deleted": 2, "\\Seen": 3, "\\Draft": 4, "\\Recent": 5}


def format_flags(flags: Iterable[str], recent: bool = False) -> bytes:
    """``(\\Seen \\Recent $Work)``: system flags first in a stable order, then keywords sorted."""
    names = set(flags)
    if recent:
        names.add("\\Recent")
    ordered = sorted(names, key=lambda f: (_FLAG_ORDER.get(f, 6), f))
    return b"(" + " ".join(ordered).encode("utf-8", "replace") + b")"


def format_internaldate(value: datetime.datetime) -> bytes:
    """``"17-Jul-1996 02:44:25 -0700"`` with its DQUOTEs (RFC 3501 9 date-time).

    Locale independent; a naive datetime is taken as UTC.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    offset = value.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f'"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode("ascii")


def parse_internaldate(text: bytes | str) -> datetime.datetime:
    """The inverse of :func:`format_internaldate`; DQUOTEs optional, day may be `` 1`` or ``01``."""
    data = _as_bytes(text)
    if len(data) >= 2 and data[:1] == b'"' and data[-1:] == b'"':
        data = data[1:-1]
    m = _DATE_TIME.fullmatch(data)
    month = _MONTH_NUMBER.get(m.group(2).decode().lower()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date-time")
    hours, minutes = int(m.group(8)), int(m.group(9))
    if minutes >= 60:
        raise ParseError("Invalid date-time zone")
    offset = datetime.timedelta(hours=hours, minutes=minutes)
    if m.group(7) == b"-":
        offset = -offset
    try:
        return datetime.datetime(
            int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)), int(m.group(6)),
            tzinfo=datetime.timezone(offset),
        )
    except ValueError:
        raise ParseError("Invalid date-time") from None


def parse_date(text: bytes | str) -> datetime.date:
    """SEARCH's ``date`` (RFC 3501 9): ``1-Feb-1994`` (DQUOTEs optional)."""
    data = _as_bytes(text)
    if len(data) >= 2 and data[:1] == b'"' and data[-1:] == b'"':
        data = data[1:-1]
    m = _DATE.fullmatch(data)
    month = _MONTH_NUMBER.get(m.group(2).decode().lower()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date")
    try:
        return datetime.date(int(m.group(3)), month, int(m.group(1)))
    except ValueError:
        raise ParseError("Invalid date") from None


# ---------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 5.1.3)
# ---------------------------------------------------------------------------


def encode_mailbox_name(name: str) -> bytes:
    """Mailbox name text to modified UTF-7: printable ASCII as itself (``&`` as
    ``&-``), everything else UTF-16BE in modified base64 (``,`` for ``/``, no padding)."""
    out: list[bytes] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append(b"&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return b"".join(out)


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def decode_mailbox_name(raw: bytes | str, *, allow_utf8: bool = False) -> str:
    """Modified UTF-7 to text, strictly (RFC 3501 5.1.3).

    Rejected with :class:`MailboxNameError`: octets outside printable ASCII, an
    unterminated or empty-but-not-``&-`` shift, characters outside the
    modified base64 alphabet, leftover bits, broken UTF-16 (lone
    surrogates), printable ASCII encoded in base64, and two adjacent base64
    runs (the encoding of a name is unique).  With ``allow_utf8`` a name with
    8-bit octets is taken as UTF-8 (RFC 6855 UTF8=ACCEPT clients).
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    if any(c >= 0x80 for c in data):
        if not allow_utf8:
            raise MailboxNameError("Mailbox name is not valid modified UTF-7 (8-bit octets)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MailboxNameError("Mailbox name is not valid UTF-8") from None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise MailboxNameError("Mailbox name contains control characters")
        return text
    out: list[str] = []
    i = 0
    last_was_b64 = False
    n = len(data)
    while i < n:
        c = data[i]
        if c < 0x20 or c > 0x7E:
            raise MailboxNameError("Mailbox name contains control characters")
        if c != 0x26:  # "&"
            out.append(chr(c))
            i += 1
            last_was_b64 = False
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise MailboxNameError("Mailbox name has an unterminated modified UTF-7 shift")
        chunk = data[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            last_was_b64 = False
            continue
        if last_was_b64:
            raise MailboxNameError("Mailbox name has adjacent modified UTF-7 shifts")
        if any(b not in _B64_CHARS for b in chunk) or len(chunk) % 4 == 1:
            raise MailboxNameError("Mailbox name has invalid modified base64")
        padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
        try:
            octets = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise MailboxNameError("Mailbox name has invalid modified base64") from None
        # leftover bits must be zero and no extra characters: re-encode and compare
        if base64.b64encode(octets).rstrip(b"=").replace(b"/", b",") != chunk or len(octets) % 2:
            raise MailboxNameError("Mailbox name has invalid modified base64 padding")
        try:
            text = octets.decode("utf-16-be")
        except UnicodeDecodeError:
            raise MailboxNameError("Mailbox name has invalid UTF-16 in modified UTF-7") from None
        if any(0x20 <= ord(ch) <= 0x7E for ch in text):
            raise MailboxNameError("Mailbox name encodes printable ASCII in modified UTF-7")
        out.append(text)
        last_was_b64 = True
    return "".join(out)


# ---------------------------------------------------------------------------
# Parsed values
# ---------------------------------------------------------------------------


class Atom(str):
    """An atom as sent (case kept; compare with ``.upper()``)."""

    __slots__ = ()


class Quoted(bytes):
    """The content of a quoted string, escapes removed."""


class Literal(bytes):
    """The content of a literal; ``binary`` for a ``~{n}`` literal8 (RFC 3516)."""

    binary: bool = False


Value = Union[Atom, Quoted, Literal, None, list]  # list of Value


@dataclass(frozen=True)
class SequenceSet:
    """A sequence-set (RFC 3501 9) with ``*`` kept symbolic (``None``).

    ``ranges`` are inclusive (low, high) pairs as written (``5:3`` is kept as
    is and means 3..5); ``saved`` marks ``$`` (RFC 5182 SEARCHRES).
    """

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, existing: Sequence[int]) -> list[int]:
        """The members of ``existing`` (ascending numbers: ``range(1, n+1)`` for
        sequence numbers, the UID list for UIDs) that the set names, ascending.

        ``*`` is the largest existing number; with an empty ``existing`` the
        result is empty.  For UID sets numbers that do not exist are simply
        skipped (RFC 3501 6.4.8); callers checking sequence numbers use
        :meth:`out_of_range`.
        """
        if not existing or self.saved:
            return []
        top = existing[-1]
        spans = []
        for low, high in self.ranges:
            a = top if low is None else low
            b = top if high is None else high
            if a > b:
                a, b = b, a
            spans.append((a, b))
        if isinstance(existing, range) and existing.step == 1:
            picked: set[int] = set()
            for a, b in spans:
                a = max(a, existing.start)
                b = min(b, existing.stop - 1)
                if a <= b:
                    picked.update(range(a, b + 1))
            return sorted(picked)
        import bisect

        result: set[int] = set()
        for a, b in spans:
            lo = bisect.bisect_left(existing, a)
            hi = bisect.bisect_right(existing, b)
            result.update(existing[lo:hi])
        return sorted(result)

    def out_of_range(self, count: int) -> bool:
        """True if a message sequence number above ``count`` (or any number when
        the mailbox is empty) is named: RFC 3501 9 makes that an error for
        sequence numbers (``*`` in an empty mailbox included)."""
        if self.saved:
            return False
        for low, high in self.ranges:
            for value in (low, high):
                if value is None:
                    if count == 0:
                        return True
                elif value > count:
                    return True
        return False

    def __bytes__(self) -> bytes:
        if self.saved:
            return b"$"
        parts = []
        for low, high in self.ranges:
            a = b"*" if low is None else b"%d" % low
            b = b"*" if high is None else b"%d" % high
            parts.append(a if low == high else a + b":" + b)
        return b",".join(parts)


@dataclass(frozen=True)
class FetchAttribute:
    """One fetch-att (RFC 3501 6.4.5 / 9).

    ``name``: ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE
    RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ BINARY BINARY.SIZE.
    ``section`` is ``None`` for items without ``[...]`` (plain ``BODY``
    = the non-extensible structure), else the part numbers; ``specifier``
    is "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME.
    """

    name: str
    section: tuple[int, ...] | None = None
    specifier: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None  # (origin, octets)
    peek: bool = False

    @property
    def section_text(self) -> str:
        """The section as echoed in the response: ``1.2.HEADER.FIELDS (FROM TO)``."""
        if self.section is None:
            return ""
        text = ".".join(str(p) for p in self.section)
        if self.specifier:
            text = f"{text}.{self.specifier}" if text else self.specifier
        if self.fields:
            text += " (" + " ".join(self.fields) + ")"
        return text

    def response_name(self) -> bytes:
        """The item's name in the FETCH response (RFC 3501 7.4.2: ``.PEEK`` dropped,
        only the origin of a partial echoed)."""
        if self.section is None:
            return self.name.encode("ascii")
        text = f"{self.name}[{self.section_text}]"
        if self.partial is not None:
            text += f"<{self.partial[0]}>"
        return text.encode("ascii", "replace")

    @property
    def sets_seen(self) -> bool:
        """Implicitly sets \\Seen in a read-write session (RFC 3501 6.4.5)."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek


@dataclass(frozen=True)
class FetchRequest:
    """A whole FETCH argument list: attributes plus RFC 7162 modifiers."""

    attributes: tuple[FetchAttribute, ...]
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True)
class StoreRequest:
    """STORE's ``[+-]FLAGS[.SILENT] flags`` (RFC 3501 6.4.6) with UNCHANGEDSINCE (RFC 7162 3.1.3)."""

    mode: str  # "set", "add", "remove"
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


# ---------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------

_FETCH_SIMPLE = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                 "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ"}
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SECTION_PART = re.compile(rb"[1-9]\d{0,9}")
#: Nesting limit for parenthesised lists (a hostile client could nest deeply).
MAX_DEPTH = 100


@dataclass
class Reader:
    """A cursor over a command's argument bytes; one method per grammar production.

    Methods consume what they parse; the separating SP is consumed by
    :meth:`space`.  Everything raises :class:`ParseError` on bad input.
    """

    data: bytes
    pos: int = 0
    depth: int = field(default=0, repr=False)

    # -- basics ----------------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def rest(self) -> bytes:
        """The unread bytes."""
        return self.data[self.pos :]

    def end(self) -> None:
        """Nothing may follow."""
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    def space(self) -> None:
        """Exactly one SP."""
        if self.peek() != 0x20:
            raise ParseError("Missing argument" if self.at_end() else "Expected a space")
        self.pos += 1

    def accept_space(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def accept(self, text: bytes) -> bool:
        """Consume ``text`` (case-insensitively) if it comes next."""
        if self.data.startswith(text, self.pos):  # the usual case, and all of it for punctuation
            self.pos += len(text)
            return True
        upper = text.upper()
        if upper != text.lower() and self.data[self.pos : self.pos + len(text)].upper() == upper:
            self.pos += len(text)
            return True
        return False

    def at_literal(self) -> bool:
        """A literal starts here: ``{`` or BINARY's ``~{`` (RFC 3516 4.2).

        A lone ``~`` is an ordinary ATOM-CHAR (RFC 3501 9), so ``~foo`` is a
        mailbox name, not a broken literal8.
        """
        c = self.peek()
        return c == 0x7B or (c == 0x7E and self.data[self.pos + 1 : self.pos + 2] == b"{")

    def expect(self, text: bytes) -> None:
        if not self.accept(text):
            raise ParseError(f"Expected {text.decode('ascii', 'replace')}")

    def _run(self, allowed: frozenset[int] | set[int]) -> bytes:
        start = self.pos
        data = self.data
        n = len(data)
        while self.pos < n and data[self.pos] in allowed:
            self.pos += 1
        return data[start : self.pos]

    # -- tokens --------------------------------------------------------------
    def atom(self) -> Atom:
        """atom (RFC 3501 9)."""
        raw = self._run(_ATOM_CHARS)
        if not raw:
            raise ParseError("Missing argument" if self.at_end() else "Expected an atom")
        return Atom(raw.decode("ascii"))

    def number(self, *, delimited: bool = True) -> int:
        """number: 32-bit unsigned; ``delimited``: no atom character may follow."""
        raw = self._run(_DIGITS)
        if not raw:
            raise ParseError("Expected a number")
        if len(raw) > 10 or int(raw) > MAX_NUMBER:
            raise ParseError("Number out of range")
        if delimited and self.peek() is not None and self.peek() in _ATOM_CHARS:
            raise ParseError("Expected a number")
        return int(raw)

    def number64(self) -> int:
        """mod-sequence-value (RFC 7162): up to 2**63-1."""
        raw = self._run(_DIGITS)
        if not raw or len(raw) > 19 or int(raw) > 2**63 - 1:
            raise ParseError("Expected a mod-sequence value")
        if self.peek() is not None and self.peek() in _ATOM_CHARS:
            raise ParseError("Expected a number")
        return int(raw)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("Expected a non-zero number")
        return value

    def quoted(self) -> Quoted:
        """quoted (RFC 3501 9): only ``\\"`` and ``\\\\`` escapes; no CR/LF/NUL."""
        if self.peek() != 0x22:
            raise ParseError("Expected a quoted string")
        self.pos += 1
        out = bytearray()
        data = self.data
        n = len(data)
        while True:
            if self.pos >= n:
                raise ParseError("Unterminated quoted string")
            c = data[self.pos]
            if c == 0x22:
                self.pos += 1
                return Quoted(bytes(out))
            if c == 0x5C:
                self.pos += 1
                if self.pos >= n or data[self.pos] not in (0x22, 0x5C):
                    raise ParseError("Invalid escape in quoted string")
                c = data[self.pos]
            elif c in (0x00, 0x0A, 0x0D):
                raise ParseError("Invalid character in quoted string")
            out.append(c)
            self.pos += 1

    def literal(self) -> Literal:
        """literal / literal8 as placed in the command by the line reader."""
        m = _LITERAL_START.match(self.data, self.pos)
        if m is None:
            raise ParseError("Expected a literal")
        size = int(m.group(2))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError("Literal shorter than announced")
        self.pos = start + size
        value = Literal(self.data[start : self.pos])
        if m.group(1):
            value.binary = True
        elif b"\x00" in value:
            raise ParseError("NUL in a literal (use literal8)")
        return value

    def string(self) -> bytes:
        """string = quoted / literal."""
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.literal()
        raise ParseError("Missing argument" if c is None else "Expected a string")

    def astring(self) -> bytes:
        """astring = 1*ASTRING-CHAR / string."""
        if self.peek() == 0x22 or self.at_literal():
            return self.string()
        raw = self._run(_ASTRING_CHARS)
        if not raw:
            raise ParseError("Missing argument" if self.at_end() else "Expected a string")
        return raw

    def nstring(self) -> bytes | None:
        """nstring = string / NIL."""
        if self.peek() != 0x22 and not self.at_literal():
            word = self.atom()
            if word.upper() != "NIL":
                raise ParseError("Expected a string or NIL")
            return None
        return self.string()

    def utf8_astring(self) -> str:
        """An astring as UTF-8 text (user names, passwords, search strings)."""
        raw = self.astring()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("String is not valid UTF-8") from None

    def mailbox(self, *, allow_utf8: bool = False) -> str:
        """mailbox: astring, modified UTF-7 decoded, ``INBOX`` case-insensitive (RFC 3501 5.1)."""
        name = decode_mailbox_name(self.astring(), allow_utf8=allow_utf8)
        if name.upper() == "INBOX":
            return "INBOX"
        return name

    def list_mailbox(self, *, allow_utf8: bool = False) -> str:
        """list-mailbox: list-chars (``%`` and ``*`` allowed) or a string, decoded."""
        if self.peek() == 0x22 or self.at_literal():
            raw = self.string()
        else:
            raw = self._run(_LIST_CHARS)
            if not raw:
                raise ParseError("Expected a mailbox pattern")
        return decode_mailbox_name(raw, allow_utf8=allow_utf8)

    # -- generic values --------------------------------------------------------
    def value(self) -> Value:
        """One generic value: atom (NIL -> None), quoted, literal or list.

        Atoms may carry a ``[...]`` section with spaces inside and a
        ``<...>`` partial, as fetch attributes do (``BODY[HEADER.FIELDS (A B)]<0.9>``).
        """
        c = self.peek()
        if c is None:
            raise ParseError("Missing argument")
        if c == 0x28:
            return self.value_list()
        if c == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.literal()
        start = self.pos
        raw = self._run((_ATOM_CHARS | {ord("*"), ord("%")}) - {ord("[")})
        if self.peek() == 0x5B and raw:
            close = self.data.find(b"]", self.pos)
            if close < 0:
                raise ParseError("Missing ]")
            self.pos = close + 1
            self._run(_ATOM_CHARS | {ord("]")})
        elif self.peek() == 0x5D and raw:
            self._run(_ATOM_CHARS | {ord("]")})
        text = self.data[start : self.pos]
        if not text:
            raise ParseError("Unexpected character")
        if text.upper() == b"NIL":
            return None
        try:
            return Atom(text.decode("ascii"))
        except UnicodeDecodeError:
            raise ParseError("8-bit octets in an atom") from None

    def value_list(self) -> list:
        """``( value *(SP value) )``; ``()`` allowed; ``(a)(b)`` as in BODYSTRUCTURE too."""
        self.expect(b"(")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("Lists nested too deeply")
        items: list = []
        while not self.accept(b")"):
            if items and not (isinstance(items[-1], list) and self.peek() == 0x28):
                self.space()  # adjacent lists need none (RFC 3501 9 body-type-mpart)
            items.append(self.value())
        self.depth -= 1
        return items

    def values(self) -> list:
        """All remaining arguments as generic values (separated by single SPs)."""
        items: list = []
        if self.at_end():
            return items
        items.append(self.value())
        while not self.at_end():
            self.space()
            items.append(self.value())
        return items

    # -- sequence sets, flags, dates -------------------------------------------
    def sequence_set(self) -> SequenceSet:
        """sequence-set (RFC 3501 9) or ``$`` (RFC 5182)."""
        if self.accept(b"$"):
            if self.peek() is not None and self.peek() not in (0x20, 0x29):
                raise ParseError("Invalid sequence set")
            return SequenceSet(saved=True)
        raw = self._run(frozenset(b"0123456789:*,"))
        if not raw or (self.peek() is not None and self.peek() not in (0x20, 0x29)):
            raise ParseError("Invalid sequence set")
        ranges = []
        for item in raw.split(b","):
            pieces = item.split(b":")
            if len(pieces) > 2:
                raise ParseError("Invalid sequence set")
            low = self._seq_number(pieces[0])
            high = self._seq_number(pieces[-1])
            ranges.append((low, high))
        return SequenceSet(tuple(ranges))

    @staticmethod
    def _seq_number(raw: bytes) -> int | None:
        if raw == b"*":
            return None
        if not raw.isdigit() or raw[:1] == b"0" or len(raw) > 10 or int(raw) > MAX_NUMBER:
            raise ParseError("Invalid sequence set")
        return int(raw)

    def flag(self, *, allow_recent: bool = False) -> str:
        """flag (RFC 3501 9): a system flag (canonical case) or a keyword atom.

        ``\\Recent`` is accepted only where the caller allows it (never in
        STORE or APPEND: RFC 3501 2.3.2); other ``\\`` names are extension
        flags that servers may refuse (we do).
        """
        if self.accept(b"\\"):
            word = self._run(_ATOM_CHARS)
            canonical = _SYSTEM_FLAGS.get("\\" + word.decode("ascii").lower())
            if canonical is None or (canonical == "\\Recent" and not allow_recent):
                raise ParseError(f"Invalid system flag \\{word[:30].decode('ascii')}")
            return canonical
        return str(self.atom())

    def flag_list(self, *, bare: bool = False) -> tuple[str, ...]:
        """flag-list ``( flag *(SP flag) )``; with ``bare`` also ``flag *(SP flag)``
        without parentheses (STORE's store-att-flags)."""
        if self.peek() != 0x28:
            if not bare:
                raise ParseError("Expected a flag list")
            flags = [self.flag()]
            while self.accept_space():
                flags.append(self.flag())
            return tuple(flags)
        self.pos += 1
        flags = []
        while not self.accept(b")"):
            if flags:
                self.space()
            flags.append(self.flag())
        return tuple(flags)

    def date(self) -> datetime.date:
        """date (RFC 3501 9): ``1-Feb-1994``, bare or quoted."""
        if self.peek() == 0x22:
            return parse_date(self.quoted())
        raw = self._run(_ATOM_CHARS)
        if not raw:
            raise ParseError("Expected a date")
        return parse_date(raw)

    def date_time(self) -> datetime.datetime:
        """date-time (RFC 3501 9): always quoted."""
        if self.peek() != 0x22:
            raise ParseError("Expected a quoted date-time")
        return parse_internaldate(self.quoted())

    # -- FETCH -------------------------------------------------------------------
    def fetch_attributes(self) -> tuple[FetchAttribute, ...]:
        """``ALL`` / ``FAST`` / ``FULL`` / fetch-att / ``( fetch-att *(SP fetch-att) )``."""
        if self.accept(b"("):
            atts: list[FetchAttribute] = []
            last = b""  # the previous item as written: a repeat of it is not parsed again
            while not self.accept(b")"):
                if atts:
                    self.space()
                start = self.pos
                if last and self.data.startswith(last, start) and self.data[start + len(last) : start + len(last) + 1] in (b" ", b")"):
                    self.pos += len(last)
                    atts.append(atts[-1])
                    continue
                atts.append(self._fetch_att())
                last = self.data[start : self.pos]
            if not atts:
                raise ParseError("Empty fetch attribute list")
            return tuple(atts)
        save = self.pos
        word = self._run(_MACRO_CHARS).decode("ascii").upper()
        if word in _FETCH_MACROS and self.peek() != 0x5B:
            return tuple(FetchAttribute(n) for n in _FETCH_MACROS[word])
        self.pos = save
        return (self._fetch_att(),)

    def fetch_modifiers(self) -> tuple[int | None, bool]:
        """``(CHANGEDSINCE n [VANISHED])`` after the attributes (RFC 7162 3.1.4, 3.2.6)."""
        changed: int | None = None
        vanished = False
        if not self.accept(b" ("):
            return None, False
        first = True
        while not self.accept(b")"):
            if not first:
                self.space()
            first = False
            word = self.atom().upper()
            if word == "CHANGEDSINCE" and changed is None:
                self.space()
                # RFC 7162's grammar says 1 or more, but Thunderbird's first CONDSTORE sync sends 0
                # (meaning "everything"), as Dovecot accepts: every message's MODSEQ is above 0.
                changed = self.number64()
            elif word == "VANISHED" and not vanished:
                vanished = True
            else:
                raise ParseError(f"Unknown FETCH modifier {word[:30]}")
        if vanished and changed is None:
            raise ParseError("VANISHED requires CHANGEDSINCE")
        return changed, vanished

    def fetch_request(self) -> FetchRequest:
        """Attributes and modifiers, to the end of the command."""
        atts = self.fetch_attributes()
        changed, vanished = self.fetch_modifiers()
        self.end()
        return FetchRequest(atts, changed, vanished)

    def _fetch_att(self) -> FetchAttribute:
        raw = self._run(_FETCH_NAME_CHARS)
        name = raw.decode("ascii").upper()
        if not name:
            raise ParseError("Expected a fetch attribute")
        if name in _FETCH_SIMPLE:
            return FetchAttribute(name)
        if name == "BODY" and self.peek() != 0x5B:
            return FetchAttribute("BODY")
        if name not in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            raise ParseError(f"Unknown fetch attribute {name[:30]}")
        if self.peek() != 0x5B:
            raise ParseError(f"{name} needs a section")
        self.pos += 1
        base = name.split(".")[0] if name != "BINARY.SIZE" else name
        parts: list[int] = []
        specifier = ""
        fields: tuple[str, ...] = ()
        while self.peek() != 0x5D:
            m = _SECTION_PART.match(self.data, self.pos)
            if m is not None and self.data[m.end() : m.end() + 1] in (b".", b"]"):
                value = int(m.group())
                if value > MAX_NUMBER:
                    raise ParseError("Section part number out of range")
                parts.append(value)
                self.pos = m.end()
                if self.accept(b"."):
                    if self.peek() is not None and 0x30 <= self.peek() <= 0x39:  # type: ignore[operator]
                        continue
                    specifier, fields = self._section_text(True, base)
                break
            specifier, fields = self._section_text(bool(parts), base)
            break
        self.expect(b"]")
        partial = None
        if name != "BINARY.SIZE" and self.accept(b"<"):
            origin = self.number(delimited=False)
            self.expect(b".")
            octets = self.number(delimited=False)
            if octets == 0:
                raise ParseError("Partial length must be non-zero")
            self.expect(b">")
            partial = (origin, octets)
        return FetchAttribute(base, tuple(parts), specifier, fields, partial, peek=name.endswith(".PEEK"))

    def _section_text(self, has_parts: bool, base: str) -> tuple[str, tuple[str, ...]]:
        if base.startswith("BINARY"):
            raise ParseError("BINARY takes only part numbers")
        raw = self._run(_SECTION_TEXT_CHARS)
        spec = raw.decode("ascii").upper()
        if spec not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError(f"Invalid section text {spec[:30]}")
        if spec == "MIME" and not has_parts:
            raise ParseError("MIME needs a part number")
        fields: tuple[str, ...] = ()
        if spec.startswith("HEADER.FIELDS"):
            self.space()
            self.expect(b"(")
            names: list[str] = []
            while not self.accept(b")"):
                if names:
                    self.space()
                raw_name = self.astring()
                if not raw_name or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in raw_name):
                    raise ParseError("Invalid header field name")
                names.append(raw_name.decode("ascii").upper())
            if not names:
                raise ParseError("Empty header field list")
            fields = tuple(names)
        return spec, fields

    # -- STORE -------------------------------------------------------------------
    def store_arguments(self) -> StoreRequest:
        """``[(UNCHANGEDSINCE n)] SP [+-]FLAGS[.SILENT] SP flags`` to the end (RFC 3501 6.4.6, RFC 7162 3.1.3).

        Starts after the sequence set's SP.
        """
        unchanged: int | None = None
        if self.accept(b"("):
            word = self.atom().upper()
            if word != "UNCHANGEDSINCE":
                raise ParseError(f"Unknown STORE modifier {word[:30]}")
            self.space()
            unchanged = self.number64()
            self.expect(b")")
            self.space()
        word = self._run(_ATOM_CHARS).decode("ascii").upper()
        mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
        silent = word.endswith(".SILENT")
        base = word[: -len(".SILENT")] if silent else word
        if base not in mode:
            raise ParseError("Expected FLAGS, +FLAGS or -FLAGS")
        self.space()
        flags = self.flag_list(bare=True)
        self.end()
        return StoreRequest(mode[base], silent, flags, unchanged)


# ---------------------------------------------------------------------------
# Whole arguments
# ---------------------------------------------------------------------------


def parse_sequence_set(text: bytes | str) -> SequenceSet:
    """A whole sequence set (``1:*,3,5:7``)."""
    reader = Reader(_as_bytes(text))
    result = reader.sequence_set()
    reader.end()
    return result


def parse_fetch_attributes(text: bytes | str) -> FetchRequest:
    """FETCH's arguments after the sequence set: ``(FLAGS BODY.PEEK[1.MIME]) (CHANGEDSINCE 5)``."""
    return Reader(_as_bytes(text)).fetch_request()
