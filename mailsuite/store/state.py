"""Per-folder IMAP state (UIDVALIDITY, UIDNEXT, UID/MODSEQ per message, keywords), shared by every process.

Where each part lives: :mod:`.state_records` (file names, the entry and its
record line, flag letters, checksums), :mod:`.state_log` (reading and writing
the snapshot and the log, recovery), :mod:`.listing` (new/ and cur/: trusted
mtimes, recordable names, line-end rewriting); here :class:`FolderState`
(locking, flags, sync with the directory, \\Recent claims) and UIDVALIDITY.

Implementation notes:
- Files in each folder directory (INBOX: the user's Maildir root):
  ``mailsuite-state`` (a full snapshot, replaced atomically: temporary file,
  fsync, rename, directory fsync), ``mailsuite-state.log`` (records appended
  since that snapshot, each line ``<crc32 hex> <record>``, fsynced) and
  ``mailsuite-state.lock`` (the advisory flock every reader and writer holds).
- Snapshot format: a header ``mailsuite-state 1 <generation> <uidvalidity>
  <uidnext> <highestmodseq>``, a keyword line ``K <kw>...`` (keyword i is
  the Maildir flag letter ``chr(ord('a') + i)``), one line per message
  ``<uid> <modseq> <size> <idate> <n|c> <info suffix or -> <base name>``, and
  an end marker ``E <count>``: a truncated snapshot is detected, never trusted.
- An optional ``L`` line/record saves the identities (inode, mtime) of new/
  and cur/ at their last listing when they had settled (mtime older than two
  seconds; on a local file system with nanosecond mtimes, older than the
  coarse clock that stamps them, read before the stat); any later change to
  a directory changes its mtime, so while the identities still match, a
  process (even a fresh one) may skip listing it.  A session that claimed
  \\Recent (renames new/ -> cur/) lists both once more right away, so the
  next SELECT of a big folder lists nothing.
- The log starts with ``mailsuite-log <generation>``; a log of another
  generation than the snapshot is stale (a compaction crashed between its two
  renames) and ignored.  Records set absolute values (``+`` add, ``=``
  change, ``-`` expunge, ``H`` counters, ``K`` keywords), so replaying is
  idempotent.  A torn or corrupt tail (bad CRC, no newline) ends the log; the
  next writer truncates it before appending.  So a crash at any point leaves
  the previous state usable.
- \\Recent (RFC 3501 2.3.2): a message is recent until the first read-write
  session claims it.  Unclaimed are the messages still in new/ and every UID
  at or above ``first_recent`` (so APPENDed and COPYed messages, filed in
  cur/ with their flags, are recent too).  A claim sets ``first_recent`` to
  UIDNEXT with the record ``= 0 <first_recent> c -``: an ``=`` record for UID
  0, which no message has, so a reader of the older format skips it.  A
  snapshot's log starts with that record; a state without it (written before
  it existed) starts with ``first_recent`` = UIDNEXT.
- A read-write session's sync moves the files it finds in new/ to cur/ as it
  gives them UIDs (``sync(claim=True)``); they stay \\Recent because their
  UIDs are at or above ``first_recent``, which the claim then advances.  A
  sync or claim touching more than ``BULK_RECORDS`` messages writes one
  snapshot instead of a log record per message (a crash before it leaves the
  previous state: the moved files are found in cur/ and get UIDs again, still
  unclaimed).  Bulk work pauses Python's cyclic collector (``paused_gc``).
- UIDs are only ever assigned with the lock held, after re-reading the files,
  so two processes can never give one UID to two messages or reuse one: UIDNEXT
  only grows, and it is persisted (fsync) before any session learns the UIDs.
- Flags are the Maildir info suffix (``:2,<letters>``), the truth on disk; the
  state remembers the suffix it last saw so a rename by another program
  (mutt) is noticed and gets a new MODSEQ.
- A file another program delivered (no ``,S=`` size in its name) is rewritten
  with CRLF line ends when it gets its UID (atomically, same name), so sizes
  and bytes served are those of a CRLF message like everything SMTP stores.
- Directory listing scans ``new/`` before ``cur/`` (a concurrent new->cur
  rename is then seen at least once), and a message missing from a scan is
  only declared expunged if a second scan misses it too (readdir may skip an
  entry renamed during the scan).
"""


from __future__ import annotations

import fcntl
import operator
import os
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from mailsuite.compat import paused_gc
from mailsuite.errors import InvalidName, NoSuchFolder
from mailsuite.interfaces import SYSTEM_FLAGS, MessageInfo
from mailsuite.store.listing import LOCAL_FS, SETTLE_NS, coarse_ns, fs_type, normalize_line_ends, recordable_name
from mailsuite.store.state_log import StateFiles
from mailsuite.store.state_records import (BULK_RECORDS, DATES, FLAG_LETTER, LOCK_FILE, MAX_KEYWORDS, SIZE_FIELD, Entry, TooManyKeywords,
                                          date_of, letters_of, message_info, split_name)


class FolderState(StateFiles):
    """The in-memory mirror of one folder's state files.

    Shared by every session of this process on the folder; all reading and
    changing happens inside :meth:`locked` in a worker thread.
    """

    log = Logger()

    def __init__(self, path: str, allocate_uidvalidity: Callable[[], int]) -> None:
        self.path = path
        self._allocate_uidvalidity = allocate_uidvalidity
        self._thread_lock = threading.Lock()
        self.generation = 0
        self.uidvalidity = 0
        self.uidnext = 1
        self.highest_modseq = 1
        #: UIDs from here on are \\Recent, not yet claimed by a read-write session (see module notes).
        self.first_recent = 1
        self._needs_marker = False  # the files hold no first_recent marker: the next commit compacts
        self.keywords: list[str] = []
        self.entries: dict[int, Entry] = {}
        self.by_base: dict[str, int] = {}
        #: file name -> UID for new/ and cur/, built on demand and kept up to date (fast rescans).
        self._names: dict[str, dict[str, int]] | None = None
        #: (new/, cur/) identities before the last full listing, when they had settled (see _list).
        self._listed: dict[str, tuple[int, int] | None] = {}
        self._listed_saved: dict[str, tuple[int, int] | None] = {}  # what the files say (L record)
        #: True when mtimes here come from this machine's coarse clock in ns (see _settled).
        self._fine_mtimes: bool | None = None
        self._clock_before_stat: int | None = None  # coarse clock read just before the last _identity()
        self._snapshot: tuple[int, dict[int, MessageInfo]] | None = None
        #: UIDs changed since the cached snapshot was built (None: rebuild it whole).
        self._dirty: set[int] | None = None
        self._base_id: tuple[int, int, int] | None = None
        self._log_ino: int | None = None
        self._log_offset = 0
        self._log_valid = False
        self._flag_cache: dict[str, frozenset[str]] = {}
        #: Changes made in memory that no record describes (a bulk sync or claim): the next commit
        #: writes a whole snapshot.  Cleared by a snapshot write or a reload from the files.
        self._compact_next = False
        self.moved_new = 0  # files the last sync(claim=True) moved from new/ to cur/
        self.version = 0  # bumped on every in-memory change (cheap change detection)
        self.status_cache: tuple[int, Any] | None = None  # (version, FolderStatus) kept by the store

    # -- locking and loading ------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator["FolderState"]:
        """Hold the folder lock (threads of this process and other processes) with fresh state."""
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise NoSuchFolder()
        with self._thread_lock:
            try:
                fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                raise NoSuchFolder() from None  # deleted or renamed meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._load()
                yield self
            finally:
                os.close(fd)

    # -- flags ----------------------------------------------------------------
    def flags_of(self, suffix: str) -> frozenset[str]:
        """IMAP flags (system flags and keywords) of an info suffix."""
        cached = self._flag_cache.get(suffix)
        if cached is None:
            flags = set()
            for letter in letters_of(suffix):
                if letter in SYSTEM_FLAGS:
                    flags.add(SYSTEM_FLAGS[letter])
                elif "a" <= letter <= "z":
                    index = ord(letter) - ord("a")
                    if index < len(self.keywords):
                        flags.add(self.keywords[index])
            cached = self._flag_cache[suffix] = frozenset(flags)
        return cached

    def suffix_for(self, flags: frozenset[str] | set[str], records: list[str]) -> str:
        """The info suffix for IMAP flags, allocating keyword letters (logged in ``records``)."""
        letters = []
        added = False
        for flag in flags:
            lower = flag.lower()
            if lower in FLAG_LETTER:
                letters.append(FLAG_LETTER[lower])
                continue
            if flag.startswith("\\"):
                continue  # \Recent and unknown system flags are not stored
            if not flag or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in flag):
                raise InvalidName(f"not a valid keyword: {flag!r}")
            for i, known in enumerate(self.keywords):
                if known.lower() == lower:
                    letters.append(chr(ord("a") + i))
                    break
            else:
                if len(self.keywords) >= MAX_KEYWORDS:
                    raise TooManyKeywords()
                self.keywords.append(flag)
                letters.append(chr(ord("a") + len(self.keywords) - 1))
                added = True
        if added:
            self._flag_cache = {}
            records.append(" ".join(["K", *self.keywords]))
        return ":2," + "".join(sorted(set(letters)))

    def info(self, entry: Entry) -> MessageInfo:
        """The (cached) MessageInfo of an entry."""
        info = entry.info
        if info is None:
            info = entry.info = message_info(uid=entry.uid, flags=self.flags_of(entry.suffix), size=entry.size,
                                              internal_date=date_of(entry.idate), modseq=entry.modseq, key=entry.base)
        return info

    def snapshot(self) -> dict[int, MessageInfo]:
        """UID -> MessageInfo for every message, shared by sessions while nothing changes (copy before mutating)."""
        cached = self._snapshot
        if cached is not None and cached[0] == self.version:
            return cached[1]
        info = self.info
        if cached is None or self._dirty is None or len(self._dirty) > len(self.entries) // 4:
            with paused_gc(len(self.entries) > BULK_RECORDS):
                result = self._all_infos()
        else:  # copy the last snapshot (C speed) and patch what changed; new UIDs go last, in order
            result = dict(cached[1])
            entries = self.entries
            for uid in sorted(self._dirty):
                entry = entries.get(uid)
                if entry is None:
                    result.pop(uid, None)
                else:
                    result[uid] = info(entry)
        self._dirty = set()
        self._snapshot = (self.version, result)
        return result

    def _all_infos(self) -> dict[int, MessageInfo]:
        """UID -> MessageInfo of every entry, building the missing ones (``info``, inlined: a big
        folder's first SELECT builds 100,000 of them)."""
        result: dict[int, MessageInfo] = {}
        flag_cache = self._flag_cache
        flags_of = self.flags_of
        dates = DATES
        build = message_info
        for uid, entry in self.entries.items():
            info = entry.info
            if info is None:
                suffix = entry.suffix
                flags = flag_cache.get(suffix)
                if flags is None:
                    flags = flags_of(suffix)
                idate = dates.get(entry.idate)
                if idate is None:
                    idate = date_of(entry.idate)
                info = entry.info = build(uid=uid, flags=flags, size=entry.size, internal_date=idate, modseq=entry.modseq, key=entry.base)
            result[uid] = info
        return result

    # -- indexes -----------------------------------------------------------------
    def _known(self) -> dict[str, dict[str, int]]:
        """file name -> UID, per subdirectory (built once, then maintained by every change)."""
        if self._names is None:
            names: dict[str, dict[str, int]] = {"new": {}, "cur": {}}
            for entry in self.entries.values():
                names[entry.where][entry.base + entry.suffix] = entry.uid
            self._names = names
        return self._names

    def _put(self, entry: Entry) -> None:
        if self._dirty is not None:
            self._dirty.add(entry.uid)
        self.entries[entry.uid] = entry
        self.by_base[entry.base] = entry.uid
        if self._names is not None:
            self._names[entry.where][entry.base + entry.suffix] = entry.uid

    def _drop(self, entry: Entry) -> None:
        if self._dirty is not None:
            self._dirty.add(entry.uid)
        self.entries.pop(entry.uid, None)
        if self.by_base.get(entry.base) == entry.uid:
            del self.by_base[entry.base]
        if self._names is not None:
            self._names[entry.where].pop(entry.base + entry.suffix, None)
        entry.info = None

    def _move(self, entry: Entry, where: str, suffix: str) -> None:
        if self._dirty is not None:
            self._dirty.add(entry.uid)
        if self._names is not None:
            self._names[entry.where].pop(entry.base + entry.suffix, None)
            self._names[where][entry.base + suffix] = entry.uid
        entry.where, entry.suffix = where, suffix
        entry.info = None

    # -- synchronising with the directory ---------------------------------------
    def _identity(self) -> dict[str, tuple[int, int]]:
        if self._fine_mtimes is None:
            self._fine_mtimes = coarse_ns() is not None and fs_type(self.path) in LOCAL_FS
        self._clock_before_stat = coarse_ns() if self._fine_mtimes else None
        ids = {}
        for where in ("new", "cur"):
            try:
                st = os.stat(os.path.join(self.path, where))
            except FileNotFoundError:
                raise NoSuchFolder() from None
            ids[where] = (st.st_ino, st.st_mtime_ns)
        return ids

    def _unchanged(self, ids: dict[str, tuple[int, int]]) -> set[str]:
        """The subdirectories that cannot have changed since their last listing.

        Any entry change sets a directory's mtime to the current time.  A
        directory's identity is taken *before* it is listed, and remembered
        only when its mtime was already SETTLE seconds old then; so a later
        change always gives a different mtime, even with coarse timestamps
        (Dovecot's rule).  On a local file system with nanosecond mtimes
        "settled" means the coarse clock that stamps mtimes had already
        passed the mtime before the directory was stat'ed (so any later change
        gets a later mtime): a few milliseconds instead of two seconds.
        """
        return {where for where, identity in ids.items() if self._listed.get(where) == identity}

    def _settled(self, mtime_ns: int, now_ns: int) -> bool:
        """May a listing made after this mtime was seen be trusted until the mtime changes? (see _unchanged)"""
        before = self._clock_before_stat
        if before is not None and mtime_ns % 1_000_000_000:
            return before > mtime_ns
        return now_ns - mtime_ns > SETTLE_NS

    def wait_until_settled(self, where: str, limit: float = 0.05) -> None:
        """Sleep (at most ``limit`` s) until a listing of ``where`` made now could be remembered as settled.

        Only useful on file systems with fine mtimes (milliseconds); elsewhere it returns at once.
        """
        if not self._fine_mtimes:
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                mtime = os.stat(os.path.join(self.path, where)).st_mtime_ns
            except FileNotFoundError:
                return
            now = coarse_ns()
            if now is None or now > mtime or not mtime % 1_000_000_000:
                return
            time.sleep(0.001)

    def unchanged_since_listing(self) -> bool:
        """True when neither new/ nor cur/ needs listing again (lock held, like every identity check)."""
        return len(self._unchanged(self._identity())) == 2

    def _list(self, ids: dict[str, tuple[int, int]] | None = None, skip: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
        """File names in new/ and cur/ (new/ first: a concurrent new->cur rename is seen at least once).

        With ``ids`` (identities taken just before), settled directories are
        remembered; directories in ``skip`` are not listed: their names are
        the index's.
        """
        now_ns = time.time_ns()
        out: dict[str, Any] = {}
        for where in ("new", "cur"):
            if where in skip:
                out[where] = self._known()[where]
                continue
            try:
                out[where] = set(os.listdir(os.path.join(self.path, where)))
            except FileNotFoundError:
                raise NoSuchFolder() from None
            if ids is not None:
                self._listed[where] = ids[where] if self._settled(ids[where][1], now_ns) else None
        return out

    @staticmethod
    def _locate(unknown: dict[str, list[str]]) -> dict[str, tuple[str, str]]:
        """base -> (where, suffix) for file names (per subdirectory) the index does not know (cur/ wins over new/)."""
        located: dict[str, tuple[str, str]] = {}
        for where in ("new", "cur"):
            names = unknown.get(where)
            if not names:
                continue
            joined = "/".join(names)  # no file name holds "/": whole-list checks at C speed
            if "\n" in joined or not joined.isascii():
                names = [n for n in names if "\n" not in n and recordable_name(n)]  # others cannot be recorded; left alone
            if ":2," not in joined:  # no info suffix anywhere (a delivery's new/): each name is its base
                located.update(dict.fromkeys([n for n in names if n[0] != "."], (where, "")))
                continue
            for name in names:
                if name[0] == ".":
                    continue
                base, suffix = split_name(name)
                if where == "cur" or base not in located:
                    located[base] = (where, suffix)
        return located

    def sync(self, records: list[str], *, extra: list[str] | None = None, claim: bool = False) -> list[int]:
        """Reconcile the state with the directory: new files get UIDs, renames new MODSEQs, gone files leave.

        Appends the records to persist to ``records`` (the caller commits).
        ``extra`` names base names that must get UIDs last and in this order
        (APPEND, COPY); their UIDs are returned in that order.  Known file
        names are compared as sets, so an unchanged folder costs two
        listdir() calls and no per-message Python work.  With ``claim`` (a
        read-write session about to call :meth:`claim_recent`), files found
        in new/ are moved to cur/ on the way (one pass instead of two; they
        stay \\Recent: their UIDs are at or above ``first_recent``);
        ``moved_new`` says how many.
        """
        self.moved_new = 0
        ids = self._identity()
        skip = self._unchanged(ids)
        if not extra and len(skip) == 2:
            return []
        known = self._known()
        listed = self._list(ids, skip)
        unknown: dict[str, list[str]] = {}
        missing: list[int] = []
        for where in ("new", "cur"):
            if where not in skip and known[where].keys() != listed[where]:  # equal: one C-speed pass
                index = known[where]
                unknown[where] = list(listed[where] - index.keys())
                missing += [index[n] for n in index.keys() - listed[where]]
        modseq = self.highest_modseq + 1
        bumped = False
        located = self._locate(unknown) if unknown else {}
        for base in located.keys() & self.by_base.keys():  # known messages under another name
            uid = self.by_base[base]
            entry = self.entries[uid]
            seen = located.pop(base)
            if entry.base + entry.suffix in listed[entry.where]:
                continue  # a second name for a known message (a rename racing the listing): keep the known one
            if (entry.where, entry.suffix) != seen:
                bumped |= self._update(entry, seen, modseq, records)
        gone = [self.entries[u] for u in missing if u in self.entries]
        gone = [e for e in gone if e.base + e.suffix not in listed[e.where]]
        if gone:
            # readdir may skip an entry renamed during the listing: look again before expunging
            again = self._list()
            known = self._known()
            relisted = self._locate({where: list(again[where] - known[where].keys()) for where in ("new", "cur")})
            for entry in gone:
                if entry.base + entry.suffix in again[entry.where]:
                    continue
                found_again = relisted.get(entry.base)
                if found_again is not None:
                    bumped |= self._update(entry, found_again, modseq, records)
                    continue
                self._drop(entry)
                records.append(f"- {entry.uid}")
                bumped = True
        extra = extra or []
        with paused_gc(len(located) > BULK_RECORDS):
            bumped |= self._add_found(located, extra, modseq, records, claim)
        if bumped:
            self.highest_modseq = modseq
        if records or bumped:
            records.append(self.header_record())
            self.version += 1
        if self._listed != self._listed_saved and (records or any(self._listed.values())):
            records.append(self.listed_record())  # persisted with this commit (or alone, once settled)
            self._listed_saved = dict(self._listed)
        return [self.by_base[b] for b in extra if b in self.by_base]

    def _add_found(self, located: dict[str, tuple[str, str]], extra: list[str], modseq: int, records: list[str], claim: bool) -> bool:
        """Give UIDs to the located files no entry knows (sync's second half); True if any got one.

        With ``claim``, a file in new/ is renamed into cur/ before it gets its UID; one that
        vanished meanwhile gets none now (the next sync finds it where the other program put it).
        A crash after the rename and before the commit leaves it in cur/ without a UID: the next
        sync gives it one at or above ``first_recent``, still unclaimed.
        """
        order = {base: i for i, base in enumerate(extra)}
        prefix = {"new": os.path.join(self.path, "new", ""), "cur": os.path.join(self.path, "cur", "")}
        # (sort key, base, size, mtime): no stat results kept (100,000 more objects for the collector)
        arrived: list[tuple[int, str, int, int]] = []
        placed: list[tuple[int, str, int, int]] = []
        do_stat, is_regular = os.stat, stat.S_ISREG
        for base, (where, suffix) in located.items():
            try:
                st = do_stat(prefix[where] + base + suffix)
            except FileNotFoundError:
                continue  # moved or deleted meanwhile; the next sync sees it
            if is_regular(st.st_mode):
                i = order.get(base)
                if i is None:
                    arrived.append((st.st_mtime_ns, base, st.st_size, int(st.st_mtime)))
                else:
                    placed.append((i, base, st.st_size, int(st.st_mtime)))
        # UIDs in arrival order: by mtime, then name; APPEND/COPY results last and in the caller's order.
        # Sorts on plain keys beat one sort of tuples; names are sorted only when mtimes tie
        # (coarse timestamps): each sort of 100,000 holds the interpreter lock for tens of ms.
        if len(set(map(_first, arrived))) != len(arrived):
            arrived.sort(key=_second)
        arrived.sort(key=_first)
        placed.sort(key=_first)
        found = arrived + placed
        bulk = len(found) > BULK_RECORDS
        size_field = SIZE_FIELD.search
        uid = self.uidnext
        rename, new_prefix, cur_prefix = os.rename, prefix["new"], prefix["cur"]
        entries, by_base, names, dirty = self.entries, self.by_base, self._known(), self._dirty
        for _, base, size, mtime in found:
            where, suffix = located[base]
            m = size_field(base)
            if m is None:  # written by another program: make its line ends CRLF like ours
                try:
                    rewritten = normalize_line_ends(prefix[where] + base + suffix, os.path.join(self.path, "tmp"))
                except FileNotFoundError:
                    continue
                if rewritten is not None:
                    size, mtime = rewritten.st_size, int(rewritten.st_mtime)
            else:
                size = int(m.group(1))
            if claim and where == "new":
                try:
                    rename(new_prefix + base + suffix, cur_prefix + base + (suffix or ":2,"))
                except FileNotFoundError:
                    continue
                where, suffix = "cur", suffix or ":2,"
                self.moved_new += 1
            entry = Entry(uid, modseq, size, mtime, where, suffix, base)
            entries[uid] = entry
            by_base[base] = uid
            names[where][base + suffix] = uid  # _put, inlined
            if dirty is not None:
                dirty.add(uid)
            uid += 1
            if not bulk:
                records.append("+ " + entry.line())
        if uid == self.uidnext:
            return False
        self.uidnext = uid
        if bulk:
            self._compact_next = True  # no "+" records: the commit writes a snapshot
        return True

    def _update(self, entry: Entry, seen: tuple[str, str], modseq: int, records: list[str]) -> bool:
        flags_changed = letters_of(seen[1]) != letters_of(entry.suffix)
        self._move(entry, *seen)
        if flags_changed:
            entry.modseq = modseq
        records.append(f"= {entry.uid} {entry.modseq} {entry.where[0]} {entry.suffix or '-'}")
        return flags_changed

    def in_new(self) -> list[int]:
        """UIDs of the messages whose files are in new/."""
        return list(self._known()["new"].values())

    def unclaimed_recent(self) -> set[int]:
        """UIDs no read-write session has claimed yet: in new/, or at or above ``first_recent``."""
        entries = self.entries
        pending = set(self._known()["new"].values())
        if self.uidnext - self.first_recent < len(entries):
            pending.update(u for u in range(self.first_recent, self.uidnext) if u in entries)
        else:
            pending.update(u for u in entries if u >= self.first_recent)
        return pending

    def claim_recent(self, records: list[str]) -> list[int]:
        """Claim every unclaimed message (\\Recent for the caller's session only); move new/ ones to cur/.

        RFC 3501 2.3.2: the first session to see a new message gets it as
        \\Recent.  Messages still in new/ are moved to cur/ (the Maildir way
        of saying a reader has seen them); ``first_recent`` moves to UIDNEXT.
        """
        claimed = self.unclaimed_recent()
        moving = list(self._known()["new"].items())
        bulk = len(moving) > BULK_RECORDS
        with paused_gc(bulk):
            moved = self._claim_files(moving, records, bulk=bulk)
        if bulk and moved:
            self._compact_next = True  # no "=" records: the commit writes a snapshot
            records.append(self.header_record())
        if self.first_recent != self.uidnext:
            self.first_recent = self.uidnext
            records.append(self.recent_record())
        if claimed:
            self.version += 1
        return sorted(claimed)

    def _claim_files(self, moving: list[tuple[str, int]], records: list[str], *, bulk: bool) -> bool:
        """Rename new/ files (name, UID) into cur/; one record each unless ``bulk``; True if any moved."""
        source, target = os.path.join(self.path, "new", ""), os.path.join(self.path, "cur", "")
        rename, entries = os.rename, self.entries
        moved = False
        for name, uid in moving:
            entry = entries[uid]
            suffix = entry.suffix or ":2,"
            try:
                rename(source + name, target + entry.base + suffix)
            except FileNotFoundError:
                continue  # another program moved it (still this session's to claim); the next sync finds it
            self._move(entry, "cur", suffix)
            moved = True
            if not bulk:
                records.append(f"= {entry.uid} {entry.modseq} c {suffix}")
        return moved

    def set_suffix(self, entry: Entry, suffix: str, modseq: int, records: list[str]) -> bool:
        """Rename a message file to carry new flags (moving it to cur/); False if it vanished."""
        old = os.path.join(self.path, entry.filename)
        new = os.path.join(self.path, "cur", entry.base + suffix)
        try:
            os.rename(old, new)
        except FileNotFoundError:
            return False
        self._move(entry, "cur", suffix)
        entry.modseq = modseq
        records.append(f"= {entry.uid} {modseq} c {suffix}")
        return True

    def remove(self, entry: Entry, records: list[str]) -> None:
        """Forget an entry whose file was unlinked."""
        self._drop(entry)
        records.append(f"- {entry.uid}")


_first, _second = operator.itemgetter(0), operator.itemgetter(1)

def allocate_uidvalidity(user_root: str) -> int:
    """A UIDVALIDITY never handed out before for this user: max(now, last + 1), kept in a counter file."""
    path = os.path.join(user_root, "mailsuite-uidvalidity")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0)
        try:
            last = int(raw.split(b"\n")[0] or b"0")
        except ValueError:
            last = 0
        value = max(int(time.time()), last + 1) & 0xFFFFFFFF or 1
        data = f"{value}\n".encode()
        os.pwrite(fd, data.ljust(16, b" "), 0)
        os.fsync(fd)
        return value
    finally:
        os.close(fd)
