"""Fixtures for the store tests: a real Maildir store in tmp_path.

Most tests run the store with :class:`InlineRunner` (disk work done in the
calling thread) and a :class:`task.Clock`, so every Deferred has fired when
the call returns: deterministic and fast, with the real files and fsyncs.
The threaded path is covered by the tests marked for pytest-twisted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from mailsuite.store import InlineRunner, MaildirStore, QuotaLimits


def result(d: Any) -> Any:
    """The result of an already-fired Deferred (raises its exception on failure)."""
    if not isinstance(d, defer.Deferred):
        return d
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def octets(folder: Any, uid: int) -> bytes:
    """A stored message read through IFolder.map_messages (NoSuchMessage when it is gone)."""
    from mailsuite.errors import NoSuchMessage

    found = result(folder.map_messages([uid], lambda _uid, data: bytes(data)))
    if uid not in found:
        raise NoSuchMessage()
    return found[uid]


def run(coro: Any) -> Any:
    """Run an async function whose awaits all fire synchronously (InlineRunner)."""
    return result(defer.Deferred.fromCoroutine(coro))


def make_store(root: Path, clock: Any = None, **kw: Any) -> MaildirStore:
    """A store with synchronous disk work under ``root``."""
    return MaildirStore(root, runner=InlineRunner(), clock=clock or task.Clock(), **kw)


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def store(tmp_path: Path, clock: task.Clock) -> MaildirStore:
    return make_store(tmp_path / "mail", clock)


def deliver_bytes(store: MaildirStore, address: str, data: bytes, folder: str = "INBOX", prefix: bytes = b"") -> None:
    """Deliver one message to one mailbox and fail the test on a per-delivery error."""
    from mailsuite.interfaces import Delivery

    message = store.new_incoming()
    message.write(data)
    message.finish()
    results = result(store.deliver(message, [Delivery(address, folder, prefix)]))
    message.discard()
    assert results[0].error is None, results[0].error


def msg(n: int | str, body: bytes = b"hello\r\n") -> bytes:
    """A small RFC 5322 message with a recognisable Subject."""
    return b"From: a@example.test\r\nTo: b@example.test\r\nSubject: message " + str(n).encode() + b"\r\n\r\n" + body


__all__ = ["QuotaLimits", "deliver_bytes", "make_store", "msg", "octets", "result", "run"]


@pytest.fixture(params=["maildir", "memory"])
def any_store(request: Any, tmp_path: Path, clock: task.Clock) -> Any:
    """Contract tests run against the Maildir store and the in-memory fake alike."""
    if request.param == "maildir":
        return make_store(tmp_path / "mail", clock)
    from mailsuite.store.memory import MemoryStore

    return MemoryStore(clock)
