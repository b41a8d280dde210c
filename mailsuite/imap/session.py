"""A session's view of its selected folder: sequence numbers over the store's UIDs.

Implementation notes (invariants):

* The store speaks UIDs; message sequence numbers belong to the session
  (RFC 3501 2.3.1.2).  ``uids`` is the session's ordered UID list; the
  sequence number of ``uids[i]`` is ``i + 1``.
* A message expunged by another session or process stays in ``uids`` (and
  keeps its cached :class:`MessageInfo`) until this session may announce
  it with ``* n EXPUNGE``; that is never during FETCH, STORE or SEARCH
  (RFC 3501 7.4.1), so sequence numbers the client holds stay valid.
* ``EXISTS`` is only ever announced growing between EXPUNGEs (RFC 3501 7.3.1);
  the count always includes not-yet-announced expunged messages.
* Changes are applied idempotently: the store may report a change this
  session made itself; applying it twice produces no second response.
* A read-only (EXAMINE) view never asks the store to change flags.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Sequence

from mailsuite import interfaces
from mailsuite.imap import wire
from mailsuite.interfaces import FolderChange, MessageInfo

#: The flags every folder accepts (RFC 3501 2.3.2); \Recent is never settable.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
#: Keywords the store keeps in a Maildir flag letter rather than its keyword table
#: ($Forwarded is Maildir's "passed"): always applicable, so always in FLAGS.
LETTER_KEYWORDS = frozenset(f for f in interfaces.SYSTEM_FLAGS.values() if not f.startswith("\\"))


_FLAG_LISTS: dict[tuple[frozenset[str], bool], bytes] = {}


def flag_list(flags: Iterable[str], recent: bool = False) -> bytes:
    """``(\\Seen $Junk)``: a parenthesised flag list, system flags first, stable order.

    Results are memoised per (flag set, recent): a folder has few distinct
    flag combinations, and FETCH FLAGS on 100,000 messages formats each once.
    """
    key = (flags if isinstance(flags, frozenset) else frozenset(flags), recent)
    cached = _FLAG_LISTS.get(key)
    if cached is None:
        cached = wire.format_flags(key[0], recent)
        if len(_FLAG_LISTS) < 4096:
            _FLAG_LISTS[key] = cached
    return cached


class SelectedFolder:
    """The selected folder of one session: sequence map, cached flags, pending changes."""

    def __init__(self, folder: object, *, read_only: bool) -> None:
        self.folder = folder
        self.read_only = read_only
        infos: Sequence[MessageInfo] = folder.messages()  # type: ignore[attr-defined]
        self.uids: list[int] = [m.uid for m in infos]
        self.info: dict[int, MessageInfo] = {m.uid: m for m in infos}
        #: UIDs gone from the store but still holding a sequence number here.
        self.vanished: set[int] = set()
        #: UIDs whose flag change has not been reported yet.
        self.flags_changed: dict[int, None] = {}
        self.exists_announced = len(self.uids)
        self.recent_announced = self.recent_count()
        self.keywords_announced: frozenset[str] = self.keywords()

    # -- numbers -----------------------------------------------------------
    @property
    def exists(self) -> int:
        """The EXISTS count as the client knows it (after pending responses)."""
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        """The sequence number of ``uid`` in this view, or None."""
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def recent(self) -> frozenset[int]:
        """UIDs that are \\Recent for this session."""
        return frozenset(getattr(self.folder, "recent", frozenset()))

    def recent_count(self) -> int:
        recent = self.recent()
        return sum(1 for uid in recent if uid in self.info)

    def keywords(self) -> frozenset[str]:
        """Keywords for the FLAGS response: the folder keyword table plus the letter-stored ones."""
        known = set(getattr(self.folder, "keywords", frozenset()))
        # a message may carry $Forwarded without the folder's keyword table naming it
        return frozenset(known) | LETTER_KEYWORDS

    def first_unseen(self) -> int | None:
        """Sequence number of the first message without \\Seen (SELECT's [UNSEEN])."""
        for i, uid in enumerate(self.uids):
            if "\\Seen" not in self.info[uid].flags:
                return i + 1
        return None

    # -- sequence sets -------------------------------------------------------
    def resolve(self, ranges: Iterable[tuple[int | None, int | None]], *, uid: bool) -> list[int]:
        """UIDs (ascending, unique) named by a sequence set.

        ``ranges`` are inclusive (first, last) pairs, None standing for ``*``.
        Sequence numbers beyond EXISTS raise ValueError (the caller answers
        BAD, RFC 3501 9 "seq-number"); UIDs that don't exist are ignored
        (RFC 3501 6.4.8).
        """
        n = len(self.uids)
        if uid:
            top = self.uids[-1] if self.uids else 0
            picked: set[int] = set()
            for first, last in ranges:
                a = top if first is None else first
                b = top if last is None else last
                if a > b:
                    a, b = b, a
                lo = bisect.bisect_left(self.uids, a)
                hi = bisect.bisect_right(self.uids, b)
                if hi - lo == n:
                    return list(self.uids)
                picked.update(self.uids[lo:hi])
            return sorted(picked)
        seqs: set[int] = set()
        for first, last in ranges:
            if n == 0 and (first is None or last is None):
                continue  # "1:*" on an empty folder names nothing (lenient, as clients expect)
            a = n if first is None else first
            b = n if last is None else last
            if a > b:
                a, b = b, a
            if a < 1 or b > n:
                raise ValueError("Invalid messageset")
            if a == 1 and b == n:
                return list(self.uids)
            seqs.update(range(a, b + 1))
        return [self.uids[s - 1] for s in sorted(seqs)]

    # -- changes -------------------------------------------------------------
    def apply(self, change: FolderChange) -> None:
        """Take in what the store reports; responses wait for :meth:`pending`."""
        for info in change.added:
            if info.uid in self.info or info.uid in self.vanished:
                continue
            if not self.uids or info.uid > self.uids[-1]:
                self.uids.append(info.uid)
            else:
                bisect.insort(self.uids, info.uid)
            self.info[info.uid] = info
        for info in change.changed:
            self.update(info)
        for uid in change.expunged:
            if uid in self.info:
                self.vanished.add(uid)

    def update(self, info: MessageInfo, *, announce: bool = True) -> bool:
        """Record new flags/modseq for a message; True if anything changed."""
        old = self.info.get(info.uid)
        if old is None or info.uid in self.vanished:
            return False
        if old.flags == info.flags and old.modseq == info.modseq:
            return False
        self.info[info.uid] = info
        if announce:
            self.flags_changed[info.uid] = None
        return True

    def expunge_now(self, uids: Iterable[int]) -> list[bytes]:
        """Drop messages from the view; returns their ``* n EXPUNGE`` lines, in order.

        Each number is valid at the moment its line is sent (later numbers
        already account for earlier removals).  Messages the client never
        heard of (past the announced EXISTS) leave silently.
        """
        lines: list[bytes] = []
        for uid in sorted(set(uids)):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            del self.info[uid]
            self.vanished.discard(uid)
            self.flags_changed.pop(uid, None)
            if seq <= self.exists_announced:
                self.exists_announced -= 1
                lines.append(b"* %d EXPUNGE\r\n" % seq)
        return lines

    def pending(self, *, allow_expunge: bool, condstore: bool) -> list[bytes]:
        """Untagged responses owed to the client, oldest kind first.

        EXPUNGEs only when ``allow_expunge`` (not during FETCH/STORE/SEARCH);
        then EXISTS/RECENT, FLAGS for new keywords and FETCH FLAGS for
        changed messages.
        """
        lines: list[bytes] = []
        if self.vanished:
            if allow_expunge:
                lines.extend(self.expunge_now(list(self.vanished)))
            else:
                # messages the client never heard of may leave at any time
                silent = [uid for uid in self.uids[self.exists_announced:] if uid in self.vanished]
                if silent:
                    self.expunge_now(silent)
        lines.extend(self.keyword_lines())
        if len(self.uids) != self.exists_announced:
            self.exists_announced = len(self.uids)
            lines.append(b"* %d EXISTS\r\n" % self.exists_announced)
            recent = self.recent_count()
            self.recent_announced = recent
            lines.append(b"* %d RECENT\r\n" % recent)
        if self.flags_changed:
            recent = self.recent()
            for uid in list(self.flags_changed):
                if uid in self.vanished:
                    continue
                del self.flags_changed[uid]
                seq = self.seq_of(uid)
                if seq is None:
                    continue
                lines.append(self.fetch_flags_line(seq, uid, recent, condstore))
        return [line for line in lines if line]

    def keyword_lines(self) -> list[bytes]:
        """``* FLAGS`` / PERMANENTFLAGS again when the folder learnt a new keyword (RFC 3501 7.2.6)."""
        keywords = self.keywords()
        if keywords == self.keywords_announced:
            return []
        self.keywords_announced = keywords
        return self.flags_lines()

    def fetch_flags_line(self, seq: int, uid: int, recent: frozenset[int], condstore: bool) -> bytes:
        """``* n FETCH (UID u FLAGS (...) [MODSEQ (m)])`` for an unsolicited flag update."""
        info = self.info[uid]
        modseq = b" MODSEQ (%d)" % info.modseq if condstore else b""
        return b"* %d FETCH (UID %d FLAGS %s%s)\r\n" % (seq, uid, flag_list(info.flags, uid in recent), modseq)

    def flags_lines(self) -> list[bytes]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` for SELECT and new keywords (RFC 3501 7.2.6)."""
        keywords = sorted(self.keywords_announced)
        flags = " ".join(list(SYSTEM_FLAGS) + keywords)
        lines = [f"* FLAGS ({flags})\r\n".encode()]
        if self.read_only:
            lines.append(b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n")
        else:
            lines.append(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted.\r\n".encode())
        return lines
