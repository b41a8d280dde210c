"""FETCH: streaming untagged responses with flow control (RFC 3501 6.4.5, 7.4.2).

Implementation notes:

* Items that the store keeps (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ)
  are answered from the session's cached :class:`MessageInfo`: no file is
  opened, so ``FETCH 1:* (UID FLAGS RFC822.SIZE)`` costs one formatted line
  per message.
* Responses are written in batches of about 64 KiB; after each batch the
  writer waits while the transport has asked us (as its registered push
  producer) to pause, so memory stays bounded whatever the folder size and
  however slow the client.  Whole-message literals (``BODY[]``, ``RFC822``)
  are copied from the file in chunks under the same flow control.
* Header-only items read the header through ``IFolder.read_header`` (no
  body read); structure and section items parse the file with
  :mod:`mailsuite.imap.mime`.
* ``\\Seen`` is set implicitly for non-PEEK body items only in a read-write
  session (RFC 3501 6.4.5), in one store call before streaming, and the new
  FLAGS are included in those messages' responses.  EXAMINE never changes it.
* A message expunged by another process meanwhile still has a sequence
  number here; its cached items are returned, items needing its content are
  skipped and the command ends ``OK [EXPUNGEISSUED]``, or ``NO [EXPUNGEISSUED]``
  if no requested message was left to answer (RFC 2180 4.1.3, RFC 5530).
"""

from __future__ import annotations

import datetime
from typing import Any, BinaryIO

from twisted.internet import task, threads

from mailsuite import errors
from mailsuite.imap import header_cache
from mailsuite.imap import mime_adapter as mime
from mailsuite.imap import wire
from mailsuite.imap.args import FetchAtt
from mailsuite.imap.responses import Response
from mailsuite.imap.session import flag_list

BATCH_BYTES = 64 * 1024
#: Headers read per trip to a worker thread for header-only FETCHes.
HEADER_BATCH = 256
CHUNK = 64 * 1024

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
    expunge_issued = 0  # messages skipped because their content is gone
    batch: list[bytes] = []
    batch_size = 0
    server.start_streaming()
    if needs == {"meta"} and not add_flags:
        try:
            await _fetch_meta(server, selected, uids, atts, recent)
        finally:
            server.stop_streaming()
        return None
    try:
        header_only = "header" in needs and "body" not in needs
        headers: dict[int, bytes] = {}
        for index, uid in enumerate(uids):
            if header_only and index % HEADER_BATCH == 0:
                headers = await read_headers(server, folder, uids[index : index + HEADER_BATCH])
            seq = selected.seq_of(uid)
            info = selected.info.get(uid)
            if seq is None or info is None:
                continue
            gone = uid in selected.vanished
            if gone and needs - {"meta"}:
                expunge_issued += 1
                continue
            header: bytes | None = None
            fp: BinaryIO | None = None
            try:
                if "body" in needs:
                    fp = folder.open_message(uid)
                elif header_only:
                    header = headers.get(uid)
                    if header is None:
                        raise errors.NoSuchMessage()
            except errors.NoSuchMessage:
                expunge_issued += 1
                continue
            try:
                parts: list[bytes] = []
                stream_tail: tuple[BinaryIO, int, int] | None = None
                for att in atts:
                    item = _meta(att, uid, info, recent)
                    if item is None:
                        if fp is not None and att is atts[-1] and _whole_message(att):
                            # the whole message is copied from the file after the rest of the line
                            size = _file_size(fp)
                            parts.append(att.response_name() + b" {%d}\r\n" % size)
                            stream_tail = (fp, 0, size)
                            continue
                        item = _content(att, fp, header)
                    parts.append(item)
                if add_flags and uid in seen_now:
                    flags = b"FLAGS " + flag_list(selected.info[uid].flags, uid in recent)
                    parts.insert(len(parts) - 1 if stream_tail is not None else len(parts), flags)
                line = b"* %d FETCH (" % seq + b" ".join(parts)
                if stream_tail is None:
                    line += b")\r\n"
                    batch.append(line)
                    batch_size += len(line)
                    if batch_size >= BATCH_BYTES:
                        server.write(b"".join(batch))
                        batch, batch_size = [], 0
                        await _breathe(server)
                else:
                    if batch:
                        server.write(b"".join(batch))
                        batch, batch_size = [], 0
                    server.write(line)
                    await _copy(server, *stream_tail)
                    server.write(b")\r\n")
                    await _breathe(server)
            finally:
                if fp is not None:
                    fp.close()
        if batch:
            server.write(b"".join(batch))
    finally:
        server.stop_streaming()
    if expunge_issued and expunge_issued == len(uids):
        # RFC 2180 4.1.3: nothing left to answer: only a tagged NO
        return Response("NO", "Some messages were expunged before they could be fetched.", "EXPUNGEISSUED")
    if expunge_issued:
        # The rest was answered: OK with RFC 5530's EXPUNGEISSUED (the client learns the
        # EXPUNGEs at its next NOOP), as Dovecot does.  A NO here makes clients treat a
        # whole header download as failed because another session expunged one message.
        return Response("OK", "FETCH completed; some messages were expunged meanwhile.", "EXPUNGEISSUED")
    return None


_turns = 0


async def _breathe(server: Any) -> None:
    """Wait while the transport is full; every few batches let other connections run."""
    global _turns
    await server.wait_writable()
    _turns += 1
    if _turns % 16 == 0:
        await task.deferLater(server.reactor, 0, lambda: None)


async def read_headers(server: Any, folder: Any, uids: list[int]) -> dict[int, bytes]:
    """Header blocks of ``uids`` (missing messages left out): from the shared cache, the rest
    read in one worker-thread trip and cached."""
    prefix = header_cache.folder_key(server, folder)
    cache = header_cache.CACHE
    out: dict[int, bytes] = {}
    missing: list[int] = []
    for uid in uids:
        block = cache.get((*prefix, uid))
        if block is None:
            missing.append(uid)
        else:
            out[uid] = block
    if not missing:
        return out

    def work() -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for uid in missing:
            try:
                fp = folder.open_message(uid)
            except errors.NoSuchMessage:
                continue
            with fp:
                found[uid] = mime.read_header(fp)
        return found

    pool = getattr(server.reactor, "getThreadPool", None)
    if pool is None:  # a test clock: no threads
        found = work()
    else:
        found = await threads.deferToThreadPool(server.reactor, pool(), work)
    for uid, block in found.items():
        cache.put((*prefix, uid), block)
    out.update(found)
    return out


async def _copy(server: Any, fp: BinaryIO, start: int, size: int) -> None:
    """Send ``size`` bytes of ``fp`` from ``start`` in chunks, under flow control."""
    fp.seek(start)
    left = size
    while left > 0:
        chunk = fp.read(min(CHUNK, left))
        if not chunk:
            # the file shrank under us: keep the announced literal length
            chunk = b" " * min(CHUNK, left)
        server.write(chunk)
        left -= len(chunk)
        await server.wait_writable()


def _whole_message(att: FetchAtt) -> bool:
    """RFC822 / BODY[] without a partial: worth streaming instead of loading."""
    if att.name == "RFC822":
        return True
    return att.name == "BODY" and att.section == () and att.specifier == "" and att.partial is None


def _file_size(fp: BinaryIO) -> int:
    fp.seek(0, 2)
    size = fp.tell()
    fp.seek(0)
    return size


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


def _content(att: FetchAtt, fp: BinaryIO | None, header: bytes | None) -> bytes:
    """Items that need the header or the whole message."""
    name = att.name
    if name == "ENVELOPE":
        return b"ENVELOPE " + mime.envelope(header if header is not None else mime.read_header(fp))
    if name == "RFC822.HEADER":
        data = header if header is not None else mime.read_header(fp)
        return b"RFC822.HEADER " + mime.literal(data)
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + mime.bodystructure(fp, extended=True)
    if name == "BODY" and att.section is None:
        return b"BODY " + mime.bodystructure(fp, extended=False)
    if name == "RFC822":
        fp.seek(0)  # type: ignore[union-attr]
        return b"RFC822 " + mime.literal(fp.read())  # type: ignore[union-attr]
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + mime.literal(mime.section(fp, (), "TEXT", ()))
    # BODY[section]<partial> / BINARY[section]
    if fp is not None and att.partial is not None and att.name == "BODY" and att.section == () and att.specifier == "":
        # a slice of the whole message: read only that (RFC 3501 6.4.5 partial)
        start, count = att.partial
        fp.seek(start)
        return att.response_name() + b" " + mime.literal(fp.read(count))
    if fp is None and header is not None:
        data = mime.header_section(header, att.specifier, att.fields)
    else:
        data = mime.section(fp, att.section or (), att.specifier, att.fields, binary=att.name == "BINARY")
    if att.partial is not None:
        start, count = att.partial
        data = data[start : start + count]
    return att.response_name() + b" " + mime.literal(data)

