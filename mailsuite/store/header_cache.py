"""A bounded cache of message header blocks, owned by a store (``IFolder.read_headers``).

Why: clients fetch the same few header fields of many messages again and
again (every sync, every SEARCH FROM/SUBJECT), and each read is an open(2)
and a read of a file.  A stored message never changes (only its flags and
its file name do), so its header block can be cached under
(user, folder, UIDVALIDITY, UID) for every session on the store.  A new
UIDVALIDITY makes old entries unreachable; they age out.

Only touched from the reactor thread (lookups before a trip to the store's
threads, inserts after it), so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import BinaryIO, Callable, Hashable, Sequence

from twisted.internet import defer

#: Bytes of header blocks kept (least recently used dropped first).
MAX_BYTES = 32 * 1024 * 1024
#: Header blocks larger than this are not cached (spam with 1 MB of headers).
MAX_ENTRY = 64 * 1024


class HeaderCache:
    """LRU of header blocks bounded by their total size."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > MAX_ENTRY or key in self._entries:
            return
        self._entries[key] = value
        self.size += len(value)
        while self.size > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped)


def header_lines(fp: BinaryIO, limit: int | None = None) -> bytes | None:
    """The header block of an open message, line by line up to and including the first empty
    line (the whole message if it has none), reading no further.  With ``limit``: None when
    the block is longer than ``limit`` octets (read no further than that)."""
    fp.seek(0)
    if limit is None:
        lines = []
        for line in fp:
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                break
        return b"".join(lines)
    lines = []
    size = 0
    while size <= limit:
        line = fp.readline(limit + 1 - size)
        if not line:
            break
        lines.append(line)
        size += len(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(lines) if size <= limit else None


def through_cache(cache: HeaderCache, prefix: tuple[Hashable, ...], uids: Sequence[int],
                  read: Callable[[list[int]], defer.Deferred[dict[int, bytes]]]) -> defer.Deferred[dict[int, bytes]]:
    """Header blocks of ``uids``: from ``cache`` under ``(*prefix, uid)``, the others by
    ``read(missing)`` (one trip to the store's threads) and cached (the stores' ``read_headers``)."""
    out: dict[int, bytes] = {}
    missing: list[int] = []
    for uid in uids:
        block = cache.get((*prefix, uid))
        if block is None:
            missing.append(uid)
        else:
            out[uid] = block
    if not missing:
        return defer.succeed(out)

    def found(blocks: dict[int, bytes]) -> dict[int, bytes]:
        for uid, block in blocks.items():
            cache.put((*prefix, uid), block)
        out.update(blocks)
        return out

    return read(missing).addCallback(found)
