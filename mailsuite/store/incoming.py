"""A message being received: memory first, a temporary file once it is big.

Implementation notes:
- ``write`` runs on the reactor thread for every chunk of SMTP DATA or an
  IMAP literal, so it only appends to a list; past ``spill_threshold`` bytes
  everything moves to a temporary file under the data root (buffered writes,
  no fsync: durability comes when the store or the queue copies it).
- ``open`` gives an independent reader each time, so the store and the queue
  can read the same message concurrently from worker threads.
- The temporary file is removed by ``discard`` (idempotent, never raises: it
  is how a failed write, e.g. a full disk, is cleaned up); files left by a
  crash are removed when the store opens (see MaildirStore.clean_incoming).
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import BinaryIO

from zope.interface import implementer

from mailsuite.interfaces import IIncomingMessage
from mailsuite.store.durable import make_dirs

#: Above this many bytes a message is kept in a temporary file, not in memory.
SPILL_THRESHOLD = 1024 * 1024


@implementer(IIncomingMessage)
class IncomingMessage:
    """Collects a message's bytes; see the module notes."""

    def __init__(self, spool_dir: str | None, spill_threshold: int = SPILL_THRESHOLD) -> None:
        self.size = 0
        self._spool_dir = spool_dir
        self._threshold = spill_threshold
        self._chunks: list[bytes] | None = []
        self._data: bytes | None = None
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._finished = False
        self._discarded = False

    @classmethod
    def from_bytes(cls, data: bytes, spool_dir: str | None = None) -> "IncomingMessage":
        """A finished message holding ``data`` (for APPEND of a complete literal, tests, benchmarks)."""
        message = cls(spool_dir)
        message.write(data)
        message.finish()
        return message

    @property
    def path(self) -> str | None:
        """The temporary file, when the message spilled to disk."""
        return self._path

    def write(self, data: bytes) -> None:
        if self._finished:
            raise RuntimeError("write() after finish()")
        if not data:
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        assert self._chunks is not None
        self._chunks.append(bytes(data))
        if self.size > self._threshold and self._spool_dir is not None:
            self._spill()

    def _spill(self) -> None:
        make_dirs(self._spool_dir)  # type: ignore[arg-type]
        fd, self._path = tempfile.mkstemp(prefix="incoming-", dir=self._spool_dir)
        self._file = os.fdopen(fd, "wb", buffering=256 * 1024)
        assert self._chunks is not None
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks = None

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._file is not None:
            self._file.close()
        else:
            assert self._chunks is not None
            self._data = b"".join(self._chunks)
            self._chunks = None

    def open(self) -> BinaryIO:
        if self._discarded:
            raise ValueError("message was discarded")
        if not self._finished:
            raise RuntimeError("open() before finish()")
        if self._path is not None:
            return open(self._path, "rb")
        return io.BytesIO(self._data or b"")

    def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        self._data = None
        self._chunks = None
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # flushing bytes of a file about to be removed failed (disk full): remove it all the same
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
