"""Evaluating a query over a folder's candidates, with the shared cache and batch pre-filters."""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Callable, Iterable, Sequence

from mailsuite.facts import FactsCache, MessageFacts
from mailsuite.imap.search.context import MessageContext
from mailsuite.imap.search.keys import (
    AllOf,
    AnyOf,
    HeaderContains,
    Key,
    Not,
    Query,
    SentDate,
)
from mailsuite.imap.search.parser import parse_reader
from mailsuite.imap.search.structure import SearchMessage
from mailsuite.imap.wire import Reader

# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def matches(query: Query, message: SearchMessage, *, last_seq: int, last_uid: int) -> bool:
    """Does ``message`` satisfy the query?  ``last_seq``/``last_uid`` give ``*`` its meaning."""
    return query.key.match(MessageContext(message, last_seq, last_uid))


def parse(args: Any, resolve: Callable[[Any, bool], Iterable[int]] | None = None) -> Query:
    """Drop-in for ``search_fallback.parse``: reads ``args`` (``data``/``pos``) to its end and,
    with ``resolve``, binds the sequence sets to UIDs."""
    data = args.data if isinstance(args.data, bytes) else bytes(args.data)
    reader = Reader(data, args.pos)
    query = parse_reader(reader)
    args.pos = reader.pos
    if resolve is not None:
        query.bind(resolve)
    return query


#: Stands for "the Date: header's day" among field names (no field name contains a space).
SENT = " sent"


def header_fields_needed(key: Key) -> frozenset[str]:
    """Lower-cased names of the header fields a key tree matches on (:data:`SENT` for SENT*)."""
    if isinstance(key, HeaderContains):
        return frozenset([key.name])
    if isinstance(key, SentDate):
        return frozenset([SENT])
    if isinstance(key, AllOf):
        return frozenset().union(*(header_fields_needed(k) for k in key.keys))
    if isinstance(key, AnyOf):
        return header_fields_needed(key.first) | header_fields_needed(key.second)
    if isinstance(key, Not):
        return header_fields_needed(key.key)
    return frozenset()


def facts_answer(facts: MessageFacts | None, names: frozenset[str]) -> bool:
    """Do the cached facts of a message answer every header key (``names``) without its header?"""
    if facts is None:
        return False
    fields = facts.fields
    for name in names:
        if name == SENT:
            if not facts.has_sent:
                return False
        elif name not in fields:
            return False
    return True


def _never_read() -> bytes:  # pragma: no cover - meta keys never call it
    raise AssertionError("a meta-only search tried to read a message")


def _required_header_key(key: Key) -> HeaderContains | None:
    """A header substring key that must hold for ``key`` to hold (itself, or a member of an AND).

    Address keys are left to the per-message rule, which also tries their envelope form."""
    if isinstance(key, HeaderContains):
        return key if key.needle and not key._address else None
    if isinstance(key, AllOf):
        for k in key.keys:
            if isinstance(k, HeaderContains) and k.needle and not k._address:
                return k
    return None


def _batch_excluded(key: Key, candidates: Sequence[tuple[int, int, Any, bool]], known: dict[int, bytes],
                    cache: FactsCache | None, folder: Any) -> set[int]:
    """UIDs of a batch whose header blocks rule ``key`` out, found with one scan of all the
    blocks joined instead of one call per message (the per-message rule of
    :meth:`MessageContext.header_excludes`; needles with blanks, which may span a fold, are left to it)."""
    required = _required_header_key(key)
    if required is None or required._spaced:
        return set()
    uids = []
    blocks = []
    for _seq, uid, info, _recent in candidates:
        block = known.get(uid)
        if block is None:
            continue
        if cache is not None:
            facts = cache.get_quiet((folder, uid, info.key, info.size))
            if facts is not None and required.name in facts.fields:
                continue  # answered from the cache anyway
        uids.append(uid)
        blocks.append(block)
    if not blocks:
        return set()
    joined = b"\0".join(blocks)  # a hit across a separator only makes a message a candidate
    if joined.isascii() and b"=?" not in joined:
        plain = None  # every block is
    else:
        plain = [b.isascii() and b"=?" not in b for b in blocks]
    needle = required._ascii
    hit = [False] * len(blocks)
    if needle is not None:
        lower = joined.lower()
        starts = list(itertools.accumulate((len(b) + 1 for b in blocks[:-1]), initial=0))
        pos = lower.find(needle)
        while pos >= 0:
            index = bisect.bisect_right(starts, pos) - 1
            hit[index] = True
            following = index + 1
            if following >= len(starts):
                break
            pos = lower.find(needle, starts[following])
    return {uid for i, uid in enumerate(uids) if not hit[i] and (plain is None or plain[i])}


class _StoredMessage:
    """A candidate as :func:`evaluate` sees it: the :class:`SearchMessage` fields, octets read
    through the store's :class:`~mailsuite.interfaces.IMessageOctets` (no per-message closures)."""

    __slots__ = ("seq", "info", "recent", "_source", "_block")

    def __init__(self, seq: int, info: Any, recent: bool, source: Any, block: bytes | None) -> None:
        self.seq = seq
        self.info = info
        self.recent = recent
        self._source = source
        self._block = block

    def header(self) -> bytes:
        if self._block is not None:
            return self._block
        return self._source.header(self.info.uid)

    def message(self) -> bytes:
        return self._source.message(self.info.uid)


def evaluate(
    query: Query,
    candidates: Sequence[tuple[int, int, Any, bool]],
    source: Any,
    headers: dict[int, bytes] | None = None,
    cache: FactsCache | None = None,
    folder: Any = None,
) -> list[tuple[int, int, int]]:
    """``(seq, uid, modseq)`` of the matches among ``(seq, uid, info, recent)`` candidates.

    ``source`` gives octets on demand (:class:`~mailsuite.interfaces.IMessageOctets`: the
    store hands one to the function of ``IFolder.with_messages``, on its thread; None when
    the query needs none); ``headers`` may hold header blocks already read (by UID), used
    instead of ``source.header``.  With ``cache``, what is learnt of each message is shared
    under ``(folder, uid, info.key, info.size)`` (``cache`` and ``folder`` as
    ``IFolder.facts()`` gives them).

    Sequence sets must be bound (:meth:`Query.bind`) when candidates are a batch.
    A message that vanished meanwhile (reading it fails) does not match.
    """
    out = []
    last_seq = candidates[-1][0] if candidates else 0
    last_uid = candidates[-1][1] if candidates else 0
    key = query.key
    if key.needs == "meta":
        # no file is read: one reused context, no per-message allocation (100,000-message folders)
        probe = SearchMessage(0, None, False, _never_read, _never_read)
        ctx = MessageContext(probe, last_seq, last_uid)
        match = key.match
        for seq, uid, info, recent in candidates:
            probe.seq, probe.info, probe.recent = seq, info, recent
            if match(ctx):
                out.append((seq, uid, info.modseq))
        return out
    known = headers or {}
    match = key.match
    hits: list[Any] = []  # cache entries used, marked recently used in one go
    excluded = _batch_excluded(key, candidates, known, cache, folder) if known else ()
    for seq, uid, info, recent in candidates:
        if uid in excluded:
            continue
        facts = None
        if cache is not None:
            message_key = (folder, uid, info.key, info.size)
            facts = cache.get_quiet(message_key)
            if facts is not None:
                hits.append(message_key)
        else:
            message_key = None
        msg = _StoredMessage(seq, info, recent, source, known.get(uid))
        try:
            if match(MessageContext(msg, last_seq, last_uid, facts, cache, message_key)):  # type: ignore[arg-type]
                out.append((seq, uid, info.modseq))
        except OSError:
            continue
        except Exception as e:  # the store's NoSuchMessage: expunged meanwhile, no match
            if type(e).__name__ == "NoSuchMessage":
                continue
            raise
    if hits and cache is not None:
        cache.touch(hits)
    return out
