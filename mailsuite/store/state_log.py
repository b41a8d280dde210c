"""Reading and writing one folder's state files: the snapshot, the appended log, recovery.

:class:`StateFiles` is the persistence half of :class:`~mailsuite.store.state.FolderState`, which
owns the attributes it fills (``entries``, ``uidnext``, ``keywords``...); the format and its
crash-safety rules are described in :mod:`mailsuite.store.state`."""

from __future__ import annotations

import os
import time
from typing import Callable

from twisted.logger import Logger

from mailsuite.compat import paused_gc
from mailsuite.store.durable import fsync_dir, write_all, write_atomic
from mailsuite.interfaces import MessageInfo
from mailsuite.store.state_records import BULK_RECORDS, LOG_FILE, STATE_FILE, CorruptState, Entry, crc

#: Compact the log into a new snapshot once it is this big (and bigger than half the snapshot).
LOG_COMPACT_BYTES = 256 * 1024


class StateFiles:
    """Loads the folder's state from its files and appends or compacts records (lock held by the caller)."""

    log = Logger()

    # What this half reads and fills; FolderState.__init__ sets each (see its comments).
    path: str
    _allocate_uidvalidity: Callable[[], int]
    generation: int
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    first_recent: int
    _needs_marker: bool
    keywords: list[str]
    entries: dict[int, Entry]
    by_base: dict[str, int]
    _names: dict[str, dict[str, int]] | None
    _listed: dict[str, tuple[int, int] | None]
    _listed_saved: dict[str, tuple[int, int] | None]
    _snapshot: tuple[int, dict[int, MessageInfo]] | None
    _dirty: set[int] | None
    _base_id: tuple[int, int, int] | None
    _log_ino: int | None
    _log_offset: int
    _log_valid: bool
    _flag_cache: dict[str, frozenset[str]]
    _compact_next: bool
    version: int

    # The index upkeep of the other half, used when records are applied.
    def _put(self, entry: Entry) -> None:
        raise NotImplementedError

    def _drop(self, entry: Entry) -> None:
        raise NotImplementedError

    def _move(self, entry: Entry, where: str, suffix: str) -> None:
        raise NotImplementedError

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
                stored_crc, record = line[:8], line[9:]
                if line[8:9] != " " or crc(record) != stored_crc:
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
        header = f"mailsuite-log {self.generation}\n{crc(marker)} {marker}\n".encode()
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
        data = "".join(f"{crc(r)} {r}\n" for r in records).encode("utf-8")
        if self._log_offset + len(data) > limit:  # non-ASCII names made it bigger than estimated
            self._write_snapshot()
            return
        fd = os.open(self._path(LOG_FILE), os.O_WRONLY)
        try:
            if os.fstat(fd).st_size != self._log_offset:
                os.ftruncate(fd, self._log_offset)  # drop a torn tail left by a crashed writer
            os.lseek(fd, self._log_offset, os.SEEK_SET)
            write_all(fd, data)
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

