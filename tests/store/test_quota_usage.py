"""Quota usage: counted from the Maildir, kept up to date by the store's own deliveries without recounting."""

from __future__ import annotations

import os
from pathlib import Path

from mailsuite.store.quota import UsageCounter


class CountingUsage(UsageCounter):
    """The real counter, noting which directories it counted entry by entry."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.counted: list[str] = []

    def _count(self, path: str) -> tuple[int, int]:
        self.counted.append(path)
        return super()._count(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _maildir(root: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def _settle(directory: Path) -> None:
    """Age a directory's mtime past UsageCounter.SETTLE (as if the last change were long ago)."""
    st = os.stat(directory)
    os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns - 10_000_000_000))


def _put(directory: Path, name: str, size: int) -> None:
    (directory / f"{name},S={size}").write_bytes(b"x" * size)


def test_own_deliveries_keep_the_figures_without_a_recount(tmp_path: Path) -> None:
    """A delivery reported with added() moves the figures on; the directory is not listed again."""
    root = _maildir(tmp_path / "user")
    new = root / "new"
    _put(new, "1.a", 100)
    _settle(new)
    clock = FakeClock()
    usage = CountingUsage(clock)
    assert usage.usage(str(root)) == (100, 1)
    usage.counted.clear()
    for n in range(5):
        before = os.stat(new)
        _put(new, f"2.{n}", 10)
        usage.added(str(new), 10, before)
    assert usage.usage(str(root)) == (150, 6)
    assert str(new) not in usage.counted


def test_a_change_nobody_reported_is_counted(tmp_path: Path) -> None:
    """Another program (or an IMAP move) changed new/: the next check counts it again."""
    root = _maildir(tmp_path / "user")
    new = root / "new"
    _put(new, "1.a", 100)
    _settle(new)
    usage = CountingUsage(FakeClock())
    assert usage.usage(str(root)) == (100, 1)
    _put(new, "1.b", 7)  # not reported
    before = os.stat(new)
    _put(new, "2.a", 10)
    usage.added(str(new), 10, before)  # reported, but the figures were already out of date: dropped
    assert usage.usage(str(root)) == (117, 3)
    os.unlink(new / "1.a,S=100")
    assert usage.usage(str(root)) == (17, 2)


def test_figures_kept_by_added_are_recounted_in_full_every_recount_interval(tmp_path: Path) -> None:
    """A change hidden in the same clock tick (mtime unchanged) is repaired by the periodic full count."""
    root = _maildir(tmp_path / "user")
    new = root / "new"
    _settle(new)
    clock = FakeClock()
    usage = CountingUsage(clock)
    assert usage.usage(str(root)) == (0, 0)
    before = os.stat(new)
    _put(new, "1.a", 10)
    usage.added(str(new), 10, before)
    hidden = os.stat(new)
    _put(new, "1.b", 5)  # someone else, "in the same tick": the directory's mtime does not move
    os.utime(new, ns=(hidden.st_atime_ns, hidden.st_mtime_ns))
    assert usage.usage(str(root)) == (10, 1)  # trusted for now
    clock.now += UsageCounter.RECOUNT + 1
    assert usage.usage(str(root)) == (15, 2)
    assert str(new) in usage.counted


def test_quota_deliveries_do_not_recount_new(tmp_path: Path) -> None:
    """Through the store: with a quota, a stream of deliveries to one mailbox lists its new/ once, not per message."""
    from mailsuite.store.quota import QuotaLimits

    from .conftest import deliver_bytes, make_store, msg

    store = make_store(tmp_path / "mail", default_quota=QuotaLimits(10**9, 10**6))
    counter = CountingUsage(FakeClock())
    store.usage_counter = counter
    for n in range(30):
        deliver_bytes(store, "u@example.test", msg(n))
    new = str(tmp_path / "mail" / "example.test" / "u" / "new")
    assert counter.counted.count(new) <= 2  # the first count (and at most one while the directory was still settling)
    assert counter.usage(str(tmp_path / "mail" / "example.test" / "u"))[1] == 30
