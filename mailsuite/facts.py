"""A bounded cache of facts derived from stored messages' octets (what SEARCH learnt).

Why: a client searches the same folder again and again (every sync, every
"quick filter" keystroke), and each SEARCH FROM/SUBJECT re-parsed every
header block while each BODY search re-parsed every MIME structure.  A stored
message never changes (only its flags and its file name do), so what a search
derives from its octets can be kept for every session on the same store.

Who owns it: each store (``MaildirStore.facts``, ``MemoryStore.facts``) keeps
one and hands it out per folder incarnation through ``IFolder.facts()``
(:class:`mailsuite.interfaces.FolderFacts`); callers that derive facts (the
IMAP SEARCH evaluator) fill it.  It lives outside ``store/`` and ``imap/``
because both use it and neither may import the other.  What is kept:

* ``fields``: per lower-cased header field name, the values as SEARCH matches
  them (unfolded, RFC 2047-decoded, case-folded); an empty tuple says the
  field is absent.
* ``sent``: the Date: header's calendar day (``None``: none parsable).
* ``structure``: where the header blocks and the text leaves of the message
  are (byte offsets), with each leaf's transfer encoding and charset codec,
  so BODY/TEXT need no MIME parse the next time.

Keys name the message's identity: the folder incarnation (user, folder,
UIDVALIDITY, as a small number from :meth:`FactsCache.folder_id`),
the UID, and the store's stable message key (the Maildir base name) and
size, so an expunged message and a later one with the same content or UID
never share an entry.  A key's first element names its folder.

Implementation notes:

* Bounded by an estimate of the bytes held (:data:`MAX_BYTES`), least
  recently used messages dropped first.
* Used from the reactor thread and from worker threads (SEARCH evaluates on
  the thread pool), so every change of the LRU and of a :class:`MessageFacts`
  happens under one lock; :meth:`FactsCache.get_quiet` reads without it (a
  dict lookup is atomic) and the reader marks its hits with one
  :meth:`FactsCache.touch` per batch.  Facts handed out may be dropped from
  the cache meanwhile, which only means additions to them are not kept.
* Only messages a search actually had to decode get an entry (a raw
  pre-filter that rules a message out stores nothing).
* Values are derived deterministically from immutable octets: two threads
  computing the same fact store equal values.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any, Hashable

__all__ = ["MAX_BYTES", "MessageFacts", "FactsCache"]

#: Estimated bytes of facts kept (least recently used messages dropped first).
MAX_BYTES = 24 * 1024 * 1024
#: Estimated cost of one entry before anything is learnt (key, object, dict).
_ENTRY_COST = 400
#: Folder incarnations numbered before the numbering starts afresh (old entries then age out).
MAX_FOLDERS = 100_000
_UNSET: Any = object()


class MessageFacts:
    """What searches learnt about one message (see the module docstring)."""

    __slots__ = ("key", "fields", "sent", "structure", "cost")

    def __init__(self, key: Hashable = None) -> None:
        self.key = key
        self.fields: dict[str, tuple[str, ...]] = {}
        self.sent: Any = _UNSET
        self.structure: Any = None
        self.cost = _ENTRY_COST

    @property
    def has_sent(self) -> bool:
        return self.sent is not _UNSET


def _texts_cost(texts: tuple[str, ...]) -> int:
    return 80 + sum(64 + 2 * len(t) for t in texts)


class FactsCache:
    """LRU of :class:`MessageFacts` bounded by their estimated size; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, MessageFacts] = OrderedDict()
        self._lock = threading.Lock()
        self._folder_ids: dict[Hashable, int] = {}
        self._numbers = itertools.count(1)
        self._per_folder: dict[Hashable, int] = {}

    def folder_id(self, incarnation: Hashable) -> int:
        """A small number standing for a folder incarnation in keys (cheap to hash)."""
        with self._lock:
            number = self._folder_ids.get(incarnation)
            if number is None:
                if len(self._folder_ids) >= MAX_FOLDERS:
                    self._folder_ids.clear()
                number = self._folder_ids[incarnation] = next(self._numbers)
            return number

    def knows_folder(self, folder: Hashable) -> bool:
        """Are any facts kept for messages of ``folder`` (a key's first element)?"""
        return self._per_folder.get(folder, 0) > 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> MessageFacts | None:
        """The facts of ``key`` if known (marked recently used), else None."""
        with self._lock:
            facts = self._entries.get(key)
            if facts is not None:
                self._entries.move_to_end(key)
            return facts

    def get_quiet(self, key: Hashable) -> MessageFacts | None:
        """The facts of ``key`` if known, without marking them used (no lock: a dict lookup
        is atomic); call :meth:`touch` with the keys used afterwards."""
        return self._entries.get(key)

    def touch(self, keys: list[Hashable]) -> None:
        """Mark entries recently used (those still kept)."""
        with self._lock:
            entries = self._entries
            for key in keys:
                if key in entries:
                    entries.move_to_end(key)

    def facts(self, key: Hashable) -> MessageFacts:
        """The facts of ``key``, a new empty entry if none is kept."""
        with self._lock:
            facts = self._entries.get(key)
            if facts is not None:
                self._entries.move_to_end(key)
                return facts
            facts = self._entries[key] = MessageFacts(key)
            folder = _folder_of(key)
            self._per_folder[folder] = self._per_folder.get(folder, 0) + 1
            self._grow(facts, facts.cost)
            return facts

    def add_field(self, facts: MessageFacts, name: str, texts: tuple[str, ...]) -> None:
        """Remember the matchable values of header field ``name``."""
        with self._lock:
            if name in facts.fields:
                return
            facts.fields[name] = texts
            cost = _texts_cost(texts) + len(name)
            facts.cost += cost
            self._grow(facts, cost)

    def set_sent(self, facts: MessageFacts, day: Any) -> None:
        """Remember the Date: header's day (or None)."""
        with self._lock:
            if facts.sent is _UNSET:
                facts.sent = day
                facts.cost += 64
                self._grow(facts, 64)

    def set_structure(self, facts: MessageFacts, structure: Any, cost: int) -> None:
        """Remember the message's header and text-leaf offsets (``cost``: estimated bytes)."""
        with self._lock:
            if facts.structure is None:
                facts.structure = structure
                facts.cost += cost
                self._grow(facts, cost)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._per_folder.clear()
            self.size = 0

    def _grow(self, facts: MessageFacts, cost: int) -> None:
        # callers hold the lock; facts already evicted are no longer counted
        if self._entries.get(facts.key) is not facts:
            return
        self.size += cost
        while self.size > self.max_bytes and self._entries:
            key, dropped = self._entries.popitem(last=False)
            self.size -= dropped.cost
            folder = _folder_of(key)
            left = self._per_folder.get(folder, 1) - 1
            if left > 0:
                self._per_folder[folder] = left
            else:
                self._per_folder.pop(folder, None)
        if not self._entries:
            self.size = 0


def _folder_of(key: Hashable) -> Hashable:
    return key[0] if isinstance(key, tuple) and key else None

