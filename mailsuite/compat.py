"""Every use of another library's private internals, in one place.

Why a module of its own: each shortcut below reads or replaces something a
library does not promise to keep (a private attribute, a file layout, a
global switch).  Gathered here, an upgrade that breaks one is found by one
test file (tests/test_compat.py, which pins each to the version it was
measured on) instead of by a slow server, and each has a fallback that takes
the ordinary, public path when the internal is missing.

| shortcut | internal | measured on | fallback |
| --- | --- | --- | --- |
| :func:`idle_tcp_socket` | Twisted ``tcp.Connection`` write buffers and TLS flag | Twisted 24.3-26.10 | ``transport.write`` |
| :func:`forget_exit_signal` | the reactor's ``_exitSignal`` | Twisted 24.3-26.10 | twistd re-raises SIGTERM (exit status -15) |
| :func:`twistd_default_observer` | twistd's ``_SomeApplicationRunner`` and ``AppLogger._getLogObserver`` | Twisted 24.3-26.10 | text lines to standard output |
| :func:`renew_forked_reactor` | the epoll reactor's ``_poller``, ``_reads``, ``_writes``, ``_selectables``, ``_internalReaders``, ``waker`` | Twisted 26.10 | no fork: the test fixture starts a new interpreter |
| :func:`start_eagerly` | a coroutine awaiting an unfired Deferred yields it again when resumed (``Deferred.__await__``) | Twisted 24.3-26.10 | ``ensureDeferred`` from the first step |
| :func:`request_gone` | twisted.web ``Request._disconnected`` | Twisted 26.10 | ``request.finished`` only |
| :class:`WalHeader` | SQLite's WAL-index header in the ``-shm`` file (WAL-index format) | SQLite 3.40 | ``PRAGMA data_version`` |
| :func:`paused_gc` | the interpreter-wide cyclic GC (disable, freeze/unfreeze) | CPython 3.11 | plain allocation with the collector on |
| :func:`frozen_instance` | a frozen dataclass's ``__dict__`` | CPython 3.11 | the dataclass constructor |
| :func:`install_dkim_steps` | dkimpy's module functions replaced | dkimpy 1.1.8 | dkimpy's own functions |
"""

from __future__ import annotations

import gc
import mmap
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Coroutine, Generator, Hashable, Iterator

from twisted.internet import defer, tcp
from twisted.protocols.policies import ProtocolWrapper


# -- Twisted ---------------------------------------------------------------------------
def idle_tcp_socket(transport: Any) -> Any:
    """The socket of a plain-TCP connection with nothing queued, else None (then use ``transport.write``).

    Looks through wrappers that pass writes on unchanged (connection
    counting), never through one that transforms them (the implicit-TLS
    ``TLSMemoryBIOProtocol`` is a ProtocolWrapper too).  Each private
    attribute is read with a default that selects the ordinary path.
    """
    connection = transport
    while isinstance(connection, ProtocolWrapper) and type(connection).write is ProtocolWrapper.write:
        connection = connection.transport
    if (
        isinstance(connection, tcp.Connection)
        and connection.connected
        and not connection.disconnecting
        and not getattr(connection, "TLS", True)
        and not getattr(connection, "_writeDisconnected", True)
        and not getattr(connection, "_tempDataBuffer", True)
        and not getattr(connection, "dataBuffer", True)
    ):
        return getattr(connection, "socket", None)
    return None


def forget_exit_signal(reactor: Any, signum: int) -> None:
    """Make a stop caused by ``signum`` exit with status 0.

    twistd re-raises the signal that stopped the reactor after shutdown;
    for mailsuite's documented way to stop (SIGTERM) that would read as a
    crash.  Without the attribute nothing happens.
    """
    if getattr(reactor, "_exitSignal", None) == signum:
        reactor._exitSignal = None


def twistd_default_observer(options: Any) -> Any:
    """The observer twistd would make without ``--logger`` (standard output, ``-l FILE``, ``--syslog``).

    Built by twistd's own logger class for this platform, so its rules
    (daemons log to twistd.log, SIGUSR1 rotation...) stay exactly Twisted's;
    without those internals the lines go to standard output.
    """
    import sys

    from twisted.application import app
    from twisted.logger import textFileLogObserver
    from twisted.scripts import twistd

    runner = getattr(twistd, "_SomeApplicationRunner", None)
    make = getattr(getattr(runner, "loggerFactory", app.AppLogger)(options), "_getLogObserver", None)
    return make() if make is not None else textFileLogObserver(sys.stdout)


def renew_forked_reactor(reactor: Any) -> bool:
    """Give a forked child its own epoll instance and waker pipe (a fork shares the parent's); False if impossible.

    For the test fixture's fork server: the reactor was installed, never
    run, so only its waker is registered.  Returns False, changing nothing,
    when the reactor is not the epoll reactor this was measured on.
    """
    import select

    needed = ("_poller", "_reads", "_writes", "_selectables", "_internalReaders", "waker", "installWaker")
    if not all(hasattr(reactor, name) for name in needed) or not hasattr(select, "epoll"):
        return False
    waker = reactor.waker
    reactor._poller.close()
    reactor._poller = select.epoll(1024)
    reactor._reads.clear()
    reactor._writes.clear()
    reactor._selectables.clear()
    if waker is not None:
        reactor._internalReaders.discard(waker)
        for fd in (waker.i, waker.o):
            os.close(fd)
        reactor.waker = None
    reactor.installWaker()
    return True


def _resumes_with_same_deferred() -> bool:
    """Does a coroutine waiting for an unfired Deferred yield that Deferred again when resumed?"""
    d: defer.Deferred[None] = defer.Deferred()

    async def wait() -> None:
        await d

    coroutine = wait()
    try:
        first = coroutine.send(None)
        second = coroutine.send(None)
    except BaseException:  # noqa: BLE001 - any other behaviour: no shortcut
        return False
    finally:
        coroutine.close()
    return first is d and second is d


#: Checked once at import: whether :func:`start_eagerly` may run a coroutine's first step itself.
EAGER_COROUTINES = _resumes_with_same_deferred()


def start_eagerly(coroutine: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | Generator[Any, Any, Any] | None:
    """Run ``coroutine`` up to its first wait right here; None when it finished without waiting.

    An exception it raises in that first step propagates.  When it waits,
    the result is what to hand to ``defer.ensureDeferred`` (as soon as
    possible, before the reactor runs again) to go on from where it stopped:
    a generator that resumes it at once, which makes it yield the same
    unfired Deferred again, and from then on Twisted's driver sends it each
    result as usual.  Why: most SMTP commands never wait, and starting
    every command with ``ensureDeferred`` cost about 13 us of the reactor
    thread per command.  If Deferreds stop behaving so (checked once at
    import, :data:`EAGER_COROUTINES`), the coroutine is returned unstarted.
    """
    if not EAGER_COROUTINES:
        return coroutine
    try:
        coroutine.send(None)
    except StopIteration:
        return None
    return _resumed(coroutine)


def _resumed(coroutine: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
    return (yield from coroutine.__await__())


def request_gone(request: Any) -> bool:
    """True when a twisted.web request can no longer be answered (finished, or the client hung up)."""
    return bool(request.finished or getattr(request, "_disconnected", False))


# -- SQLite ----------------------------------------------------------------------------
class WalHeader:
    """A read-only mapping of the first copy of a WAL-mode database's WAL-index header.

    Every commit rewrites it (change counter, frame count, checksums), so
    comparing its bytes tells whether the database changed, with no system
    call.  The caller's open connection holds the ``-shm`` file open, so
    SQLite never truncates it under the mapping.  :meth:`open` gives None
    when the database is not in WAL mode or the file is not there.
    """

    #: Bytes of the first copy of the header (SQLite's "WAL-index format").
    SIZE = 48

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    @classmethod
    def open(cls, db: sqlite3.Connection, path: str) -> WalHeader | None:
        """The header of the database at ``path`` that ``db`` has open, or None."""
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                return None
            with open(path + "-shm", "rb") as shm:
                if os.fstat(shm.fileno()).st_size < cls.SIZE:
                    return None
                return cls(mmap.mmap(shm.fileno(), cls.SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))
        except (OSError, ValueError, sqlite3.Error):
            return None

    def read(self) -> Hashable:
        """The header's bytes now."""
        return self._mapping[: self.SIZE]

    def close(self) -> None:
        """Release the mapping."""
        self._mapping.close()


# -- CPython -----------------------------------------------------------------------------
_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextmanager
def paused_gc(active: bool = True) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while bulk work allocates many objects (``active``).

    Loading or syncing 100,000 messages allocates hundreds of thousands of
    acyclic objects (entries, infos, tuples); each allocation burst triggers
    full collections over the whole heap (0.8 s of a 4.7 s first SELECT,
    single pauses of 0.1-0.3 s holding the interpreter lock, so the reactor
    thread stalled).  Nested and concurrent pauses are counted; the collector
    is re-enabled by the last one out, and only if it was enabled before.
    The last one out also moves what was allocated meanwhile straight to the
    oldest generation (freeze + unfreeze splices the lists without visiting
    an object): otherwise the next young collection would traverse all of it
    at once, another 0.1 s with the lock held.  Those objects are examined by
    the next full collection, as they would have been anyway.  Without
    ``gc.freeze`` (not CPython) the collector is only paused.
    """
    global _gc_pauses, _gc_resume
    if not active:
        yield
        return
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                if hasattr(gc, "freeze"):
                    gc.freeze()  # nobody else in the server freezes (checked): unfreeze undoes only ours
                    gc.unfreeze()
                gc.enable()


def frozen_instance(cls: type, _new: Callable[[type], Any] = object.__new__) -> Callable[..., Any]:
    """A fast constructor for a frozen dataclass without slots: fills ``__dict__`` directly.

    The generated ``__init__`` of a frozen dataclass calls
    ``object.__setattr__`` once per field (~2.5x slower); opening a
    100,000-message folder builds one MessageInfo per message.  Same fields,
    same equality and hash as the regular constructor; keyword arguments
    only.  A class whose instances have no ``__dict__`` gets its own
    constructor.
    """
    probe = _new(cls)
    if not hasattr(probe, "__dict__"):
        return cls

    def build(**fields: Any) -> Any:
        instance = _new(cls)
        instance.__dict__.update(fields)
        return instance

    return build


# -- dkimpy ------------------------------------------------------------------------------
def install_dkim_steps(rsa_sign: Callable[..., bytes], relaxed_body: Callable[[bytes], bytes],
                       rfc822_parse: Callable[[bytes], Any]) -> bool:
    """Replace three pure steps inside dkimpy with identical, faster ones; False if dkimpy lacks one.

    See :mod:`mailsuite.mailauth.speedups` for the steps and why.  dkimpy
    looks these names up at call time, so replacing the module attributes
    is enough; if any is missing (a dkimpy that reorganised), none is
    replaced and dkimpy runs its own code.
    """
    import dkim
    import dkim.canonicalization as canonicalization

    relaxed = getattr(canonicalization, "Relaxed", None)
    if not all((hasattr(dkim, "RSASSA_PKCS1_v1_5_sign"), hasattr(dkim, "rfc822_parse"),
                relaxed is not None and hasattr(relaxed, "canonicalize_body"))):
        return False
    dkim.RSASSA_PKCS1_v1_5_sign = rsa_sign
    relaxed.canonicalize_body = staticmethod(relaxed_body)
    dkim.rfc822_parse = rfc822_parse
    return True
