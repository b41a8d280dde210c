"""open_store: the server part that builds the store from the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task

from mailsuite.config import parse
from mailsuite.errors import QuotaExceeded
from mailsuite.interfaces import Delivery, UserRecord
from mailsuite.service import ServerContext
from mailsuite.store import IncomingMessage, InlineRunner, MaildirStore
from mailsuite.store.service import open_store

from .conftest import result


class Directory:
    """A user directory with one per-user quota override."""

    def get_user(self, address: str) -> defer.Deferred[UserRecord | None]:
        if address == "big@example.test":
            return defer.succeed(UserRecord(address, quota_bytes=0, quota_messages=0))
        if address == "small@example.test":
            return defer.succeed(UserRecord(address, quota_messages=1))
        return defer.succeed(None)


def test_open_store_uses_data_root_and_quota_defaults(tmp_path: Path):
    """context.store lives under <data_root>/mail with the configured default quota."""
    config = parse(f'data_root = "{tmp_path}"\n[quota]\nbytes = 1000\nmessages = 5\n')
    context = ServerContext(config=config, reactor=task.Clock())
    context.directory = Directory()
    service = open_store(context)
    store = context.store
    assert isinstance(store, MaildirStore)
    assert store.root == str(tmp_path / "mail")
    assert (store.default_quota.bytes, store.default_quota.messages) == (1000, 5)
    assert service.pool.started is False  # started with the server, not at build time


def _opened(tmp_path: Path, **quota: int) -> tuple[Any, MaildirStore]:
    """(store service, store) as the server opens them, with disk work run synchronously for the test."""
    config = parse(f'data_root = "{tmp_path}"\n[quota]\n' + "".join(f"{k} = {v}\n" for k, v in quota.items()))
    context = ServerContext(config=config, reactor=task.Clock())
    context.directory = Directory()
    service = open_store(context)
    store = context.store
    store.runner = InlineRunner()
    return service, store


def _store(tmp_path: Path, **quota: int) -> MaildirStore:
    return _opened(tmp_path, **quota)[1]


def test_quota_default_and_per_user_override(tmp_path: Path):
    """The default byte quota applies to users without an override; 0 in the directory means unlimited."""
    store = _store(tmp_path, bytes=150)
    big = IncomingMessage.from_bytes(b"x" * 100)
    results = result(store.deliver(big, [Delivery("user@example.test"), Delivery("big@example.test"), Delivery("small@example.test")]))
    assert [r.error for r in results] == [None, None, None]
    again = result(store.deliver(big, [Delivery("user@example.test"), Delivery("big@example.test"), Delivery("small@example.test")]))
    assert isinstance(again[0].error, QuotaExceeded)
    assert again[0].error.code == 552 and again[0].error.enhanced == "5.2.2"
    assert again[1].error is None
    assert isinstance(again[2].error, QuotaExceeded)  # message quota 1 overrides
    with pytest.raises(QuotaExceeded):
        result(store.check_quota("user@example.test", 100))
    result(store.check_quota("user@example.test", 10))
    assert result(store.user_mailbox("user@example.test").quota_usage()) == (100, 1)


def test_quota_applies_to_append_and_copy(tmp_path: Path):
    """APPEND and COPY are refused once the user is over quota."""
    store = _store(tmp_path, messages=2)
    mailbox = store.user_mailbox("user@example.test")
    assert result(mailbox.append("INBOX", IncomingMessage.from_bytes(b"a\r\n"))) == 1
    assert result(mailbox.append("INBOX", IncomingMessage.from_bytes(b"b\r\n"))) == 2
    with pytest.raises(QuotaExceeded):
        result(mailbox.append("INBOX", IncomingMessage.from_bytes(b"c\r\n")))
    folder = result(mailbox.open_folder("INBOX"))
    with pytest.raises(QuotaExceeded):
        result(folder.copy([1], "Archive"))


def test_the_server_keeps_spare_files_ready_and_removes_them_at_stop(tmp_path: Path):
    """Started with the server: the pool is full, a delivery takes a spare; stopping leaves no spare behind."""
    import os

    from mailsuite.store.service import SPARE_FILES

    service, store = _opened(tmp_path)
    service.startService()
    spare_dir = tmp_path / "mail" / ".spare"
    try:
        before = set(os.listdir(spare_dir))
        assert len(before) == SPARE_FILES
        message = IncomingMessage.from_bytes(b"Subject: x\r\n\r\nbody\r\n")
        (delivered,) = result(store.deliver(message, [Delivery("u@example.test", "INBOX", b"")]))
        assert delivered.error is None
        assert len(before - set(os.listdir(spare_dir))) == 1
        new = tmp_path / "mail" / "example.test" / "u" / "new"
        assert [(new / n).read_bytes() for n in os.listdir(new)] == [b"Subject: x\r\n\r\nbody\r\n"]
    finally:
        service.stopService()
    assert os.listdir(spare_dir) == [] and store.spares is None
