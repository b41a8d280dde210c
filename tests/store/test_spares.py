"""Spare message files: deliveries fill ready-made empty files instead of creating their own."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

import pytest

from mailsuite.interfaces import Delivery
from mailsuite.store.spares import SparePool, open_spare

from .conftest import deliver_bytes, make_store, msg, result

ALICE = "alice@example.test"
BOB = "bob@example.test"


def _pool(store, size: int = 4, directory: str | None = None) -> SparePool:
    pool = SparePool(directory or os.path.join(store.root, ".spare"), size)
    pool.start()
    store.spares = pool
    return pool


def _spares_on_disk(pool: SparePool) -> set[str]:
    return {os.path.join(pool.directory, n) for n in os.listdir(pool.directory)}


def test_start_removes_leftovers_and_fills(tmp_path: Path) -> None:
    """A crashed server's spares are removed; the pool starts full of empty private files."""
    directory = tmp_path / "spare"
    directory.mkdir()
    (directory / "left-by-a-crash").write_bytes(b"")
    pool = SparePool(str(directory), 5)
    pool.start()
    try:
        files = _spares_on_disk(pool)
        assert len(files) == 5 and str(directory / "left-by-a-crash") not in files
        for path in files:
            st = os.stat(path)
            assert st.st_size == 0 and st.st_mode & 0o777 == 0o600
    finally:
        pool.stop()
    assert os.listdir(directory) == []


def test_take_hands_out_each_file_once_and_fill_tops_the_pool_up(tmp_path: Path) -> None:
    """Concurrent takers never get the same file; an empty pool answers None; fill() makes up what was taken."""
    pool = SparePool(str(tmp_path / "spare"), 8)
    pool.start()
    try:
        taken: list[str | None] = []
        lock = threading.Lock()

        def taker() -> None:
            for _ in range(4):
                path = pool.take()
                with lock:
                    taken.append(path)

        threads = [threading.Thread(target=taker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [p for p in taken if p is not None]
        assert len(got) == len(set(got)) == 8 and taken.count(None) == 8
        assert pool.fill() == 8
        assert len(_spares_on_disk(pool) - set(got)) == 8
    finally:
        pool.stop()
    assert pool.fill() == 0  # a stopped pool makes nothing


def test_open_spare_refuses_anything_but_an_empty_regular_file(tmp_path: Path) -> None:
    """A spare that was written to, replaced by a link or a directory, or removed is not used."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fd = open_spare(str(empty))
    assert fd is not None
    os.close(fd)
    written = tmp_path / "written"
    written.write_bytes(b"x")
    assert open_spare(str(written)) is None
    os.symlink(empty, tmp_path / "link")
    assert open_spare(str(tmp_path / "link")) is None
    (tmp_path / "dir").mkdir()
    assert open_spare(str(tmp_path / "dir")) is None
    assert open_spare(str(tmp_path / "gone")) is None
    os.link(empty, tmp_path / "second-name")
    assert open_spare(str(empty)) is None  # two names: someone else holds it too


def test_delivery_uses_a_spare_and_the_mailbox_gets_exactly_the_message(tmp_path: Path) -> None:
    """The spare becomes the message in new/ (nothing left in tmp/ or in the pool directory for it)."""
    store = make_store(tmp_path / "mail")
    pool = _pool(store)
    try:
        before = _spares_on_disk(pool)
        deliver_bytes(store, ALICE, msg(1), prefix=b"Delivered-To: alice@example.test\r\n")
        new = tmp_path / "mail" / "example.test" / "alice" / "new"
        (name,) = os.listdir(new)
        assert (new / name).read_bytes() == b"Delivered-To: alice@example.test\r\n" + msg(1)
        assert os.listdir(new.parent / "tmp") == []
        used = before - _spares_on_disk(pool)
        assert len(used) == 1
        assert os.stat(new / name).st_ino not in {os.stat(p).st_ino for p in _spares_on_disk(pool)}
    finally:
        pool.stop()


def test_delivery_to_several_mailboxes_with_one_spare(tmp_path: Path) -> None:
    """Copies with equal header prefixes share the spare's inode by hard links, as with tmp/ files."""
    store = make_store(tmp_path / "mail")
    pool = _pool(store)
    try:
        message = store.new_incoming()
        message.write(msg(2))
        message.finish()
        results = result(store.deliver(message, [Delivery(ALICE, "INBOX", b""), Delivery(BOB, "INBOX", b"")]))
        assert [r.error for r in results] == [None, None]
        for user in ("alice", "bob"):
            new = tmp_path / "mail" / "example.test" / user / "new"
            (name,) = os.listdir(new)
            assert (new / name).read_bytes() == msg(2)
    finally:
        pool.stop()


def test_a_spare_removed_behind_the_pool_s_back_does_not_fail_delivery(tmp_path: Path) -> None:
    """Someone cleaned the spare directory: deliveries create their own files, as without a pool."""
    store = make_store(tmp_path / "mail")
    pool = _pool(store, size=2)
    try:
        for path in _spares_on_disk(pool):
            os.unlink(path)
        deliver_bytes(store, ALICE, msg(3))
        new = tmp_path / "mail" / "example.test" / "alice" / "new"
        assert [(new / n).read_bytes() for n in os.listdir(new)] == [msg(3)]
    finally:
        pool.stop()


def _other_file_system(tmp_path: Path) -> Path | None:
    """A writable directory on another file system than ``tmp_path`` (a tmpfs), if this machine has one."""
    for candidate in (Path("/dev/shm"), Path("/run/shm"), Path("/run")):
        try:
            if candidate.is_dir() and os.access(candidate, os.W_OK) and os.stat(candidate).st_dev != os.stat(tmp_path).st_dev:
                return candidate
        except OSError:
            continue
    return None


def test_spares_on_another_file_system_are_copied_into_the_mailbox_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rename() cannot cross file systems (EXDEV): the delivery copies the spare's bytes into tmp/ and renames that.

    With a tmpfs at hand the spares really live on another file system; on a
    machine without one, rename() out of the spare directory is made to fail
    with EXDEV, so the fallback is exercised either way.
    """
    store = make_store(tmp_path / "mail")
    other = _other_file_system(tmp_path)
    spare_dir = tempfile.mkdtemp(dir=other) if other is not None else str(tmp_path / "spare")
    if other is None:
        real_rename = os.rename

        def rename(src: str, dst: str) -> None:
            if str(src).startswith(spare_dir + os.sep):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)
    pool = _pool(store, 2, spare_dir)
    try:
        before = _spares_on_disk(pool)
        deliver_bytes(store, ALICE, msg(5), prefix=b"X-Test: 1\r\n")
        new = tmp_path / "mail" / "example.test" / "alice" / "new"
        (name,) = os.listdir(new)
        assert (new / name).read_bytes() == b"X-Test: 1\r\n" + msg(5)
        assert os.listdir(new.parent / "tmp") == []
        assert len(before - _spares_on_disk(pool)) == 1  # the used spare was removed, not left behind
    finally:
        pool.stop()
        os.rmdir(spare_dir)


def test_empty_pool_falls_back_to_the_mailbox_tmp(tmp_path: Path) -> None:
    """With every spare taken, a delivery creates its file in the mailbox's tmp/ as before."""
    store = make_store(tmp_path / "mail")
    pool = _pool(store, 0)
    try:
        deliver_bytes(store, ALICE, msg(4))
        new = tmp_path / "mail" / "example.test" / "alice" / "new"
        assert [(new / n).read_bytes() for n in os.listdir(new)] == [msg(4)]
    finally:
        pool.stop()


def test_a_pool_that_cannot_make_files_says_so_once_and_deliveries_go_on(tmp_path: Path) -> None:
    """Spare directory gone (or disk full): one warning for the whole stretch, and every delivery still succeeds."""
    from twisted.logger import globalLogPublisher

    store = make_store(tmp_path / "mail")
    pool = _pool(store, 2)
    warnings: list[dict] = []
    observer = warnings.append
    globalLogPublisher.addObserver(observer)
    try:
        for path in _spares_on_disk(pool):
            os.unlink(path)
        os.rmdir(pool.directory)
        for n in range(4):
            deliver_bytes(store, ALICE, msg(n))
        new = tmp_path / "mail" / "example.test" / "alice" / "new"
        assert len(os.listdir(new)) == 4
        assert len([e for e in warnings if "spare message file" in e.get("log_format", "")]) == 1
    finally:
        globalLogPublisher.removeObserver(observer)
        pool.stop()
