"""Selected-state message commands and their UID forms: FETCH, STORE, SEARCH,
COPY, MOVE, EXPUNGE, UID EXPUNGE.

RFC 3501 6.4, RFC 4315 (UIDPLUS: COPYUID, UID EXPUNGE), RFC 6851 (MOVE),
RFC 7162 (CONDSTORE: CHANGEDSINCE, UNCHANGEDSINCE, MODSEQ, [MODIFIED]).
Sequence sets are resolved against the session's view
(:class:`mailsuite.imap.session.SelectedFolder`), never the store's.
"""

from __future__ import annotations

from typing import Any, Iterable

from mailsuite import errors
from mailsuite.antispam import training
from mailsuite.imap import search_adapter
from mailsuite.imap.args import Arguments
from mailsuite.imap.dispatch import ONLY_SELECTED, command
from mailsuite.imap.fetch import run_fetch
from mailsuite.imap.responses import Response, bad, no
from mailsuite.imap.session import flag_list


def _uids(server: Any, args: Arguments, *, uid: bool) -> list[int]:
    ranges = args.seqset()
    try:
        return server.selected.resolve(ranges, uid=uid)
    except ValueError as e:
        raise bad(str(e)) from None


def uid_set(uids: Iterable[int]) -> str:
    """Compact ``1:3,7`` form of a UID list (RFC 3501 9 sequence-set), in the given order."""
    out: list[str] = []
    items = list(uids)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}:{items[j]}")
        i = j + 1
    return ",".join(out)


# ---------------------------------------------------------------------------
# FETCH
# ---------------------------------------------------------------------------


async def _fetch(server: Any, args: Arguments, *, uid: bool) -> Response | None:
    args.space()
    ranges = args.seqset()
    args.space()
    atts = args.fetch_atts()
    changed_since, vanished = args.fetch_modifiers()  # RFC 7162 3.1.4
    args.end()
    if vanished:
        raise bad("QRESYNC is not supported")
    if any(att.name.startswith("BINARY") for att in atts):
        raise bad("BINARY is not supported")  # not advertised (RFC 3516)
    try:
        uids = server.selected.resolve(ranges, uid=uid)
    except ValueError as e:
        raise bad(str(e)) from None
    return await run_fetch(server, uids, atts, uid_command=uid, changed_since=changed_since)


@command("FETCH", ONLY_SELECTED, expunge_ok=False)
async def fetch(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 3501 6.4.5."""
    return await _fetch(server, args, uid=False)


@command("FETCH", ONLY_SELECTED, uid=True)
async def uid_fetch(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 3501 6.4.8."""
    return await _fetch(server, args, uid=True)


# ---------------------------------------------------------------------------
# STORE
# ---------------------------------------------------------------------------


async def _store(server: Any, args: Arguments, *, uid: bool) -> Response | None:
    args.space()
    ranges = args.seqset()
    args.space()
    request = args.store_arguments()  # [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags (RFC 7162 3.1.3)
    mode, silent, flags, unchanged_since = request.mode, request.silent, list(request.flags), request.unchanged_since
    if "\\Recent" in flags:
        raise bad("\\Recent can't be stored")
    selected = server.selected
    if selected.read_only:
        raise no("Mailbox is read-only.", "READ-ONLY")
    if unchanged_since is not None:
        server.condstore = True
        if server.dirty:
            await server.refresh()  # compare against the store's latest MODSEQs
    try:
        uids = selected.resolve(ranges, uid=uid)
    except ValueError as e:
        raise bad(str(e)) from None
    live = [u for u in uids if u not in selected.vanished]
    changed = await selected.folder.store_flags(live, flags, mode, unchanged_since) if live else []
    changed_uids = set()
    for info in changed:
        selected.update(info, announce=False)
        selected.flags_changed.pop(info.uid, None)
        changed_uids.add(info.uid)
    modified: list[int] = []
    if unchanged_since is not None:
        modified = [u for u in live if u not in changed_uids and selected.info[u].modseq > unchanged_since]
    recent = selected.recent()
    lines: list[bytes] = selected.keyword_lines()
    skip = set(modified)
    for u in live:
        if u in skip:
            continue
        if silent and not (server.condstore and u in changed_uids):
            continue
        seq = selected.seq_of(u)
        info = selected.info[u]
        items = []
        if uid:
            items.append(b"UID %d" % u)
        if not silent:
            items.append(b"FLAGS " + flag_list(info.flags, u in recent))
        if server.condstore:
            items.append(b"MODSEQ (%d)" % info.modseq)
        lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
    if lines:
        server.write(b"".join(lines))
    if modified:
        numbers = modified if uid else [selected.seq_of(u) for u in modified]
        return Response("OK", "Conditional STORE failed for some messages.", f"MODIFIED {uid_set(numbers)}")
    return None


@command("STORE", ONLY_SELECTED, expunge_ok=False)
async def store(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 3501 6.4.6 (+ UNCHANGEDSINCE, RFC 7162 3.1.3)."""
    return await _store(server, args, uid=False)


@command("STORE", ONLY_SELECTED, uid=True)
async def uid_store(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 3501 6.4.8."""
    return await _store(server, args, uid=True)


# ---------------------------------------------------------------------------
# SEARCH
# ---------------------------------------------------------------------------


async def _search(server: Any, args: Arguments, *, uid: bool) -> None:
    args.space()
    selected = server.selected
    result = await search_adapter.search(server, selected, args, uid=uid)
    server.write(result)


@command("SEARCH", ONLY_SELECTED, expunge_ok=False)
async def search(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.4.4."""
    await _search(server, args, uid=False)


@command("SEARCH", ONLY_SELECTED, uid=True)
async def uid_search(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.4.8."""
    await _search(server, args, uid=True)


# ---------------------------------------------------------------------------
# COPY / MOVE
# ---------------------------------------------------------------------------


async def _copy(server: Any, args: Arguments, *, uid: bool, move: bool) -> Response | None:
    args.space()
    ranges = args.seqset()
    args.space()
    destination = args.mailbox()
    args.end()
    selected = server.selected
    if move and selected.read_only:
        raise no("Mailbox is read-only.", "READ-ONLY")
    try:
        uids = selected.resolve(ranges, uid=uid)
    except ValueError as e:
        raise bad(str(e)) from None
    if any(u in selected.vanished for u in uids):
        raise no("Some of the requested messages no longer exist.", "EXPUNGEISSUED")
    if not uids:
        # RFC 4315 3: nothing copied, no COPYUID (but a missing target is still an error)
        await server.mailbox.status(destination)
        return Response("OK", f"{'MOVE' if move else 'COPY'} completed.")
    folder = selected.folder
    try:
        pairs = await (folder.move(uids, destination) if move else folder.copy(uids, destination))
    except errors.NoSuchFolder:
        # [TRYCREATE] is for a missing target (RFC 3501 6.4.7).  Ask about the
        # selected folder, not the target: another session may create the target
        # meanwhile (imaptest's stress run did), which must not turn this into
        # "the selected mailbox was deleted".  If that one is gone (or was
        # re-created: new UIDVALIDITY) the announce after this command ends the
        # session with BYE.
        try:
            current = await server.mailbox.status(folder.name)
        except errors.NoSuchFolder:
            current = None
        if current is not None and current.uidvalidity == folder.uidvalidity:
            raise no("Mailbox doesn't exist", "TRYCREATE") from None
        server.dirty = True
        raise no("The selected mailbox was deleted or renamed.", "NONEXISTENT") from None
    if destination == folder.name:
        server.dirty = True
    if pairs and server.user is not None:  # moves into and out of Junk: the user's spam/ham verdicts
        training.note_move(server.cid, server.user.address, folder.name, destination, [p[0] for p in pairs], move=move)
    code = None
    if pairs:
        target = await server.mailbox.status(destination)
        code = f"COPYUID {target.uidvalidity} {uid_set([p[0] for p in pairs])} {uid_set([p[1] for p in pairs])}"
    if not move:
        return Response("OK", "Copy completed.", code)
    # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs
    if code:
        server.write(f"* OK [{code}] Moved UIDs.\r\n".encode())
    server.write(b"".join(selected.expunge_now([p[0] for p in pairs])))
    return Response("OK", "Move completed.")


@command("COPY", ONLY_SELECTED)
async def copy(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 3501 6.4.7 with COPYUID (RFC 4315 3)."""
    return await _copy(server, args, uid=False, move=False)


@command("COPY", ONLY_SELECTED, uid=True)
async def uid_copy(server: Any, tag: str, args: Arguments) -> Response | None:
    return await _copy(server, args, uid=True, move=False)


@command("MOVE", ONLY_SELECTED)
async def move(server: Any, tag: str, args: Arguments) -> Response | None:
    """RFC 6851."""
    return await _copy(server, args, uid=False, move=True)


@command("MOVE", ONLY_SELECTED, uid=True)
async def uid_move(server: Any, tag: str, args: Arguments) -> Response | None:
    return await _copy(server, args, uid=True, move=True)


# ---------------------------------------------------------------------------
# EXPUNGE
# ---------------------------------------------------------------------------


async def _expunge(server: Any, uids: list[int] | None) -> None:
    selected = server.selected
    if selected.read_only:
        raise no("Mailbox is read-only.", "READ-ONLY")
    removed = await selected.folder.expunge(uids)
    server.write(b"".join(selected.expunge_now(removed)))


@command("EXPUNGE", ONLY_SELECTED)
async def expunge(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.4.3."""
    args.end()
    await _expunge(server, None)


@command("EXPUNGE", ONLY_SELECTED, uid=True)
async def uid_expunge(server: Any, tag: str, args: Arguments) -> None:
    """RFC 4315 2.1: only the named \\Deleted messages."""
    args.space()
    uids = _uids(server, args, uid=True)
    args.end()
    if uids:
        await _expunge(server, uids)
