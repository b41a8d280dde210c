"""Change notification (IMAP IDLE): this process at once, other processes within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, task
from twisted.python.threadpool import ThreadPool

from mailsuite.store import MaildirStore, Runner

from .conftest import deliver_bytes, msg, result

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.test"


def test_changes_made_here_are_notified_on_the_next_turn(any_store, clock):
    """Delivery, flag changes and expunges through this store wake the watchers immediately."""
    deliver_bytes(any_store, ALICE, msg(1))
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    calls = []
    unsubscribe = folder.watch(lambda: calls.append(1))
    deliver_bytes(any_store, ALICE, msg(2))
    clock.advance(0)
    assert calls == [1]
    result(folder.store_flags([1], ["\\Deleted"], "add"))
    clock.advance(0)
    result(folder.expunge())
    clock.advance(0)
    assert len(calls) == 3
    unsubscribe()
    deliver_bytes(any_store, ALICE, msg(3))
    clock.advance(1)
    assert len(calls) == 3


def test_changes_by_other_programs_are_found_by_polling(store, clock, tmp_path):
    """A file dropped into new/ or a rename in cur/ by another program wakes watchers within a poll."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    calls = []
    folder.watch(lambda: calls.append(clock.seconds()))
    clock.advance(1)
    assert calls == []  # nothing changed: no wake-ups
    inbox = tmp_path / "mail" / "example.test" / "alice"
    (inbox / "new" / "1700000000.ext.host").write_bytes(b"Subject: x\r\n\r\n")
    clock.advance(0.25)
    assert len(calls) == 1
    clock.advance(0.25)  # one follow-up, for a second change hidden in the same mtime tick
    assert len(calls) == 2
    clock.advance(1)
    assert len(calls) == 2
    change = result(folder.refresh())
    assert [m.uid for m in change.added] == [2]
    for _ in range(4):  # the refresh itself moved files (\\Recent) and wrote the log: settle
        clock.advance(0.25)
    seen = len(calls)
    name = sorted(os.listdir(inbox / "cur"))[0]
    os.rename(inbox / "cur" / name, inbox / "cur" / (name.split(":2,")[0] + ":2,S"))
    clock.advance(0.25)
    assert len(calls) == seen + 1
    folder.close()
    (inbox / "new" / "1700000001.ext.host").write_bytes(b"Subject: y\r\n\r\n")
    for _ in range(4):
        clock.advance(0.25)
    assert len(calls) == seen + 1  # closed sessions are not called


def test_a_failing_callback_does_not_stop_the_others(any_store, clock):
    """One broken IDLE session must not silence the rest."""
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    calls = []

    def broken() -> None:
        raise RuntimeError("boom")

    folder.watch(broken)
    folder.watch(lambda: calls.append(1))
    deliver_bytes(any_store, ALICE, msg(1))
    clock.advance(0)
    assert calls == [1]


DELIVER = (
    "import sys; from twisted.internet import task;"
    "from mailsuite.store import MaildirStore, InlineRunner, IncomingMessage;"
    "from mailsuite.interfaces import Delivery;"
    "s = MaildirStore(sys.argv[1], runner=InlineRunner(), clock=task.Clock());"
    "s.deliver(IncomingMessage.from_bytes(b'Subject: from another process\\r\\n\\r\\nhi\\r\\n'), [Delivery('alice@example.test')])"
)


@pytest_twisted.ensureDeferred
async def test_delivery_by_another_process_wakes_an_idle_session_within_a_second(tmp_path):
    """The real reactor and thread pool: a second process delivers; the watcher fires in under a second."""
    from twisted.internet import reactor

    pool = ThreadPool(minthreads=0, maxthreads=4, name="test-store")
    pool.start()
    store = MaildirStore(tmp_path / "mail", runner=Runner(reactor, pool), clock=reactor)
    try:
        folder = await store.user_mailbox(ALICE).open_folder("INBOX")
        woke: defer.Deferred[float] = defer.Deferred()
        folder.watch(lambda: woke.called or woke.callback(time.monotonic()))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        await task.deferLater(reactor, 0.3, lambda: None)
        proc = subprocess.run([sys.executable, "-c", DELIVER, str(tmp_path / "mail")], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        done = time.monotonic()
        woke.addTimeout(2, reactor)
        assert await woke - done < 1.0
        change = await folder.refresh()
        assert [m.uid for m in change.added] == [1]
        found = await folder.map_messages([1], lambda uid, data: bytes(data))
        assert found[1].startswith(b"Subject: from another process")
        folder.close()
    finally:
        store.close()
        pool.stop()
