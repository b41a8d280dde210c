"""Folder commands: SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE,
LIST (with LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN), LSUB, STATUS, APPEND,
NAMESPACE, CHECK, CLOSE, UNSELECT.

RFC 3501 6.3 and 6.4.1-6.4.2, RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS),
RFC 6154 (SPECIAL-USE), RFC 3348 (CHILDREN), RFC 2342 (NAMESPACE),
RFC 3691 (UNSELECT), RFC 4315 (APPENDUID), RFC 7162 (HIGHESTMODSEQ).
The hierarchy separator is ``/``; names travel in modified UTF-7.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from mailsuite import errors
from mailsuite.imap.args import Arguments, ParseError, mailbox_out, string_out
from mailsuite.imap.dispatch import LOGGED_IN, ONLY_SELECTED, SELECTED, command
from mailsuite.imap.responses import Response, bad, no
from mailsuite.imap.session import SelectedFolder
from mailsuite.interfaces import FolderInfo

SEPARATOR = "/"


# ---------------------------------------------------------------------------
# SELECT / EXAMINE / CLOSE / UNSELECT / CHECK
# ---------------------------------------------------------------------------


async def _select(server: Any, tag: str, args: Arguments, read_only: bool) -> Response:
    args.space()
    name = args.mailbox()
    if args.maybe_space():
        params = args.paren_atoms()
        for param in params:
            if param.upper() == "CONDSTORE":  # RFC 7162 3.1.8
                server.condstore = True
            else:
                raise bad(f"Unknown SELECT parameter {param}")
    args.end()
    # RFC 3501 6.3.1: a SELECT deselects first, even when it then fails
    server.close_selected()
    folder = await server.mailbox.open_folder(name, read_only=read_only)
    selected = SelectedFolder(folder, read_only=read_only)
    selected.unwatch = folder.watch(server.folder_changed)
    server.selected = selected
    server.state = SELECTED
    lines = selected.flags_lines()
    lines.append(b"* %d EXISTS\r\n" % selected.exists)
    lines.append(b"* %d RECENT\r\n" % selected.recent_announced)
    unseen = selected.first_unseen()
    if unseen is not None:
        lines.append(b"* OK [UNSEEN %d] First unseen.\r\n" % unseen)
    lines.append(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uidvalidity)
    lines.append(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uidnext)
    lines.append(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % folder.highest_modseq)
    server.write(b"".join(lines))
    verb = "EXAMINE" if read_only else "SELECT"
    return Response("OK", f"{verb} completed.", "READ-ONLY" if read_only else "READ-WRITE")


@command("SELECT", LOGGED_IN)
async def select(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.3.1."""
    return await _select(server, tag, args, read_only=False)


@command("EXAMINE", LOGGED_IN)
async def examine(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.3.2: like SELECT, but \\Recent and \\Seen never change."""
    return await _select(server, tag, args, read_only=True)


@command("CHECK", ONLY_SELECTED)
async def check(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.4.1: the store is always durable; CHECK just syncs the view."""
    args.end()
    server.dirty = True


@command("CLOSE", ONLY_SELECTED)
async def close(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.4.2: silently expunge \\Deleted messages (read-write only), then deselect."""
    args.end()
    selected = server.selected
    if not selected.read_only:
        try:
            await selected.folder.expunge(None)
        finally:
            server.close_selected()
    else:
        server.close_selected()


@command("UNSELECT", ONLY_SELECTED)
async def unselect(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3691: deselect without expunging."""
    args.end()
    server.close_selected()


# ---------------------------------------------------------------------------
# CREATE / DELETE / RENAME / SUBSCRIBE / UNSUBSCRIBE
# ---------------------------------------------------------------------------


def _strip_separator(name: str) -> str:
    """RFC 3501 6.3.3: a trailing separator only says the name will have children."""
    stripped = name.rstrip(SEPARATOR)
    if not stripped:
        raise no("Invalid mailbox name.", "CANNOT")
    if "*" in stripped or "%" in stripped:
        # LIST could never name it unambiguously (RFC 3501 5.1)
        raise no("Mailbox names can't contain wildcards.", "CANNOT")
    return stripped


@command("CREATE", LOGGED_IN)
async def create(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.3; creating INBOX is an error."""
    args.space()
    name = _strip_separator(args.mailbox())
    if args.maybe_space():
        raise bad("CREATE parameters are not supported")
    args.end()
    if name == "INBOX":
        raise no("Mailbox already exists", "ALREADYEXISTS")
    await server.mailbox.create_folder(name)


@command("DELETE", LOGGED_IN)
async def delete(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.4; INBOX cannot be deleted."""
    args.space()
    name = args.mailbox()
    args.end()
    if name == "INBOX":
        raise no("INBOX can't be deleted.", "CANNOT")
    if server.selected is not None and server.selected.folder.name == name:
        # its messages are about to vanish: leave it and say so (RFC 7162 3.2.11's CLOSED code)
        server.close_selected()
        server.write(b"* OK [CLOSED] Selected mailbox was deleted.\r\n")
    await server.mailbox.delete_folder(name)


@command("RENAME", LOGGED_IN)
async def rename(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.5: children follow; renaming INBOX moves its messages, INBOX stays."""
    args.space()
    old = args.mailbox()
    args.space()
    new = _strip_separator(args.mailbox())
    args.end()
    if new == "INBOX" or old == new:
        raise no("Mailbox already exists", "ALREADYEXISTS")
    await server.mailbox.rename_folder(old, new)


@command("SUBSCRIBE", LOGGED_IN)
async def subscribe(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.6."""
    args.space()
    name = args.mailbox()
    args.end()
    await server.mailbox.set_subscribed(name, True)


@command("UNSUBSCRIBE", LOGGED_IN)
async def unsubscribe(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.7."""
    args.space()
    name = args.mailbox()
    args.end()
    await server.mailbox.set_subscribed(name, False)


# ---------------------------------------------------------------------------
# LIST / LSUB
# ---------------------------------------------------------------------------


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 6.3.8: ``*`` matches anything, ``%`` anything but the separator.

    The reference is prefixed to the pattern; INBOX matches case-insensitively.
    """
    full = reference + pattern
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in (SEPARATOR, "*", "%")):
        full = "INBOX" + full[5:]
    out = []
    for c in full:
        if c == "*":
            out.append(".*")
        elif c == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


_STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE")


def _status_items(args: Arguments) -> list[str]:
    items = [i.upper() for i in args.paren_atoms()]
    if not items:
        raise ParseError("Empty STATUS list")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ParseError(f"Invalid STATUS item {item}")
    return items


def _status_line(name: str, status: Any, items: Iterable[str]) -> bytes:
    values = {
        "MESSAGES": status.messages,
        "RECENT": status.recent,
        "UIDNEXT": status.uidnext,
        "UIDVALIDITY": status.uidvalidity,
        "UNSEEN": status.unseen,
        "HIGHESTMODSEQ": status.highest_modseq,
        "SIZE": status.size,
    }
    body = " ".join(f"{item} {values[item]}" for item in items)
    return b"* STATUS " + mailbox_out(name) + b" (" + body.encode() + b")\r\n"


class _Tree:
    """The folder tree as LIST sees it: real folders plus implied parents."""

    def __init__(self, folders: list[FolderInfo]) -> None:
        self.folders = {f.name: f for f in folders}
        self.names: dict[str, FolderInfo | None] = dict.fromkeys(self.folders)
        for f in folders:
            self.names[f.name] = f
            parts = f.name.split(SEPARATOR)
            for i in range(1, len(parts)):
                parent = SEPARATOR.join(parts[:i])
                self.names.setdefault(parent, None)
        self.children: set[str] = set()
        for name in self.names:
            if SEPARATOR in name:
                self.children.add(name.rsplit(SEPARATOR, 1)[0])

    def attributes(self, name: str, *, subscribed: bool = False, extended: bool = False) -> list[str]:
        info = self.names.get(name)
        attrs: list[str] = []
        if info is None:
            attrs.append("\\NonExistent" if extended and name not in self.children else "\\Noselect")
            if extended and name in self.children and "\\Noselect" not in attrs:
                attrs.append("\\Noselect")
        elif not info.selectable:
            attrs.append("\\Noselect")
        if info is not None or name in self.children:
            attrs.append("\\HasChildren" if name in self.children else "\\HasNoChildren")
        if info is not None and info.special_use:
            attrs.append(info.special_use)
        if subscribed:
            attrs.append("\\Subscribed")
        # \NonExistent implies \Noselect (RFC 5258 3.4): keep one
        if "\\NonExistent" in attrs and "\\Noselect" in attrs:
            attrs.remove("\\Noselect")
        return attrs


def _list_line(verb: str, name: str, attrs: list[str], extra: bytes = b"") -> bytes:
    return f"* {verb} ({' '.join(attrs)}) \"{SEPARATOR}\" ".encode() + mailbox_out(name) + extra + b"\r\n"


async def _list(server: Any, args: Arguments, verb: str) -> None:
    selection: list[str] = []
    args.space()
    if verb == "LIST" and args.peek() == 0x28:
        selection = [s.upper() for s in args.paren_atoms()]
        for opt in selection:
            if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
                raise bad(f"Unknown LIST selection option {opt}")
        if "RECURSIVEMATCH" in selection and not ({"SUBSCRIBED"} & set(selection)):
            raise bad("RECURSIVEMATCH needs another selection option")
        args.space()
    # A reference or pattern that is not valid modified UTF-7 names no mailbox: it
    # matches nothing and the command still succeeds (RFC 3501 5.1.3 is a naming rule).
    reference = args.list_pattern() if args.peek() != 0x28 else ""
    args.space()
    given: list[str | None]
    if verb == "LIST" and args.peek() == 0x28:
        args.pos += 1
        given = []
        while not args.accept(b")"):
            if given:
                args.space()
            given.append(args.list_pattern())
    else:
        given = [args.list_pattern()]
    returns: list[str] = []
    status_items: list[str] = []
    if verb == "LIST" and args.maybe_space():
        args.expect(b"RETURN ")
        if args.peek() != 0x28:
            raise ParseError("Expected (")
        args.pos += 1
        while not args.accept(b")"):
            if returns:
                args.space()
            opt = args.atom().upper()
            if opt == "STATUS":
                args.space()
                status_items = _status_items(args)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                raise bad(f"Unknown LIST return option {opt}")
            returns.append(opt)
    args.end()
    patterns = [p for p in given if p is not None]
    if reference is None or not patterns:
        return

    if verb == "LIST" and patterns == [""]:
        # RFC 3501 6.3.8: the hierarchy delimiter and root
        root = reference.split(SEPARATOR, 1)[0] + SEPARATOR if SEPARATOR in reference else ""
        server.write(f'* LIST (\\Noselect) "{SEPARATOR}" '.encode() + string_out(root) + b"\r\n")
        return

    folders = await server.mailbox.list_folders()
    # subscriptions to names that are no folder only count as subscriptions (LSUB, \NonExistent)
    tree = _Tree([f for f in folders if getattr(f, "exists", True)])
    subscribed = {f.name for f in folders if f.subscribed}
    regexes = [pattern_regex(reference, p) for p in patterns]

    def matches(name: str) -> bool:
        return any(r.match(name) for r in regexes)

    lines: list[bytes] = []
    if verb == "LSUB" or "SUBSCRIBED" in selection:
        # subscriptions may name folders that don't exist
        candidates = sorted(subscribed | ({n for n in tree.names} if "RECURSIVEMATCH" in selection else set()), key=_sort_key)
        chosen: list[tuple[str, list[str], bytes]] = []
        for name in candidates:
            if not matches(name):
                continue
            extra = b""
            if name not in subscribed:
                # RFC 5258 3.3 rule 2B: a parent that fails the selection is listed only for
                # a matching descendant the patterns do not list themselves (3.5: no
                # redundant CHILDINFO).
                child_subscribed = any(s.startswith(name + SEPARATOR) and not matches(s) for s in subscribed)
                if not child_subscribed:
                    continue
                extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
                attrs = tree.attributes(name, extended=True)
                if verb == "LIST":
                    chosen.append((name, attrs, extra))
                continue
            if verb == "LSUB":
                info = tree.names.get(name)
                attrs = [] if info is not None and info.selectable else ["\\Noselect"]
            else:
                attrs = tree.attributes(name, subscribed=True, extended=True)
            chosen.append((name, attrs, extra))
        if verb == "LSUB":
            seen = {c[0] for c in chosen}
            for name in sorted(subscribed, key=_sort_key):
                parts = name.split(SEPARATOR)
                for i in range(1, len(parts)):
                    parent = SEPARATOR.join(parts[:i])
                    if parent not in seen and parent not in subscribed and matches(parent) and any("%" in p for p in patterns):
                        seen.add(parent)
                        chosen.append((parent, ["\\Noselect"], b""))
        for name, attrs, extra in sorted(chosen, key=lambda c: _sort_key(c[0])):
            if "SPECIAL-USE" in selection and not _special(tree, name):
                continue
            lines.append(_list_line(verb, name, attrs, extra))
    else:
        for name in sorted(tree.names, key=_sort_key):
            if not matches(name):
                continue
            if "SPECIAL-USE" in selection and not _special(tree, name):
                continue
            attrs = tree.attributes(name, subscribed="SUBSCRIBED" in returns and name in subscribed)
            lines.append(_list_line(verb, name, attrs))
            if status_items:
                info = tree.names.get(name)
                if info is not None and info.selectable:
                    try:
                        status = await server.mailbox.status(name)
                    except errors.NoSuchFolder:
                        continue
                    lines.append(_status_line(name, status, status_items))
    server.write(b"".join(lines))


def _special(tree: _Tree, name: str) -> bool:
    info = tree.names.get(name)
    return info is not None and bool(info.special_use)


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == "INBOX" or name.startswith("INBOX/") else 1, name)


@command("LIST", LOGGED_IN)
async def list_(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.8 with RFC 5258 selection/return options and RFC 5819 STATUS."""
    await _list(server, args, "LIST")


@command("LSUB", LOGGED_IN)
async def lsub(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.9."""
    await _list(server, args, "LSUB")


@command("NAMESPACE", LOGGED_IN)
async def namespace(server: Any, tag: str, args: Arguments) -> None:
    """RFC 2342: one personal namespace, no others."""
    args.end()
    server.write(f'* NAMESPACE (("" "{SEPARATOR}")) NIL NIL\r\n'.encode())


@command("STATUS", LOGGED_IN)
async def status(server: Any, tag: str, args: Arguments) -> None:
    """RFC 3501 6.3.10 (+ HIGHESTMODSEQ, RFC 7162 3.1.6)."""
    args.space()
    name = args.mailbox()
    args.space()
    items = _status_items(args)
    args.end()
    if "HIGHESTMODSEQ" in items:
        server.condstore = True  # RFC 7162 3.1: a CONDSTORE-enabling command
    result = await server.mailbox.status(name)
    server.write(_status_line(name, result, items))


# ---------------------------------------------------------------------------
# APPEND
# ---------------------------------------------------------------------------


@command("APPEND", LOGGED_IN)
async def append(server: Any, tag: str, args: Arguments) -> Response:
    """RFC 3501 6.3.11 with APPENDUID (RFC 4315 3)."""
    args.space()
    name = args.mailbox()
    args.space()
    flags: list[str] = []
    date = None
    if args.peek() == 0x28:
        flags = args.flag_list()
        args.space()
    if args.peek() == 0x22:
        date = args.date_time()
        args.space()
    data = args.literal_view()
    if not args.at_end():
        if args.peek() == 0x20:
            raise bad("MULTIAPPEND is not supported")
        args.end()
    if "\\Recent" in flags:
        raise bad("\\Recent can't be set")
    store = server.s.store
    if store is None:
        raise no("The message store is not available.", "UNAVAILABLE")
    failed, server.streamed_literal_error = server.streamed_literal_error, None
    if failed is not None:
        raise failed  # storing the streamed message failed while it arrived (disk full...)
    # a large message was streamed into the store's incoming message while it arrived
    message, server.streamed_literal = server.streamed_literal, None
    if message is None:
        message = store.new_incoming()
        message.write(data)
    try:
        message.finish()
        if not message.size:
            raise no("Can't save a zero byte message.")
        selected = server.selected
        if selected is not None and selected.folder.name == name and not selected.read_only:
            uid = await selected.folder.append(message, flags, date)
            uidvalidity = selected.folder.uidvalidity
            server.dirty = True
        else:
            # a read-only handle: opening read-write would claim \Recent from the sessions that own it
            folder = await server.mailbox.open_folder(name, read_only=True)
            try:
                uid = await folder.append(message, flags, date)
                uidvalidity = folder.uidvalidity
            finally:
                folder.close()
            if selected is not None and selected.folder.name == name:
                server.dirty = True
    finally:
        message.discard()
    return Response("OK", "Append completed.", f"APPENDUID {uidvalidity} {uid}")

