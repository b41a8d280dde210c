"""FETCH's content items for one message, worked out where the octets are: on the store's threads.

:mod:`mailsuite.imap.fetch` hands a :class:`MessagePlan` to ``IFolder.map_messages``;
:meth:`MessagePlan.fill` runs there over the message's octets and turns each
content item (RFC 3501 6.4.5) into a piece:

* a :class:`Span` of the stored message (``BODY[]``, ``BODY[TEXT]``, ``BODY[1]``,
  ``BODY[1.MIME]``, ``RFC822.HEADER``...): the writer streams it from the store in
  chunks under flow control and, for a partial ``<origin.count>``, reads only the
  octets it returns;
* ``bytes`` computed here (``HEADER.FIELDS[.NOT]``), sent as a literal;
* a :class:`Formatted` value sent as it is (``BODYSTRUCTURE``, ``BODY``, ``ENVELOPE``).

Implementation notes:

* The message is parsed at most once per FETCH, and only when an item needs its
  structure (a part number, BODYSTRUCTURE): the top-level HEADER and TEXT only need
  the end of the header (:func:`mime.shallow_root`).  The tree (offsets and header
  fields, no content) stays in the plan between trips.
* Identical items (``BODY.PEEK[TEXT]`` sixty times) resolve once: a memo keyed by what
  an item addresses (``RFC822.TEXT`` and ``BODY[TEXT]`` share it) and its partial.
* Octets held in memory are bounded: a trip resolves items in order until its
  :class:`Budget` is spent (at least one item, so every trip makes progress) and the
  writer fetches the rest in later trips; the memo keeps computed values only up to
  :data:`MEMO_OCTETS`; a small span is copied now only within the budget; a small
  message is kept whole (its spans are then served from memory) only within it.
* Nothing here touches the reactor: plans are filled on a store thread while the
  reactor thread waits for the trip's Deferred, so they need no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

from mailsuite.imap import mime
from mailsuite.imap.args import FetchAtt

#: Octets a trip may leave in memory (computed values, copied spans, whole small messages).
BUDGET = 1 << 20
#: Spans up to this size are copied during the trip (within the budget) instead of read later.
SMALL_SPAN = 16 * 1024
#: Messages up to this size are kept whole in the plan (within the budget).
KEEP_WHOLE = 256 * 1024
#: Octets of computed values the memo keeps for repeated items.
MEMO_OCTETS = 1 << 20


@dataclass(frozen=True)
class Span:
    """Literal content taken from the stored message: octets ``start`` to ``end``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Formatted:
    """A value sent as it is (a parenthesised list)."""

    value: bytes


Piece = Union[Span, Formatted, bytes]


class Budget:
    """Octets one trip may still put in memory (shared by the messages of a batch)."""

    def __init__(self, octets: int = BUDGET) -> None:
        self.left = octets

    def spend(self, piece: Piece) -> None:
        if not isinstance(piece, Span):
            self.left -= len(piece.value if isinstance(piece, Formatted) else piece)


def content_key(att: FetchAtt) -> tuple[Any, ...]:
    """What a content item addresses, whatever it is called (RFC 3501 6.4.5: RFC822.TEXT is BODY[TEXT]...)."""
    name = att.name
    if name == "BODYSTRUCTURE":
        return ("structure", True)
    if name == "BODY" and att.section is None:
        return ("structure", False)
    if name == "ENVELOPE":
        return ("envelope",)
    if name == "RFC822":
        return ("section", (), "", ())
    if name == "RFC822.HEADER":
        return ("section", (), "HEADER", ())
    if name == "RFC822.TEXT":
        return ("section", (), "TEXT", ())
    return ("section", att.section or (), att.specifier.upper(), tuple(f.upper() for f in att.fields))


class MessagePlan:
    """The content items of one FETCH for one message, resolved in order over one or more trips."""

    def __init__(self, atts: Sequence[FetchAtt]) -> None:
        self.atts = list(atts)
        #: One piece per item once resolved; the writer sets it back to None once sent.
        self.pieces: list[Piece | None] = [None] * len(self.atts)
        #: Index of the first item not resolved yet.
        self.next = 0
        #: Octets of the stored message (-1 until the first trip).
        self.size = -1
        #: The whole message, when small enough to keep: spans are served from it.
        self.data: bytes | None = None
        self._root: mime.Part | None = None
        self._shallow: mime.Part | None = None
        self._memo: dict[tuple[Any, ...], Piece] = {}
        self._memo_octets = 0

    def fill(self, octets: Any, budget: Budget) -> bool:
        """Resolve items from :attr:`next` on until ``budget`` is spent (at least one).  Runs
        on a store thread; ``octets`` is valid only during the call."""
        if self.size < 0:
            self.size = len(octets)
            if self.size <= KEEP_WHOLE and self.size <= budget.left:
                self.data = bytes(octets)  # no copy when octets already is bytes
                budget.left -= self.size
        first = True
        while self.next < len(self.atts):
            if budget.left <= 0 and not first:
                break
            self.pieces[self.next] = self._piece(octets, self.atts[self.next], budget)
            self.next += 1
            first = False
        return True

    # -- resolving ---------------------------------------------------------------
    def _piece(self, octets: Any, att: FetchAtt, budget: Budget) -> Piece:
        key = content_key(att)
        wanted = (key, att.partial)
        piece = self._memo.get(wanted)
        if piece is not None:
            return piece
        whole = self._memo.get((key, None))
        if whole is None:
            whole = self._resolve(octets, key)
            budget.spend(whole)
            self._remember((key, None), whole)
        piece = self._narrow(octets, whole, att.partial, budget)
        if piece is not whole:
            self._remember(wanted, piece)
        return piece

    def _remember(self, key: tuple[Any, ...], piece: Piece) -> None:
        if isinstance(piece, Span):
            self._memo[key] = piece
            return
        size = len(piece.value if isinstance(piece, Formatted) else piece)
        if self._memo_octets + size <= MEMO_OCTETS:
            self._memo[key] = piece
            self._memo_octets += size

    def _tree(self, octets: Any) -> mime.Part:
        """The MIME structure, parsed once per plan."""
        if self._root is None:
            self._root = mime.parse(octets)
        return self._root

    def _top(self, octets: Any) -> mime.Part:
        """The whole message with only its header end known (the parsed tree if there is one)."""
        if self._root is not None:
            return self._root
        if self._shallow is None:
            self._shallow = mime.shallow_root(octets)
        return self._shallow

    def _resolve(self, octets: Any, key: tuple[Any, ...]) -> Piece:
        kind = key[0]
        if kind == "structure":
            return Formatted(mime.structure_of(octets, self._tree(octets), extended=key[1]))
        if kind == "envelope":
            return Formatted(mime.envelope(bytes(octets[: self._top(octets).body_start])))
        _, numbers, specifier, fields = key
        root = self._tree(octets) if numbers else self._top(octets)
        extent = mime.section_range(root, numbers, specifier)
        if extent is None:
            return b""
        if specifier.startswith("HEADER.FIELDS"):
            header = bytes(octets[extent[0] : extent[1]])
            return mime.header_fields(header, fields, exclude=specifier.endswith(".NOT"))
        return Span(*extent)

    def _narrow(self, octets: Any, whole: Piece, partial: tuple[int, int] | None, budget: Budget) -> Piece:
        """The ``<origin.count>`` slice of a piece (RFC 3501 6.4.5), small spans copied now."""
        if isinstance(whole, Formatted):
            return whole
        if isinstance(whole, Span):
            span = whole
            if partial is not None:
                origin, count = partial
                start = min(span.start + origin, span.end)
                span = Span(start, min(start + count, span.end))
            if self.data is None and span.length <= SMALL_SPAN and span.length <= budget.left:
                budget.left -= span.length
                return bytes(octets[span.start : span.end])
            return span
        if partial is None:
            return whole
        origin, count = partial
        piece = mime.partial(whole, origin, count)
        budget.spend(piece)
        return piece
