"""Per-folder IMAP state (UIDVALIDITY, UIDNEXT, UID/MODSEQ per message, keywords), shared by every process.

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

import datetime
import fcntl
import operator
import os
import re
import stat
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from mailsuite.compat import frozen_instance, paused_gc
from mailsuite.errors import InvalidName, MailError, NoSuchFolder
from mailsuite.interfaces import SYSTEM_FLAGS, MessageInfo
from mailsuite.store.durable import fsync_dir, write_atomic

STATE_FILE = "mailsuite-state"
LOG_FILE = "mailsuite-state.log"
LOCK_FILE = "mailsuite-state.lock"
#: Compact the log into a new snapshot once it is this big (and bigger than half the snapshot).
LOG_COMPACT_BYTES = 256 * 1024
MAX_KEYWORDS = 26
#: A sync or claim touching more messages than this writes a new snapshot instead of one log
#: record per message (the log would be compacted right away anyway; formatting and CRC-ing
#: 100,000 records first was a large part of a big folder's first SELECT).
BULK_RECORDS = 1000
#: A directory whose mtime is older than this may be trusted not to have changed unseen (ns);
#: the rule for file systems with whole-second (or unknown) timestamps, as Dovecot's.
SETTLE_NS = 2_000_000_000
#: Linux's CLOCK_REALTIME_COARSE (Python names no constant): the clock local file systems stamp
#: mtimes with (or finer, never coarser: multigrain timestamps).
_COARSE_CLOCK = getattr(time, "CLOCK_REALTIME_COARSE", 5 if sys.platform.startswith("linux") else None)
#: Local file systems with nanosecond timestamps from this machine's clock (not NFS/FUSE/SMB,
#: whose mtimes come from another clock).
_LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs"})

_FLAG_LETTER = {flag.lower(): letter for letter, flag in SYSTEM_FLAGS.items()}
_UTC = datetime.timezone.utc


class TooManyKeywords(MailError):
    """The folder already uses every keyword letter Maildir offers (a-z)."""

    code, enhanced, default_text = 550, "5.2.0", "Too many keywords in this folder"


class Entry:
    """One message as the state knows it (mutable; only changed with the lock held)."""

    __slots__ = ("uid", "modseq", "size", "idate", "where", "suffix", "base", "info")

    def __init__(self, uid: int, modseq: int, size: int, idate: int, where: str, suffix: str, base: str) -> None:
        self.uid = uid
        self.modseq = modseq
        self.size = size
        self.idate = idate
        self.where = where  # "new" or "cur"
        self.suffix = suffix  # "" or ":2,<letters>"
        self.base = base
        self.info: MessageInfo | None = None

    @property
    def filename(self) -> str:
        """Path relative to the folder directory."""
        return f"{self.where}/{self.base}{self.suffix}"

    def line(self) -> str:
        return f"{self.uid} {self.modseq} {self.size} {self.idate} {self.where[0]} {self.suffix or '-'} {self.base}"


def split_name(name: str) -> tuple[str, str]:
    """(base, info suffix) of a Maildir file name; the suffix is ``:2,<letters>`` or ''."""
    i = name.rfind(":2,")
    if i >= 0 and (i + 3 == len(name) or name[i + 3 :].isalpha()):
        return name[:i], name[i:]
    return name, ""


_SIZE_FIELD = re.compile(r",S=(\d+)")


def size_from_base(base: str) -> int | None:
    """The ``,S=<size>`` Maildir++ size field of a base name, if present."""
    m = _SIZE_FIELD.search(base)
    return int(m.group(1)) if m else None


#: MessageInfo(...) without the frozen dataclass __init__ (one object.__setattr__ per field,
#: ~2.5x slower): opening a 100,000-message folder builds one per message (see mailsuite.compat).
_message_info = frozen_instance(MessageInfo)


_dates: dict[int, datetime.datetime] = {}


def _date(idate: int) -> datetime.datetime:
    """Timezone-aware internal date for a Unix time (small cache: deliveries share seconds)."""
    d = _dates.get(idate)
    if d is None:
        if len(_dates) > 4096:
            _dates.clear()
        d = _dates[idate] = datetime.datetime.fromtimestamp(idate, _UTC)
    return d


def _utf8(name: str) -> bool:
    """Can this file name be recorded (no undecodable bytes, which listdir gives as surrogates)?"""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _letters(suffix: str) -> str:
    return suffix[3:] if suffix else ""


def _crc(text: str) -> str:
    return f"{zlib.crc32(text.encode('utf-8')) & 0xFFFFFFFF:08x}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _coarse_ns() -> int | None:
    """The coarse real-time clock that stamps file mtimes on Linux (None where there is none)."""
    if _COARSE_CLOCK is None:
        return None
    try:
        return time.clock_gettime_ns(_COARSE_CLOCK)
    except OSError:
        return None


def fs_type(path: str) -> str | None:
    """The type of the file system holding ``path`` (Linux /proc/self/mountinfo; None if unknown)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        real = os.path.realpath(path)
    except OSError:
        return None
    best, found = -1, None
    for line in lines:
        fields = line.split(" ")
        try:
            mount = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            kind = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > best:
            best, found = len(mount), kind
    return found


class CorruptState(Exception):
    """A snapshot file that cannot be trusted (truncated or malformed)."""


class FolderState:
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

    def _path(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _load(self) -> None:
        try:
            st = os.stat(self._path(STATE_FILE))
        except FileNotFoundError:
            self._create()
            return
        base_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            lst = os.stat(self._path(LOG_FILE))
            log_ino: int | None = lst.st_ino
            log_size = lst.st_size
        except FileNotFoundError:
            log_ino, log_size = None, 0
        if base_id != self._base_id or log_ino != self._log_ino or log_size < self._log_offset:
            try:
                self._read_snapshot()
            except CorruptState as e:
                self._recover(str(e))
                return
            self._base_id = base_id
            self._log_ino = log_ino
            self._read_log(from_start=True)
        elif log_size > self._log_offset:
            self._read_log(from_start=False)

    def _reset(self) -> None:
        self.entries = {}
        self.by_base = {}
        self._names = None
        self._listed = {}
        self._listed_saved = {}
        self._dirty = None
        self.keywords = []
        self._flag_cache = {}
        self._compact_next = False
        self.version += 1

    def _create(self) -> None:
        """A folder without state (new, or made by another program): start at UID 1."""
        self._reset()
        self.generation = 0
        self.uidvalidity = self._allocate_uidvalidity()
        self.uidnext = 1
        self.highest_modseq = 1
        self.first_recent = 1
        self._write_snapshot()

    def _recover(self, reason: str) -> None:
        """Keep a broken snapshot aside and start over with a new UIDVALIDITY (clients resync)."""
        self.log.error("folder state {path} unusable ({reason}); rebuilding with a new UIDVALIDITY", path=self.path, reason=reason)
        try:
            os.replace(self._path(STATE_FILE), self._path(f"{STATE_FILE}.broken-{int(time.time())}"))
        except OSError:
            pass
        self._create()

    def _read_snapshot(self) -> None:
        try:
            with open(self._path(STATE_FILE), "r", encoding="utf-8", newline="\n") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise CorruptState(f"not UTF-8: {e}") from None
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise CorruptState("truncated")
        head = lines[0].split(" ")
        end = lines[-2].split(" ")
        if len(head) != 6 or head[0] != "mailsuite-state" or head[1] != "1" or end[0] != "E":
            raise CorruptState("bad header or missing end marker")
        listed_line = lines[2] if lines[2].startswith("L ") else None
        body = lines[3:-2] if listed_line else lines[2:-2]
        try:
            if int(end[1]) != len(body):
                raise CorruptState("entry count mismatch")
            generation, uidvalidity, uidnext, highest = (int(x) for x in head[2:])
        except ValueError:
            raise CorruptState("bad numbers") from None
        if not lines[1].startswith("K"):
            raise CorruptState("missing keyword line")
        self._reset()
        self.generation, self.uidvalidity, self.uidnext, self.highest_modseq = generation, uidvalidity, uidnext, highest
        self.first_recent = 0  # unknown until the log's marker (see _read_log)
        self.keywords = lines[1].split(" ")[1:]
        if listed_line:
            try:
                self._apply(listed_line)
            except ValueError:
                raise CorruptState("bad listing line") from None
        entries = self.entries
        by_base = self.by_base
        where_of = {"n": "new", "c": "cur"}
        index: dict[str, dict[str, int]] = {"n": {}, "c": {}}  # the file-name index, built on the way
        with paused_gc(len(body) > BULK_RECORDS):
            try:
                for line in body:
                    uid_s, modseq_s, size_s, idate_s, where_c, suffix, base = line.split(" ", 6)
                    uid = int(uid_s)
                    if suffix == "-":
                        suffix = ""
                    entries[uid] = Entry(uid, int(modseq_s), int(size_s), int(idate_s), where_of[where_c], suffix, base)
                    by_base[base] = uid
                    index[where_c][base + suffix] = uid
            except (ValueError, KeyError):
                raise CorruptState("malformed entry") from None
        self._names = {"new": index["n"], "cur": index["c"]}

    def _read_log(self, *, from_start: bool) -> None:
        try:
            f = open(self._path(LOG_FILE), "rb")
        except FileNotFoundError:
            self._log_valid = False
            self._log_ino = None
            self._log_offset = 0
            self._default_first_recent()
            return
        with f:
            if from_start:
                header = f.readline()
                self._log_valid = header == f"mailsuite-log {self.generation}\n".encode()
                self._log_offset = len(header)
                self._log_ino = os.fstat(f.fileno()).st_ino
                if not self._log_valid:
                    self._default_first_recent()
                    return
            elif not self._log_valid:
                return
            f.seek(self._log_offset)
            data = f.read()
        changed = False
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # torn tail: ignored, truncated by the next writer
            try:
                line = data[pos:nl].decode("utf-8")
                crc, record = line[:8], line[9:]
                if line[8:9] != " " or _crc(record) != crc:
                    break
                self._apply(record)
            except (UnicodeDecodeError, ValueError):
                break
            changed = True
            pos = nl + 1
        self._log_offset += pos
        if from_start:
            self._default_first_recent()
        if changed:
            self.version += 1

    def _default_first_recent(self) -> None:
        """A state written before the \\Recent marker existed: only what is in new/ is recent."""
        if not self.first_recent:
            self.first_recent = self.uidnext
            self._needs_marker = True

    def _apply(self, record: str) -> None:
        kind = record[:1]
        if kind == "+":
            uid_s, modseq_s, size_s, idate_s, where_c, suffix, base = record[2:].split(" ", 6)
            uid = int(uid_s)
            old = self.entries.get(uid)
            if old is not None:
                self._drop(old)
            self._put(Entry(uid, int(modseq_s), int(size_s), int(idate_s), "new" if where_c == "n" else "cur", "" if suffix == "-" else suffix, base))
        elif kind == "=":
            uid_s, modseq_s, where_c, suffix = record[2:].split(" ")
            if uid_s == "0":  # the \\Recent marker (see module notes)
                self.first_recent = max(self.first_recent, int(modseq_s))
                return
            entry = self.entries.get(int(uid_s))
            if entry is not None:
                entry.modseq = int(modseq_s)
                self._move(entry, "new" if where_c == "n" else "cur", "" if suffix == "-" else suffix)
        elif kind == "-":
            old = self.entries.get(int(record[2:]))
            if old is not None:
                self._drop(old)
        elif kind == "H":
            uidnext_s, highest_s = record[2:].split(" ")
            self.uidnext = max(self.uidnext, int(uidnext_s))
            self.highest_modseq = max(self.highest_modseq, int(highest_s))
        elif kind == "L":
            fields = record.split(" ")[1:]
            if len(fields) != 4:
                raise ValueError("bad L record")
            listed: dict[str, tuple[int, int] | None] = {}
            for where, ino, mtime in (("new", fields[0], fields[1]), ("cur", fields[2], fields[3])):
                listed[where] = None if ino == "-" else (int(ino), int(mtime))
            self._listed = dict(listed)
            self._listed_saved = listed
        elif kind == "K":
            self.keywords = record.split(" ")[1:]
            self._flag_cache = {}
            self._dirty = None
            for entry in self.entries.values():
                entry.info = None
        else:
            raise ValueError(f"unknown record {kind!r}")

    # -- writing -------------------------------------------------------------
    def _snapshot_bytes(self) -> bytes:
        lines = [f"mailsuite-state 1 {self.generation} {self.uidvalidity} {self.uidnext} {self.highest_modseq}", " ".join(["K", *self.keywords]), self.listed_record()]
        self._listed_saved = dict(self._listed)
        lines.extend([f"{e.uid} {e.modseq} {e.size} {e.idate} {e.where[0]} {e.suffix or '-'} {e.base}" for e in self.entries.values()])  # Entry.line, inlined
        lines.append(f"E {len(self.entries)}")
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _write_snapshot(self) -> None:
        """Write a full snapshot of the next generation, then an empty log for it."""
        self.generation += 1
        write_atomic(self._path(STATE_FILE), self._snapshot_bytes(), sync_dir=False)
        marker = self.recent_record()
        header = f"mailsuite-log {self.generation}\n{_crc(marker)} {marker}\n".encode()
        write_atomic(self._path(LOG_FILE), header, sync_dir=False)
        self._needs_marker = False
        self._compact_next = False
        fsync_dir(self.path)
        st = os.stat(self._path(STATE_FILE))
        self._base_id = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._log_ino = os.stat(self._path(LOG_FILE)).st_ino
        self._log_offset = len(header)
        self._log_valid = True
        self.version += 1

    def commit(self, records: list[str]) -> None:
        """Persist records already applied in memory: append them to the log (fsynced) or compact."""
        if not records:
            return
        self.version += 1
        limit = max(LOG_COMPACT_BYTES, (self._base_id[1] if self._base_id else 0) // 2)
        # size estimate first (9 bytes of CRC and a newline per record): no CRCs for a log about to be compacted
        if self._compact_next or not self._log_valid or self._needs_marker or self._log_offset + sum(map(len, records)) + 10 * len(records) > limit:
            self._write_snapshot()
            return
        data = "".join(f"{_crc(r)} {r}\n" for r in records).encode("utf-8")
        if self._log_offset + len(data) > limit:  # non-ASCII names made it bigger than estimated
            self._write_snapshot()
            return
        fd = os.open(self._path(LOG_FILE), os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != self._log_offset:
                os.ftruncate(fd, self._log_offset)  # drop a torn tail left by a crashed writer
            os.lseek(fd, self._log_offset, os.SEEK_SET)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._log_offset += len(data)

    def listed_record(self) -> str:
        """``L``: the identities of new/ and cur/ when they were last listed settled (see _unchanged).

        Saved with the state so a freshly started process can skip listing a
        folder nobody has touched since: its state is then known to match.
        """
        parts = ["L"]
        for where in ("new", "cur"):
            identity = self._listed.get(where)
            parts += ["-", "-"] if identity is None else [str(identity[0]), str(identity[1])]
        return " ".join(parts)

    def recent_record(self) -> str:
        """``= 0 <first_recent> c -``: the \\Recent marker, an ``=`` record for UID 0 (see module notes)."""
        return f"= 0 {self.first_recent} c -"

    def header_record(self) -> str:
        return f"H {self.uidnext} {self.highest_modseq}"

    # -- flags ----------------------------------------------------------------
    def flags_of(self, suffix: str) -> frozenset[str]:
        """IMAP flags (system flags and keywords) of an info suffix."""
        cached = self._flag_cache.get(suffix)
        if cached is None:
            flags = set()
            for letter in _letters(suffix):
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
            if lower in _FLAG_LETTER:
                letters.append(_FLAG_LETTER[lower])
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
            info = entry.info = _message_info(uid=entry.uid, flags=self.flags_of(entry.suffix), size=entry.size,
                                              internal_date=_date(entry.idate), modseq=entry.modseq, key=entry.base)
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
        dates = _dates
        build = _message_info
        for uid, entry in self.entries.items():
            info = entry.info
            if info is None:
                suffix = entry.suffix
                flags = flag_cache.get(suffix)
                if flags is None:
                    flags = flags_of(suffix)
                idate = dates.get(entry.idate)
                if idate is None:
                    idate = _date(entry.idate)
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
            self._fine_mtimes = _coarse_ns() is not None and fs_type(self.path) in _LOCAL_FS
        self._clock_before_stat = _coarse_ns() if self._fine_mtimes else None
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
            now = _coarse_ns()
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
                names = [n for n in names if "\n" not in n and _utf8(n)]  # others cannot be recorded; left alone
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
                seen = relisted.get(entry.base)
                if seen is not None:
                    bumped |= self._update(entry, seen, modseq, records)
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
        size_field = _SIZE_FIELD.search
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
        flags_changed = _letters(seen[1]) != _letters(entry.suffix)
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
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _crlf_chunks(f: Any, *, convert: bool) -> Iterator[bytes]:
    """Chunks of a file with bare LFs turned into CRLF (``convert``), or the bare-LF chunks only (not)."""
    prev_cr = False
    while chunk := f.read(1 << 20):
        head = b""
        if prev_cr and chunk[:1] == b"\n":
            head, chunk = b"\n", chunk[1:]
        prev_cr = chunk[-1:] == b"\r" if chunk else prev_cr
        if convert:
            yield head + _BARE_LF.sub(b"\r\n", chunk)
        elif _BARE_LF.search(chunk):
            yield chunk
            return


def normalize_line_ends(path: str, tmp_dir: str) -> os.stat_result | None:
    """Rewrite a message that has bare LF line ends with CRLF, in place and atomically.

    Postfix's local delivery, procmail and mutt write LF; IMAP sizes and
    POP3 framing want CRLF (what SMTP hands us).  The converted copy is
    written in tmp/, fsynced and renamed over the original name, so the base
    name (the message's key) is kept and a crash leaves either version.
    Returns the new stat, or None when the file needed no change.
    """
    with open(path, "rb") as f:
        if next(_crlf_chunks(f, convert=False), None) is None:
            return None
        f.seek(0)
        tmp = os.path.join(tmp_dir, f".crlf.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in _crlf_chunks(f, convert=True):
                _write_all(fd, chunk)
            os.fsync(fd)
            original = os.fstat(f.fileno())
        finally:
            os.close(fd)
    try:
        os.utime(tmp, ns=(original.st_atime_ns, original.st_mtime_ns))  # keep the internal date
        if not os.path.exists(path):
            raise FileNotFoundError(path)  # the other program moved it meanwhile; the next sync sees it
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return os.stat(path)


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
