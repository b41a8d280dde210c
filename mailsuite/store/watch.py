"""Change notification for folders (IMAP IDLE), across sessions and processes.

Implementation notes:
- Changes made through this store call :meth:`FolderWatcher.notify` and
  reach the subscribers on the next reactor turn.
- Changes made by other processes (another mailsuite, Postfix, procmail,
  mutt) are found by polling, every ``interval`` seconds (0.25 s), the
  identity (inode, mtime, size) of ``new/``, ``cur/`` and the state files of
  each watched folder: a delivery changes new/, a flag change or expunge
  changes cur/ and appends to the state log.  These are a few stat() calls
  of hot inodes per folder on the reactor thread, and one poller serves
  every session of the process.
- A directory's mtime may not move for a second change in the same clock
  tick, so after every detected change subscribers are called once more on
  the following poll; their refresh then sees anything that tick hid.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

_WATCHED = ("new", "cur", "mailsuite-state", "mailsuite-state.log")


class _Folder:
    __slots__ = ("callbacks", "identity", "followup")

    def __init__(self, identity: tuple[Any, ...]) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.identity = identity
        self.followup = False


def _identity(path: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for name in _WATCHED:
        try:
            st = os.stat(os.path.join(path, name))
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class FolderWatcher:
    """One poller for every watched folder of a store."""

    log = Logger()

    def __init__(self, clock: Any, interval: float = 0.25) -> None:
        self.clock = clock
        self.interval = interval
        self._folders: dict[str, _Folder] = {}
        self._loop: LoopingCall | None = None

    def watch(self, path: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the reactor thread after changes to the folder at ``path``."""
        folder = self._folders.get(path)
        if folder is None:
            folder = self._folders[path] = _Folder(_identity(path))
        folder.callbacks.append(callback)
        self._start()

        def unsubscribe() -> None:
            current = self._folders.get(path)
            if current is None or callback not in current.callbacks:
                return
            current.callbacks.remove(callback)
            if not current.callbacks:
                del self._folders[path]
                if not self._folders:
                    self._stop()

        return unsubscribe

    def notify(self, path: str) -> None:
        """A change made by this process: tell the folder's subscribers soon."""
        if path in self._folders:
            self.clock.callLater(0, self._fire, path)

    def _start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self.poll)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False).addErrback(lambda f: self.log.failure("folder poller stopped", f))

    def _stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def stop(self) -> None:
        """Stop polling (store shutdown)."""
        self._folders.clear()
        self._stop()

    def poll(self) -> None:
        """Compare every watched folder's identity with the last one seen."""
        for path in list(self._folders):
            folder = self._folders.get(path)
            if folder is None:
                continue
            identity = _identity(path)
            if identity != folder.identity:
                folder.identity = identity
                folder.followup = True
                self._fire(path)
            elif folder.followup:
                folder.followup = False
                self._fire(path)

    def _fire(self, path: str) -> None:
        folder = self._folders.get(path)
        if folder is None:
            return
        for callback in list(folder.callbacks):
            try:
                callback()
            except Exception:
                self.log.failure("folder change callback failed for {path}", path=path)
