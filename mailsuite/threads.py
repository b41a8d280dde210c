"""The one thread-pool kind of the server: blocking work (fsync, SQLite, password hashing,
mail-authentication checks) with little Python on either side.

Every part that blocks owns one named :class:`LeanThreadPool`, sized by that part's constant
or config (store 24 for concurrent fsyncs, auth, queue, mailauth), started and stopped with
the server by the part's service (StoreService, AuthService, the queue, MailAuth), and
reached through a :class:`Runner` (``run(f, *args) -> Deferred``) or
``deferToThreadPool``, which is what Runner calls.  Protocol code never chooses a thread: it
calls the part's interface (IFolder, IUserDirectory...), whose implementation runs on its pool.

Implementation notes:

- It offers what ``twisted.internet.threads.deferToThreadPool`` and our
  services use of Twisted's ``ThreadPool``: ``callInThreadWithCallback``,
  ``start``, ``stop`` and ``started``.  Callers keep using deferToThreadPool.
- Why not Twisted's pool: every job there passes through its coordinator
  (``Team``), a lock-protected worker queue and a log context: about 90 us of
  Python per job, measured, against about 30 here.  In one process all Python
  shares one interpreter lock, so that time is taken from the reactor thread
  at SMTP message rates (one store job per message).
- Jobs go through a ``queue.SimpleQueue`` (C, no Python-level lock).  Threads
  start on demand, up to ``maxthreads``, when no started thread is idle;
  they stay for the life of the pool.
- ``stop`` lets queued jobs finish, then the threads end (as Twisted's does).
- A job's exception is handed to the callback as a Failure; an exception in
  the callback itself is logged (it is Twisted's deferToThreadPool callback,
  which only schedules work on the reactor).
- A job may leave work for after its result (:func:`after_result`): the
  same thread does it once the result is on its way to the reactor.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, ParamSpec, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

_STOP = object()
_job = threading.local()  # .after: callables to run once the current job's result is handed back

_P = ParamSpec("_P")
_T = TypeVar("_T")


def after_result(work: Callable[[], Any]) -> None:
    """Run ``work`` in this pool thread after the current job's result has been handed back.

    For housekeeping a job makes necessary but its caller need not wait for
    (mailsuite.store.spares refills the file a delivery used): it runs in the
    thread that is already awake, while the reactor thread takes the result.
    Outside a pool job (the CLI's inline runner, tests) it runs at once.
    """
    pending = getattr(_job, "after", None)
    if pending is None:
        work()
    else:
        pending.append(work)


class LeanThreadPool:
    """Runs blocking callables on up to ``maxthreads`` threads; see the module notes."""

    log = Logger()

    def __init__(self, maxthreads: int, name: str) -> None:
        self.max = maxthreads
        self.name = name
        self.started = False
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Accept jobs from now on (threads start when jobs arrive)."""
        self.started = True

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None] | None, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run ``func(*args, **kw)`` in a pool thread, then ``onResult(True, result)`` or ``onResult(False, Failure)`` there."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                spawn = False
            else:
                spawn = len(self._threads) < self.max
                if spawn:
                    thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                    self._threads.append(thread)
        self._jobs.put((onResult, func, args, kw))
        if spawn:
            thread.start()

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """Run ``func`` in a pool thread, ignoring its result."""
        self.callInThreadWithCallback(None, func, *args, **kw)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            on_result, func, args, kw = job
            after: list[Callable[[], Any]] = []
            _job.after = after
            try:
                result, ok = func(*args, **kw), True
            except BaseException:
                result, ok = Failure(), False
            _job.after = None
            if on_result is not None:
                try:
                    on_result(ok, result)
                except BaseException:
                    self.log.failure("thread pool {pool}: result callback failed", pool=self.name)
            elif not ok:
                self.log.failure("thread pool {pool}: job failed", result, pool=self.name)
            del job, on_result, func, args, kw, result
            for work in after:
                try:
                    work()
                except BaseException:
                    self.log.failure("thread pool {pool}: work after a job failed", pool=self.name)
            del after
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        """Finish the queued jobs, then end every thread (blocks until they have ended)."""
        self.started = False
        with self._lock:
            threads = list(self._threads)
            self._threads.clear()
            self._idle = 0
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            thread.join()


class BlockingRunner(Protocol):
    """What parts are given to run blocking work: :class:`Runner` on a pool, or an inline one in tests."""

    def run(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_T]:
        """``f(*args, **kwargs)`` off the caller's path; its outcome as a Deferred."""
        ...


class Runner:
    """Runs blocking work of one part in its pool; results come back as Deferreds on the reactor."""

    def __init__(self, reactor: Any, pool: Any) -> None:
        self.reactor = reactor
        self.pool = pool

    def run(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_T]:
        """``f(*args, **kwargs)`` in the pool; its result or exception comes back on the reactor."""
        return deferToThreadPool(self.reactor, self.pool, f, *args, **kwargs)
