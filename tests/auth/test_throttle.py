"""The login throttle on a task.Clock: free failures, growing delays, IP block, expiry."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from zope.interface.verify import verifyObject

from mailsuite.auth import throttle as throttle_module
from mailsuite.auth.throttle import KNOWN_SECONDS, LoginThrottle
from mailsuite.interfaces import ILoginThrottle


def make(clock: task.Clock) -> LoginThrottle:
    return LoginThrottle(clock, free_failures=3, max_failures=6, max_delay=4.0, block_seconds=100.0)


def test_implements_the_interface() -> None:
    assert verifyObject(ILoginThrottle, make(task.Clock()))


def test_free_failures_then_doubling_delays_capped() -> None:
    """No delay for the first failures, then 0.5, 1, 2, 4, 4 seconds."""
    clock = task.Clock()
    throttle = LoginThrottle(clock, free_failures=3, max_failures=100, max_delay=4.0, block_seconds=100.0)
    delays = []
    for _ in range(8):
        throttle.record_failure("192.0.2.1", "alice@example.test")
        delays.append(throttle.delay_for("192.0.2.1", "alice@example.test"))
    assert delays == [0, 0, 0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_ip_is_blocked_after_max_failures_until_block_expires() -> None:
    """The sixth failure blocks the IP for block_seconds; other IPs are unaffected."""
    clock = task.Clock()
    throttle = make(clock)
    for i in range(6):
        assert not throttle.is_blocked("192.0.2.1", None)
        throttle.record_failure("192.0.2.1", f"user{i}@example.test")
    assert throttle.is_blocked("192.0.2.1", "anyone@example.test")
    assert not throttle.is_blocked("192.0.2.2", "anyone@example.test")
    clock.advance(99)
    assert throttle.is_blocked("192.0.2.1", None)
    clock.advance(1)
    assert not throttle.is_blocked("192.0.2.1", None)
    assert throttle.delay_for("192.0.2.1", None) == 0


def test_account_failures_delay_other_ips_but_never_block_them() -> None:
    """Guessing one account from many IPs slows every attempt on it; nobody is locked out."""
    clock = task.Clock()
    throttle = make(clock)
    for i in range(20):
        throttle.record_failure(f"198.51.100.{i}", "alice@example.test")
    assert throttle.delay_for("203.0.113.9", "ALICE@example.test") == 4.0
    assert not throttle.is_blocked("203.0.113.9", "alice@example.test")
    assert throttle.delay_for("203.0.113.9", "bob@example.test") == 0


def test_success_resets_account_and_ip() -> None:
    """A good login forgets the earlier failures."""
    clock = task.Clock()
    throttle = make(clock)
    for _ in range(5):
        throttle.record_failure("192.0.2.1", "alice@example.test")
    assert throttle.delay_for("192.0.2.1", "alice@example.test") > 0
    throttle.record_success("192.0.2.1", "alice@example.test")
    assert throttle.delay_for("192.0.2.1", "alice@example.test") == 0
    throttle.record_failure("192.0.2.1", "alice@example.test")
    assert throttle.delay_for("192.0.2.1", "alice@example.test") == 0


def test_failures_are_forgotten_after_quiet_period() -> None:
    """block_seconds after the last failure the counters start over."""
    clock = task.Clock()
    throttle = make(clock)
    for _ in range(5):
        throttle.record_failure("192.0.2.1", "alice@example.test")
    clock.advance(100)
    assert throttle.delay_for("192.0.2.1", "alice@example.test") == 0
    throttle.record_failure("192.0.2.1", "alice@example.test")
    assert throttle.delay_for("192.0.2.1", "alice@example.test") == 0


def test_success_on_an_owned_account_keeps_the_ip_failures() -> None:
    """Logging in to one's own account between guesses at another never resets the IP: the block comes."""
    clock = task.Clock()
    throttle = make(clock)
    for _ in range(5):
        throttle.record_failure("192.0.2.1", "victim@example.test")
        throttle.record_success("192.0.2.1", "mallory@example.test")
    assert throttle.failures("192.0.2.1") == 5
    assert throttle.delay_for("192.0.2.1", "mallory@example.test") > 0
    throttle.record_failure("192.0.2.1", "victim@example.test")
    assert throttle.is_blocked("192.0.2.1", "mallory@example.test")


def test_success_forgives_the_typos_that_ip_made_on_that_account_only() -> None:
    """The user's own mistakes are forgiven; other accounts' failures from the IP stay."""
    clock = task.Clock()
    throttle = make(clock)
    throttle.record_failure("192.0.2.1", "other@example.test")
    for _ in range(3):
        throttle.record_failure("192.0.2.1", "alice@example.test")
    assert throttle.failures("192.0.2.1") == 4
    throttle.record_success("192.0.2.1", "ALICE@example.test")
    assert throttle.failures("192.0.2.1") == 1
    assert throttle.delay_for("192.0.2.2", "alice@example.test") == 0


def test_owner_login_keeps_the_guesses_other_ips_made_on_the_account() -> None:
    """A distributed attack does not get fresh free failures each time the owner logs in."""
    clock = task.Clock()
    throttle = make(clock)
    for i in range(5):
        throttle.record_failure(f"198.51.100.{i}", "alice@example.test")
    throttle.record_success("203.0.113.9", "alice@example.test")
    assert throttle.delay_for("198.51.100.77", "alice@example.test") == 1.0


def test_success_never_lifts_a_block() -> None:
    clock = task.Clock()
    throttle = make(clock)
    for _ in range(6):
        throttle.record_failure("192.0.2.1", "alice@example.test")
    throttle.record_success("192.0.2.1", "alice@example.test")
    assert throttle.is_blocked("192.0.2.1", "alice@example.test")
    clock.advance(100)
    assert not throttle.is_blocked("192.0.2.1", "alice@example.test")


def test_failures_counts_the_ip_and_expires() -> None:
    clock = task.Clock()
    throttle = make(clock)
    assert throttle.failures("192.0.2.1") == 0
    throttle.record_failure("192.0.2.1", None)
    throttle.record_failure("192.0.2.1", "bob@example.test")
    assert throttle.failures("192.0.2.1") == 2
    clock.advance(100)
    assert throttle.failures("192.0.2.1") == 0


def test_a_good_login_makes_the_pair_known_until_it_fails_or_expires() -> None:
    clock = task.Clock()
    throttle = make(clock)
    assert not throttle.is_known("192.0.2.1", "alice@example.test")
    throttle.record_success("192.0.2.1", "alice@example.test")
    assert throttle.is_known("192.0.2.1", "ALICE@example.test")
    assert not throttle.is_known("192.0.2.2", "alice@example.test")
    assert not throttle.is_known("192.0.2.1", "bob@example.test")
    throttle.record_failure("192.0.2.1", "alice@example.test")
    assert not throttle.is_known("192.0.2.1", "alice@example.test")
    throttle.record_success("192.0.2.1", "alice@example.test")
    clock.advance(KNOWN_SECONDS)
    assert not throttle.is_known("192.0.2.1", "alice@example.test")


def test_known_pairs_are_bounded(monkeypatch: Any) -> None:
    """The least recently used pair goes first."""
    monkeypatch.setattr(throttle_module, "KNOWN_MAX", 3)
    throttle = make(task.Clock())
    for n in range(3):
        throttle.record_success(f"192.0.2.{n}", "alice@example.test")
    throttle.record_success("192.0.2.0", "alice@example.test")  # used again: now the newest
    throttle.record_success("192.0.2.9", "alice@example.test")
    assert [throttle.is_known(f"192.0.2.{n}", "alice@example.test") for n in (0, 1, 2, 9)] == [True, False, True, True]
