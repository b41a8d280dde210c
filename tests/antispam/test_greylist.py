"""The greylisting state machine (RFC 6647) on a task.Clock, and its SQLite journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, task

from mailsuite.antispam.greylist import Greylist, Journal, network_of
from mailsuite.config import GreylistConfig

CONFIG = GreylistConfig(enabled=True, delay=300.0, retry_window=3600.0, expire=86400.0, auto_allow=2)


def inline(f: Callable[[], Any]) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f)


def test_networks_are_slash_24_and_slash_64() -> None:
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_of("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert network_of("192.0.2.77", 32) == "192.0.2.77/32"


def test_new_triplet_waits_the_delay_then_passes_and_is_remembered() -> None:
    clock = task.Clock()
    clock.advance(1_000_000)
    grey = Greylist(clock, CONFIG)
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 300.0
    clock.advance(100)
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 200.0  # too early: still refused
    clock.advance(200)
    assert grey.check("192.0.2.9", "A@X.test", "b@Y.TEST") == 0  # same /24, case ignored
    clock.advance(80_000)
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 0  # passed triplets stay
    assert grey.check("192.0.2.1", "other@x.test", "b@y.test") == 300.0  # another sender is a new triplet
    assert grey.check("198.51.100.1", "a@x.test", "b@y.test") == 300.0  # another network too


def test_a_refused_triplet_not_retried_in_time_starts_over_and_passed_ones_expire() -> None:
    clock = task.Clock()
    grey = Greylist(clock, CONFIG)
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 300.0
    clock.advance(3601)  # beyond retry_window
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 300.0
    clock.advance(300)
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 0
    clock.advance(86401)  # unused for longer than expire
    assert grey.sweep() >= 1
    assert grey.check("192.0.2.1", "a@x.test", "b@y.test") == 300.0


def test_a_client_that_passed_auto_allow_times_is_accepted_at_once() -> None:
    clock = task.Clock()
    grey = Greylist(clock, CONFIG)
    for recipient in ("1@y.test", "2@y.test"):
        grey.check("192.0.2.1", "a@x.test", recipient)
    clock.advance(300)
    for recipient in ("1@y.test", "2@y.test"):
        assert grey.check("192.0.2.1", "a@x.test", recipient) == 0
    assert grey.check("192.0.2.200", "new@z.test", "3@y.test") == 0  # the /24 has proven it retries


def test_state_survives_a_new_greylist_on_the_same_file(tmp_path: Path) -> None:
    clock = task.Clock()
    path = tmp_path / "greylist.sqlite3"
    journal = Journal(path, inline)
    grey = Greylist(clock, CONFIG, journal)
    grey.check("192.0.2.1", "a@x.test", "pending@y.test")
    grey.check("192.0.2.1", "a@x.test", "passed@y.test")
    clock.advance(300)
    assert grey.check("192.0.2.1", "a@x.test", "passed@y.test") == 0
    journal.close()
    clock.advance(10)
    again = Greylist(clock, CONFIG, Journal(path, inline))
    assert again.check("192.0.2.1", "a@x.test", "passed@y.test") == 0
    assert again.check("192.0.2.1", "a@x.test", "pending@y.test") == 0  # its first attempt was 310 s ago
    assert again.clients["192.0.2.0/24"].passes == 2


def test_writes_are_coalesced_while_one_runs(tmp_path: Path) -> None:
    """Changes made while a write is under way go in one later transaction."""
    runs: list[defer.Deferred[Any]] = []
    jobs: list[Callable[[], Any]] = []

    def held(f: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        runs.append(d)
        jobs.append(f)
        return d

    clock = task.Clock()
    journal = Journal(tmp_path / "g.sqlite3", held)
    grey = Greylist(clock, CONFIG, journal)
    for i in range(10):
        grey.check("192.0.2.1", "a@x.test", f"{i}@y.test")
    assert len(jobs) == 1
    flushed = journal.flushed()
    jobs[0]()
    runs[0].callback(None)
    assert len(jobs) == 2  # the nine others, together
    assert not flushed.called
    jobs[1]()
    runs[1].callback(None)
    assert flushed.called
    assert len(Greylist(clock, CONFIG, Journal(tmp_path / "g.sqlite3", inline)).triplets) == 10
