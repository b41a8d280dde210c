"""A bounded, process-wide cache of message header blocks.

Why: clients fetch the same few header fields of many messages again and
again (every sync, every SEARCH FROM/SUBJECT), and each read is an open(2)
and a read of a file.  A stored message never changes (only its flags and
its file name do), so its header block can be cached under
(user, folder, UIDVALIDITY, UID) for every session of the process.  A new
UIDVALIDITY makes old entries unreachable; they age out.

Only touched from the reactor thread (lookups before a worker-thread read,
inserts after it), so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

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


CACHE = HeaderCache()


def folder_key(server: object, folder: object) -> tuple[object, str, str, int]:
    """The part of a cache key naming one folder incarnation (store, user, folder, UIDVALIDITY)."""
    store = getattr(getattr(server, "context", None), "store", None)
    user = getattr(getattr(server, "user", None), "address", "")
    return (getattr(store, "root", id(store)), user, getattr(folder, "name", ""), getattr(folder, "uidvalidity", 0))
