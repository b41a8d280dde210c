"""Durable file operations: unique Maildir names, fsync, atomic replace, group directory sync.

Implementation notes:
- Everything here blocks and runs in the store's worker threads.
- A message file name is ``<sec>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>``
  (the Maildir "unique name" rules plus Maildir++'s ``S=`` size), unique
  across processes and hosts; the info part ``:2,<flags>`` follows it in cur/.
- :class:`DirSync` batches directory fsyncs: a caller returns only after an
  fsync of the directory that *started after its own rename* has finished,
  so each caller's entry is durable, while concurrent callers share one fsync.
- Mail is for the server's user alone: files are created 0600 and every
  directory the store or the queue makes is exactly 0700 (:func:`make_dirs`,
  :func:`make_dir`), whatever the umask the server was started with.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from typing import BinaryIO

_counter = itertools.count(1)
_host_cache: dict[str, str] = {}


def _hostname() -> str:
    if "h" not in _host_cache:
        host = socket.gethostname() or "localhost"
        # Maildir: "/" and ":" must not appear in the host part (encoded as \057, \072).
        _host_cache["h"] = host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    return _host_cache["h"]


#: Mode of the files holding mail (Maildir messages, queue entries, state).
FILE_MODE = 0o600
#: Mode of every directory holding mail: Maildirs and their cur/new/tmp, the per-user roots, the queue.
DIR_MODE = 0o700


def make_dir(path: str | os.PathLike[str], mode: int = DIR_MODE) -> None:
    """``os.mkdir`` (FileExistsError if it exists), then exactly ``mode``: the umask can take bits from mkdir's mode."""
    os.mkdir(path, mode)
    os.chmod(path, mode)


def make_dirs(path: str | os.PathLike[str], mode: int = DIR_MODE) -> None:
    """``os.makedirs(path, exist_ok=True)``, but each directory it creates, parents included, gets exactly ``mode``.

    (``os.makedirs`` gives missing parents the umask's default, e.g. 0775.)
    Directories that already exist are left as they are.
    """
    path = os.fspath(path)
    try:
        make_dir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        parent = os.path.dirname(os.path.normpath(path))
        if not parent or parent == path:
            raise
        make_dirs(parent, mode)
        make_dirs(path, mode)


def unique_name(size: int | None = None) -> str:
    """A new Maildir base name (without info), unique in this and every other process."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    name = f"{sec}.M{usec:06d}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(4)}.{_hostname()}"
    if size is not None:
        name += f",S={size}"
    return name


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so the entries created/renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = True, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a crash leaves the old content or the new, never a mix.

    Written to a unique temporary name in the same directory with exactly
    ``mode`` (whatever the umask), fsynced, renamed over the target, then the
    directory is fsynced.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(directory)


class _DirState:
    __slots__ = ("requested", "done", "running", "cond")

    def __init__(self, lock: threading.Lock) -> None:
        self.requested = 0
        self.done = 0
        self.running = False
        self.cond = threading.Condition(lock)


class DirSync:
    """Group commit for directory fsyncs shared by concurrent deliveries.

    ``sync(path)`` is called *after* the caller's rename/link into ``path``.
    It returns once an fsync of ``path`` that began after that call has
    completed; one fsync serves every caller that arrived before it started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[str, _DirState] = {}

    def sync(self, path: str) -> None:
        with self._lock:
            state = self._dirs.get(path)
            if state is None:
                state = self._dirs[path] = _DirState(self._lock)
            state.requested += 1
            mine = state.requested
            while state.done < mine:
                if state.running:
                    state.cond.wait()
                    continue
                state.running = True
                target = state.requested
                self._lock.release()
                ok = False
                try:
                    fsync_dir(path)
                    ok = True
                finally:
                    self._lock.acquire()
                    state.running = False
                    if ok:
                        state.done = max(state.done, target)
                    state.cond.notify_all()
            if not state.running and state.done == state.requested and len(self._dirs) > 1024:
                del self._dirs[path]


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may take only part of a large buffer)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file(path: str, chunks_source: BinaryIO, prefix: bytes = b"", *, fd: int | None = None) -> int:
    """Create ``path`` exclusively, write prefix + the reader's bytes, fsync; returns the size.

    ``fd``: ``path`` already exists, empty, and is open for writing (a spare
    file, mailsuite.store.spares); it is filled instead of creating one.  On
    failure ``path`` is removed either way.
    """
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    try:
        if prefix:
            write_all(fd, prefix)
            size += len(prefix)
        while True:
            chunk = chunks_source.read(1 << 20)
            if not chunk:
                break
            write_all(fd, chunk)
            size += len(chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)
    return size
