"""The argument cursor command handlers read, over :mod:`mailsuite.imap.wire`'s Reader.

The grammar (atoms, strings, literals, sequence sets, flags, dates, FETCH
items, modified UTF-7 names) is :mod:`mailsuite.imap.wire`'s; this module
only adds the few conveniences the handlers share, so each handler reads
like its RFC 3501 9 production: ``args.space(); name = args.mailbox()``.
Handlers get the arguments *with* the separating space after the command
name and read it themselves (``args.space()``), so "missing argument" and
"extra argument" errors come from one place.

Every syntax error raises :class:`ParseError` (wire's), answered ``BAD``.
"""

from __future__ import annotations

from mailsuite import errors
from mailsuite.imap import wire
from mailsuite.imap.wire import FetchAttribute as FetchAtt
from mailsuite.imap.wire import ParseError

__all__ = ["Arguments", "FetchAtt", "ParseError", "mailbox_out", "string_out", "normalise_mailbox"]


def normalise_mailbox(name: str) -> str:
    """INBOX is case-insensitive, also as the first level of a hierarchy (RFC 3501 5.1)."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX" + name[5:]
    return name


def string_out(value: bytes | str) -> bytes:
    """A string in a response: quoted when safe, else a literal (RFC 3501 4.3)."""
    return wire.string(value)


def mailbox_out(name: str) -> bytes:
    """A mailbox name in a response: modified UTF-7, quoted (or a literal if it must be)."""
    return wire.string(wire.encode_mailbox_name(name))


class Arguments(wire.Reader):
    """wire.Reader plus the shorthands the command handlers use."""

    def maybe_space(self) -> bool:
        """Consume one SP if it comes next."""
        return self.accept_space()

    def text_astring(self) -> str:
        """An astring as UTF-8 text (user names, passwords)."""
        return self.utf8_astring()

    def nstring_or_nil(self) -> bytes | None:
        return self.nstring()

    def mailbox(self, *, allow_utf8: bool = False) -> str:  # type: ignore[override]
        """A mailbox name, decoded, with ``INBOX/...`` normalised too.

        A well-formed astring that is not valid modified UTF-7 is a name no
        mailbox can have: ``NO [CANNOT]``, not ``BAD`` (RFC 3501 5.1.3 is a
        naming rule; the command's syntax is fine).
        """
        try:
            return normalise_mailbox(super().mailbox(allow_utf8=allow_utf8))
        except wire.MailboxNameError as e:
            raise errors.InvalidName(str(e)) from None

    def list_pattern(self, *, allow_utf8: bool = False) -> str | None:
        """A LIST/LSUB reference or pattern; ``None`` when it is not valid modified
        UTF-7, so it matches no mailbox (the command still succeeds, as in Dovecot)."""
        try:
            return self.list_mailbox(allow_utf8=allow_utf8)
        except wire.MailboxNameError:
            return None

    def paren_atoms(self) -> list[str]:
        """``(A B C)``: a parenthesised list of atoms (SELECT parameters, STATUS items, LIST options)."""
        items = self.value_list()
        if not all(isinstance(item, str) for item in items):
            raise ParseError("Expected a list of atoms")
        return [str(item) for item in items]

    def seqset(self) -> list[tuple[int | None, int | None]]:
        """A sequence set as inclusive (first, last) pairs, None for ``*``."""
        parsed = self.sequence_set()
        if parsed.saved:
            raise ParseError("SEARCHRES ($) is not supported")
        return list(parsed.ranges)

    def fetch_atts(self) -> list[FetchAtt]:
        return list(self.fetch_attributes())

    def flag_list(self, *, bare: bool = True) -> list[str]:  # type: ignore[override]
        return list(super().flag_list(bare=bare))

    def search_date(self):  # type: ignore[no-untyped-def]
        return self.date()

    def literal_view(self) -> bytes:
        """A literal (APPEND's message when it was small enough not to be streamed)."""
        return bytes(self.literal())
