"""The store on the real reactor and thread pool: concurrent sessions in one process stay consistent."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from mailsuite.interfaces import Delivery
from mailsuite.store import IncomingMessage, MaildirStore, Runner

ALICE = "alice@example.test"


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_and_sessions_in_one_process(tmp_path):
    """40 concurrent deliveries while two sessions flag, expunge and refresh: every UID unique, nothing lost."""
    from twisted.internet import reactor

    pool = ThreadPool(minthreads=0, maxthreads=8, name="test-store")
    pool.start()
    store = MaildirStore(tmp_path / "mail", runner=Runner(reactor, pool), clock=reactor)
    try:
        mailbox = store.user_mailbox(ALICE)
        a = await mailbox.open_folder("INBOX")
        b = await mailbox.open_folder("INBOX")

        async def deliver(i: int) -> None:
            (res,) = await store.deliver(IncomingMessage.from_bytes(f"Subject: {i}\r\n\r\n".encode()), [Delivery(ALICE)])
            assert res.error is None

        async def churn(folder, rounds: int) -> list[int]:
            removed = []
            for _ in range(rounds):
                await folder.refresh()
                uids = [m.uid for m in folder.messages()]
                if len(uids) >= 2:
                    await folder.store_flags(uids[:1], ["\\Deleted"], "add")
                    removed += await folder.expunge(uids[:1])
                    await folder.store_flags(uids[1:2], ["\\Seen", "Busy"], "add")
            return removed

        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(deliver(i)) for i in range(40)]
            + [defer.Deferred.fromCoroutine(churn(a, 10)), defer.Deferred.fromCoroutine(churn(b, 10))],
            consumeErrors=True,
        )
        removed = results[-2] + results[-1]
        assert len(removed) == len(set(removed))
        check = await mailbox.open_folder("INBOX", read_only=True)
        subjects = set()
        heads = await check.read_headers([info.uid for info in check.messages()])
        for info in check.messages():
            subjects.add(heads[info.uid].splitlines()[0])
        assert len(subjects) == len(check.messages()) == 40 - len(removed)
        assert not set(removed) & {m.uid for m in check.messages()}
        assert check.uidnext == 41
        for folder in (a, b):
            await folder.refresh()
            assert [m.uid for m in folder.messages()] == [m.uid for m in check.messages()]
            assert [m.flags for m in folder.messages()] == [m.flags for m in check.messages()]
    finally:
        store.close()
        pool.stop()
