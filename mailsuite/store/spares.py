"""Empty message files made ahead of need, so a delivery does not wait for a file to be created.

Implementation notes:

- Why: creating a file allocates an inode, and on some file systems that is
  slow: ext4 without a journal skips every inode freed in the last 30 seconds,
  reading each one's deletion time, so with mail being deleted (expunges,
  another program's queue) one create cost 0.45-0.65 ms here, measured with
  strace in the SMTP benchmark, a sixth of the time between the end of DATA
  and the 250.  The delivery paid that time while its client waited; now it
  is paid after the 250 is on its way.
- The files live in one directory of the store (``<mail root>/.spare``, a
  name no domain can have), on the same file system as the mailboxes.  A
  delivery takes one, writes and fsyncs the message into it and renames it
  into the mailbox's ``new/``: the same guarantee as Maildir's tmp/ to new/
  (readers never see a partial file; rename within one file system is
  atomic).  When a mailbox is on another file system the rename fails with
  EXDEV and the delivery falls back to the mailbox's own ``tmp/``.
- ``take`` never waits: an empty pool means the delivery creates its file as
  before.  After each delivery the store thread that did it tops the pool up
  (mailsuite.threads.after_result), once the result is on its way to the
  reactor: no extra thread to wake, nothing added to the client's wait.
- A spare is only used if it is still an empty regular file with one name
  (``open_spare`` checks with fstat); anything else is left alone and the
  delivery creates its own file.
- Leftovers of a stopped or crashed server are removed when the pool starts;
  ``stop`` removes the unused ones.
"""

from __future__ import annotations

import os
import stat
import threading

from twisted.logger import Logger

from mailsuite.store.durable import make_dirs, unique_name

#: Directory under the mail root that holds the spares ("." keeps it out of the domain namespace).
SPARE_DIRNAME = ".spare"


class SparePool:
    """Keeps up to ``size`` empty files ready in ``directory``; see the module notes."""

    log = Logger()

    def __init__(self, directory: str, size: int = 32) -> None:
        self.directory = directory
        self.size = size
        self._ready: list[str] = []
        self._lock = threading.Lock()
        self._stopped = True
        self._failing = False

    def start(self) -> None:
        """Remove leftovers and fill the pool (blocking: it creates files)."""
        make_dirs(self.directory)
        for entry in os.scandir(self.directory):
            try:
                os.unlink(entry.path)
            except OSError:
                pass
        self._stopped = False
        self.fill()

    def take(self) -> str | None:
        """The path of a ready empty file, now the caller's; None when the pool is empty."""
        with self._lock:
            return self._ready.pop() if self._ready else None

    def fill(self) -> int:
        """Create files until the pool is full; returns how many were made (blocking)."""
        made = 0
        while not self._stopped:
            with self._lock:
                if len(self._ready) >= self.size:
                    break
            path = os.path.join(self.directory, unique_name())
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except OSError as e:
                if not self._failing:  # once per failing stretch (a full disk would log it per message)
                    self.log.warn("cannot make a spare message file in {directory}: {error}", directory=self.directory, error=e.strerror or e)
                self._failing = True
                break
            self._failing = False
            with self._lock:
                self._ready.append(path)
            made += 1
        return made

    def stop(self) -> None:
        """Remove the unused spares; later fills do nothing (blocking; call once no delivery runs)."""
        self._stopped = True
        with self._lock:
            unused, self._ready = self._ready, []
        for path in unused:
            try:
                os.unlink(path)
            except OSError:
                pass


def open_spare(path: str) -> int | None:
    """Open a taken spare for writing; None (and the caller creates its own file) unless it is still an empty regular file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0 or st.st_nlink != 1:
        os.close(fd)
        return None
    return fd
