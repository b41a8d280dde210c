"""mailsuite.threads.LeanThreadPool: what deferToThreadPool and the services rely on."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from twisted.internet.threads import deferToThreadPool

from mailsuite.threads import LeanThreadPool, after_result


class QueueReactor:
    """Just enough reactor for deferToThreadPool: callFromThread queues calls for the test thread."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self.calls.put((f, args, kw))

    def result(self, d: Any, timeout: float = 10.0) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        deadline = time.monotonic() + timeout
        while not box:
            f, args, kw = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            f(*args, **kw)
        return box[0]


def test_results_and_errors_come_back_through_deferreds() -> None:
    reactor, pool = QueueReactor(), LeanThreadPool(4, name="t")
    pool.start()
    try:
        assert reactor.result(deferToThreadPool(reactor, pool, lambda a, b=0: a + b, 2, b=3)) == 5
        failure = reactor.result(deferToThreadPool(reactor, pool, lambda: 1 / 0))
        assert failure.check(ZeroDivisionError)
        assert reactor.result(deferToThreadPool(reactor, pool, threading.current_thread)).name.startswith("t-")
    finally:
        pool.stop()


def test_never_more_threads_than_max_and_every_job_runs() -> None:
    reactor, pool = QueueReactor(), LeanThreadPool(3, name="t")
    pool.start()
    running, peak, lock = [0], [0], threading.Lock()

    def job(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return i

    try:
        deferreds = [deferToThreadPool(reactor, pool, job, i) for i in range(20)]
        assert [reactor.result(d) for d in deferreds] == list(range(20))
        assert peak[0] == 3
        assert len(pool._threads) == 3
        # threads are reused: a later burst starts none
        assert [reactor.result(deferToThreadPool(reactor, pool, job, i)) for i in range(5)] == list(range(5))
        assert len(pool._threads) == 3
    finally:
        pool.stop()


def test_stop_finishes_queued_jobs_and_ends_the_threads() -> None:
    pool = LeanThreadPool(2, name="t")
    pool.start()
    done: list[int] = []
    for i in range(10):
        pool.callInThread(lambda i=i: (time.sleep(0.005), done.append(i)))
    threads = list(pool._threads)
    pool.stop()
    assert sorted(done) == list(range(10))
    assert not pool.started and all(not t.is_alive() for t in threads)


def test_work_left_for_after_the_result_runs_in_the_same_thread_once_the_result_is_handed_back() -> None:
    """after_result: the caller gets the result first; the work runs after, in the job's thread; a failure there is logged, not raised."""
    pool = LeanThreadPool(2, "t")
    pool.start()
    events: list[tuple[str, object]] = []
    done = threading.Event()

    def job() -> str:
        after_result(lambda: events.append(("after", threading.get_ident())))
        after_result(lambda: 1 / 0)
        after_result(done.set)
        events.append(("job", threading.get_ident()))
        return "result"

    pool.callInThreadWithCallback(lambda ok, value: events.append(("result", value)), job)
    assert done.wait(5)
    pool.stop()
    assert [e[0] for e in events] == ["job", "result", "after"]
    assert events[0][1] == events[2][1] and events[1][1] == "result"
    ran: list[int] = []
    after_result(lambda: ran.append(1))  # outside a pool job: at once
    assert ran == [1]


def test_every_part_that_blocks_owns_a_named_lean_pool_its_service_runs(tmp_path: Any) -> None:
    """One pool kind (issue 16): the store, auth, queue and mail-authentication parts each get
    their own named LeanThreadPool, sized by the part's constant, which their service starts
    and stops; nothing uses the reactor's pool or Twisted's ThreadPool."""
    from twisted.internet import task

    from mailsuite import config as config_module
    from mailsuite.auth.service import POOL_THREADS as AUTH_POOL_THREADS
    from mailsuite.auth.service import open_auth
    from mailsuite.mailauth.service import THREADS as MAILAUTH_THREADS
    from mailsuite.mailauth.service import open_mailauth
    from mailsuite.queue.service import QUEUE_THREADS, open_queue
    from mailsuite.resolver import CachingResolver
    from mailsuite.service import ServerContext
    from mailsuite.store.service import STORE_THREADS, open_store
    from tests.conftest import render_config

    clock = task.Clock()
    context = ServerContext(config=config_module.parse(render_config(tmp_path / "data", {})), reactor=clock)
    context.resolver = CachingResolver(clock, "127.0.0.1:53")
    store_service = open_store(context)
    auth_service = open_auth(context)
    queue_service = open_queue(context)
    mailauth_service = open_mailauth(context)
    pools = {
        "store": (store_service.pool, STORE_THREADS),
        "auth": (auth_service.pool, AUTH_POOL_THREADS),  # the hashing slots plus one for directory lookups
        "queue": (queue_service.pool, QUEUE_THREADS),
        "mailauth": (mailauth_service.mailauth.pool, MAILAUTH_THREADS),
    }
    for part, (pool, size) in pools.items():
        assert type(pool) is LeanThreadPool, part
        assert pool.name == f"mailsuite-{part}" and pool.max == size, part
    assert context.store.runner.pool is store_service.pool
    assert STORE_THREADS == 24  # concurrent fsyncs commit together (see store/service.py)
    store_service.startService()
    mailauth_service.startService()
    assert store_service.pool.started and mailauth_service.mailauth.pool.started
    mailauth_service.stopService()
    store_service.stopService()
    assert not store_service.pool.started and not mailauth_service.mailauth.pool.started
