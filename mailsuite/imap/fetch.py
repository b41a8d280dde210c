"""FETCH: streaming untagged responses with flow control (RFC 3501 6.4.5, 7.4.2).

Implementation notes:

* Items that the store keeps (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ)
  are answered from the session's cached :class:`MessageInfo`: no file is
  opened, so ``FETCH 1:* (UID FLAGS RFC822.SIZE)`` costs one formatted line
  per message.
* Responses are written in batches of about 64 KiB; after each batch the
  writer waits while the transport has asked us (as its registered push
  producer) to pause, so memory stays bounded whatever the folder size and
  however slow the client.  No response is ever built whole: items are
  written one at a time, and a literal of the stored message (``BODY[]``,
  ``BODY[TEXT]``, ``BODY[1]``...) is read from the store (``IFolder.open_reader``:
  an open file, so an expunge meanwhile does not cut it short) in :data:`CHUNK`
  pieces under the same flow control, so sixty copies of a 10 MB section cost
  no more memory than one chunk.
* Header-only FETCHes take small header blocks from ``IFolder.read_headers``
  (the store's header cache, or one trip to its threads per
  :data:`HEADER_BATCH` messages), never reading a body.  Every other content item is worked out on the store's
  threads (``IFolder.map_messages`` with :mod:`mailsuite.imap.mime_fetch`):
  the MIME structure is parsed there at most once per message and FETCH,
  however many items ask for it, and each item becomes a span of the file, a
  computed value or a formatted list; a partial ``<origin.count>`` of a span
  reads only the octets it returns.  Small messages are prepared a group at a
  time (one trip for up to :data:`GROUP_MESSAGES`), a big one alone.
* ``\\Seen`` is set implicitly for non-PEEK body items only in a read-write
  session (RFC 3501 6.4.5), in one store call before streaming, and the new
  FLAGS are included in those messages' responses.  EXAMINE never changes it.
* A message expunged by another process meanwhile still has a sequence
  number here; its cached items are returned, items needing its content are
  skipped and the command ends ``OK [EXPUNGEISSUED]`` (RFC 5530), also when
  no requested message was left to answer, as Dovecot answers (RFC 2180 4.1.3
  allows either; imaptest counts a NO as a failed FETCH).  A message whose
  file disappears in the middle of its response gets NIL for the items that
  still needed it.
* A client that hangs up mid-FETCH ends the command quietly (:class:`ClientGone`):
  no tagged answer is owed and nothing is logged as an error.
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.internet import defer, task

from mailsuite import errors
from mailsuite.imap import mime, mime_fetch
from mailsuite.imap import wire
from mailsuite.imap.args import FetchAtt
from mailsuite.imap.responses import Response
from mailsuite.imap.session import flag_list

BATCH_BYTES = 64 * 1024
#: Headers read per trip to the store's threads for header-only FETCHes (and messages per window).
HEADER_BATCH = 256
#: Header-only FETCHes answer from header blocks up to this size (the store caches those);
#: a message with a longer one goes the planned way (map_messages).
SMALL_HEADER = 64 * 1024
#: Octets of a literal read from the store per trip and written at once.
CHUNK = 256 * 1024
#: Small messages prepared per trip to the store.
GROUP_MESSAGES = 64
#: Items of one message written between two turns of the reactor.
YIELD_ITEMS = 512

_BODY_ITEMS = {"RFC822", "RFC822.TEXT", "BODYSTRUCTURE"}
_HEADER_ITEMS = {"ENVELOPE", "RFC822.HEADER"}


def internal_date(value: datetime.datetime) -> bytes:
    """date-time of RFC 3501 9, DQUOTEs included (wire's formatter)."""
    return wire.format_internaldate(value)


def _needs(att: FetchAtt) -> str:
    """"meta", "header" or "body": the least the item needs from the store."""
    if att.name in _BODY_ITEMS or (att.name == "BODY" and att.section is None):
        return "body"
    if att.name in _HEADER_ITEMS:
        return "header"
    if att.section is not None:
        if not att.section and att.specifier in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            return "header"
        return "body"
    return "meta"


def sets_seen(att: FetchAtt) -> bool:
    """Items that set \\Seen implicitly (RFC 3501 6.4.5: BODY[...], RFC822, RFC822.TEXT, BINARY[...])."""
    if att.name in ("RFC822", "RFC822.TEXT"):
        return True
    return att.name in ("BODY", "BINARY") and att.section is not None and not att.peek


async def run_fetch(server: Any, uids: list[int], atts: list[FetchAtt], *, uid_command: bool, changed_since: int | None = None) -> Response | None:
    """Write the untagged FETCH responses for ``uids``; returns the tagged response if not plain OK."""
    selected = server.selected
    folder = selected.folder
    names = [a.name for a in atts]
    if uid_command and "UID" not in names:
        atts = [FetchAtt("UID"), *atts]
    if changed_since is not None or "MODSEQ" in names:
        server.condstore = True  # RFC 7162 3.1
    if changed_since is not None:
        uids = [u for u in uids if selected.info[u].modseq > changed_since]
        if "MODSEQ" not in names:
            atts = [*atts, FetchAtt("MODSEQ")]
    needs = {_needs(a) for a in atts}
    seen_now: set[int] = set()
    if not selected.read_only and any(sets_seen(a) for a in atts):
        unseen = [u for u in uids if "\\Seen" not in selected.info[u].flags and u not in selected.vanished]
        if unseen:
            changed = await folder.store_flags(unseen, ["\\Seen"], "add")
            for info in changed:
                if selected.update(info, announce=False):
                    seen_now.add(info.uid)
    add_flags = bool(seen_now) and "FLAGS" not in names
    if seen_now and server.condstore and not any(a.name == "MODSEQ" for a in atts):
        # RFC 7162 3.2: once enabled, every FETCH reporting a flag change carries MODSEQ
        atts = [*atts, FetchAtt("MODSEQ")]
    recent = selected.recent()
    try:
        if needs == {"meta"} and not add_flags:
            await _fetch_meta(server, selected, uids, atts, recent)
            return None
        writer = _Writer(server, selected, atts, recent, seen_now if add_flags else set())
        await writer.run(uids, header_only="header" in needs and "body" not in needs)
    except ConnectionError as e:  # wait_writable: the connection is closing or gone
        raise ClientGone() from e
    if writer.expunge_issued:
        # RFC 5530 EXPUNGEISSUED on an OK, as Dovecot answers, also when nothing was left to
        # answer: the client learns the EXPUNGEs at its next NOOP.  A NO makes clients (and
        # imaptest) treat the whole FETCH as failed because another session expunged mail.
        return Response("OK", "Some messages were expunged before they could be fetched.", "EXPUNGEISSUED")
    return None


class ClientGone(defer.CancelledError):
    """The client went away in the middle of a FETCH: nothing to answer and nothing to log
    (the server ends a command cancelled on a closing connection quietly)."""


class _Writer:
    """Writes the responses of one FETCH with content items, message by message and item by item."""

    def __init__(self, server: Any, selected: Any, atts: list[FetchAtt], recent: frozenset[int], seen_now: set[int]) -> None:
        self.server = server
        self.selected = selected
        self.folder = selected.folder
        self.atts = atts
        self.recent = recent
        self.seen_now = seen_now
        self.content = [a for a in atts if a.name not in _META]
        known: dict[FetchAtt, bytes] = {}  # a FETCH may repeat one item thousands of times
        #: Each item's name in the response, made once per FETCH.
        self.names = [known.setdefault(a, a.response_name()) for a in atts]
        self.expunge_issued = 0
        self._parts: list[bytes] = []
        self._size = 0

    # -- output ------------------------------------------------------------------
    def _add(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)

    async def _flush(self, *, unless_small: bool = False) -> None:
        """Send what is buffered (when it is worth a write, with ``unless_small``) and wait
        while the transport is full."""
        if not self._parts or (unless_small and self._size < BATCH_BYTES):
            return
        self.server.write(b"".join(self._parts))
        self._parts, self._size = [], 0
        await _breathe(self.server)

    # -- messages ------------------------------------------------------------------
    async def run(self, uids: list[int], *, header_only: bool) -> None:
        selected = self.selected
        for first in range(0, len(uids), HEADER_BATCH):
            live = []
            for uid in uids[first : first + HEADER_BATCH]:
                if selected.seq_of(uid) is None or uid not in selected.info:
                    continue
                if uid in selected.vanished:
                    self.expunge_issued += 1
                    continue
                live.append(uid)
            headers: dict[int, bytes] = {}
            if header_only and live:
                # small header blocks through the store's header cache; big ones go the planned way
                headers = await self.folder.read_headers(live, max_size=SMALL_HEADER)
            index = 0
            while index < len(live):
                uid = live[index]
                if uid in headers:
                    await self._header_message(uid, headers.pop(uid))
                    index += 1
                    continue
                group = self._group(live, index, headers)
                index += len(group)
                budget = mime_fetch.Budget()
                plans = {u: mime_fetch.MessagePlan(self.content) for u in group}
                filled = await self.folder.map_messages(group, lambda u, octets: plans[u].fill(octets, budget))  # noqa: B023 - awaited here
                for u in group:
                    if u not in filled:
                        self.expunge_issued += 1
                        continue
                    await self._planned_message(u, plans.pop(u))
        await self._flush()

    def _group(self, live: list[int], index: int, headers: dict[int, bytes]) -> list[int]:
        """Messages from ``index`` on that one trip to the store prepares: small ones together
        (up to the trip's budget), a big one alone."""
        infos = self.selected.info
        group: list[int] = []
        octets = 0
        for uid in live[index : index + GROUP_MESSAGES]:
            if uid in headers:
                break
            size = infos[uid].size
            if group and (size > mime_fetch.KEEP_WHOLE or octets + size > mime_fetch.BUDGET):
                break
            group.append(uid)
            octets += size
            if size > mime_fetch.KEEP_WHOLE:
                break
        return group

    def _start(self, uid: int) -> Any:
        self._add(b"* %d FETCH (" % self.selected.seq_of(uid))
        return self.selected.info[uid]

    def _flags(self, uid: int, att: FetchAtt | None) -> None:
        """The FLAGS this FETCH changed (RFC 3501 6.4.5 \\Seen): last, or before a whole
        message that ends the response (so the big literal is the end of the line)."""
        if uid not in self.seen_now:
            return
        if att is None and not _whole_message(self.atts[-1]):
            self._add(b" FLAGS " + flag_list(self.selected.info[uid].flags, uid in self.recent))
        elif att is self.atts[-1] and _whole_message(att):
            self._add(b"FLAGS " + flag_list(self.selected.info[uid].flags, uid in self.recent) + b" ")

    def _end(self, uid: int) -> None:
        self._flags(uid, None)
        self._add(b")\r\n")

    async def _header_message(self, uid: int, header: bytes) -> None:
        info = self._start(uid)
        for n, att in enumerate(self.atts):
            if n:
                self._add(b" ")
            item = _meta(att, uid, info, self.recent)
            self._add(item if item is not None else _header_item(att, header))
        self._end(uid)
        await self._flush(unless_small=True)

    async def _planned_message(self, uid: int, plan: mime_fetch.MessagePlan) -> None:
        reader: Any = None
        try:
            info = self._start(uid)
            content = 0
            lost = False
            for n, att in enumerate(self.atts):
                if n:
                    self._add(b" ")
                item = _meta(att, uid, info, self.recent)
                if item is not None:
                    self._add(item)
                    continue
                self._flags(uid, att)
                if content >= plan.next and not lost:
                    # the rest of the items, in another trip to the store (the tree is kept)
                    budget = mime_fetch.Budget()
                    filled = await self.folder.map_messages([uid], lambda u, octets: plan.fill(octets, budget))  # noqa: B023 - awaited here
                    lost = uid not in filled
                piece, plan.pieces[content] = plan.pieces[content], None
                content += 1
                name = self.names[n]
                if isinstance(piece, mime_fetch.Span) and plan.data is None and reader is None and not lost:
                    try:
                        reader = await self.folder.open_reader(uid)
                    except errors.NoSuchMessage:
                        lost = True
                if piece is None or (isinstance(piece, mime_fetch.Span) and plan.data is None and reader is None):
                    self._add(name + b" NIL")  # expunged and its file removed in the middle of this FETCH
                    lost = True
                elif isinstance(piece, mime_fetch.Formatted):
                    self._add(name + b" " + piece.value)
                elif isinstance(piece, bytes):
                    self._add(name + b" {%d}\r\n" % len(piece))
                    self._add(piece)
                else:
                    self._add(name + b" {%d}\r\n" % piece.length)
                    await self._span(plan, reader, piece)
                if content % YIELD_ITEMS == 0:
                    # thousands of tiny items (BODY[1]<0.1> x 3,400): let other connections run
                    await self._flush()
                    await task.deferLater(self.server.reactor, 0, lambda: None)
                else:
                    await self._flush(unless_small=True)
            self._end(uid)
            if lost:
                self.expunge_issued += 1
            await self._flush(unless_small=True)
        finally:
            if reader is not None:
                reader.close()

    async def _span(self, plan: mime_fetch.MessagePlan, reader: Any, span: mime_fetch.Span) -> None:
        """Send a literal's octets from the message (kept whole in the plan, or read through an
        open reader), in chunks under flow control."""
        if plan.data is not None and span.length <= CHUNK:
            self._add(plan.data[span.start : span.end])
            return
        await self._flush()
        position = span.start
        while position < span.end:
            count = min(CHUNK, span.end - position)
            if plan.data is not None:
                chunk = plan.data[position : position + count]
            else:
                chunk = await reader.read(position, count)
            if not chunk:  # shorter than when it was planned (never for a stored message)
                chunk = b" " * count
            self.server.write(chunk)
            position += len(chunk)
            await self.server.wait_writable()


_turns = 0


async def _breathe(server: Any) -> None:
    """Wait while the transport is full; every few batches let other connections run."""
    global _turns
    await server.wait_writable()
    _turns += 1
    if _turns % 16 == 0:
        await task.deferLater(server.reactor, 0, lambda: None)


def _whole_message(att: FetchAtt) -> bool:
    """RFC822 / BODY[] without a partial."""
    if att.name == "RFC822":
        return True
    return att.name == "BODY" and att.section == () and att.specifier == "" and att.partial is None


#: Cached items: (response template piece, value getter) -- values are formatted by one % per line.
_META = {
    "UID": (b"UID %d", lambda uid, info, recent: uid),
    "FLAGS": (b"FLAGS %s", lambda uid, info, recent: flag_list(info.flags, uid in recent)),
    "INTERNALDATE": (b"INTERNALDATE %s", lambda uid, info, recent: internal_date(info.internal_date)),
    "RFC822.SIZE": (b"RFC822.SIZE %d", lambda uid, info, recent: info.size),
    "MODSEQ": (b"MODSEQ (%d)", lambda uid, info, recent: info.modseq),
}


async def _fetch_meta(server: Any, selected: Any, uids: list[int], atts: list[FetchAtt], recent: frozenset[int]) -> None:
    """The fast path for items the session has cached: one ``%`` per line, written in batches."""
    template = b"* %d FETCH (" + b" ".join(_META[a.name][0] for a in atts) + b")\r\n"
    getters = [_META[a.name][1] for a in atts]
    names = [a.name for a in atts]
    infos = selected.info
    if names == ["UID", "FLAGS", "RFC822.SIZE"]:  # what every sync client asks for
        def row(pos: int, uid: int, info: Any) -> bytes:
            return template % (pos, uid, flag_list(info.flags, uid in recent), info.size)
    else:
        def row(pos: int, uid: int, info: Any) -> bytes:
            return template % (pos, *[get(uid, info, recent) for get in getters])
    view = selected.uids
    if len(uids) == len(view):  # 1:* -- the positions are the indexes
        positions: Any = range(1, len(view) + 1)
    else:
        positions = _positions(view, uids)
    batch: list[bytes] = []
    size = 0
    for pos, uid in zip(positions, uids):
        line = row(pos, uid, infos[uid])
        batch.append(line)
        size += len(line)
        if size >= BATCH_BYTES:
            server.write(b"".join(batch))
            batch, size = [], 0
            await _breathe(server)
    if batch:
        server.write(b"".join(batch))


def _positions(view: list[int], uids: list[int]) -> list[int]:
    """Sequence numbers of ``uids`` (ascending, all in ``view``), walking the view once."""
    out = []
    position = 0
    for uid in uids:
        while view[position] < uid:
            position += 1
        out.append(position + 1)
    return out


def _meta(att: FetchAtt, uid: int, info: Any, recent: frozenset[int]) -> bytes | None:
    name = att.name
    if name == "UID":
        return b"UID %d" % uid
    if name == "FLAGS":
        return b"FLAGS " + flag_list(info.flags, uid in recent)
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + internal_date(info.internal_date)
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % info.size
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % info.modseq
    return None


def _header_item(att: FetchAtt, header: bytes) -> bytes:
    """A top-level header item (ENVELOPE, RFC822.HEADER, BODY[HEADER...]) from the header block alone."""
    if att.name == "ENVELOPE":
        return b"ENVELOPE " + mime.envelope(header)
    if att.name == "RFC822.HEADER":
        return b"RFC822.HEADER " + wire.literal(header)
    if att.specifier == "HEADER":
        data = header
    else:  # HEADER.FIELDS (..) / HEADER.FIELDS.NOT (..) of the top-level message
        data = mime.header_fields(header, att.fields, exclude=att.specifier == "HEADER.FIELDS.NOT")
    if att.partial is not None:
        start, count = att.partial
        data = data[start : start + count]
    return att.response_name() + b" " + wire.literal(data)
