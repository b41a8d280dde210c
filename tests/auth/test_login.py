"""The throttled authenticator over the real portal and directory (task.Clock for delays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.login import Authenticator
from mailsuite.auth.portal import make_portal
from mailsuite.auth.throttle import LoginThrottle
from mailsuite.errors import AuthenticationFailed, LoginThrottled, TemporaryFailure
from mailsuite.interfaces import IMailUser

from .conftest import failure, result


class FakeStore:
    """Records which mailboxes were asked for (the realm's only use of the store)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def user_mailbox(self, address: str) -> Any:
        self.asked.append(address)
        return f"mailbox:{address}"


@dataclass
class Context:
    store: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def setup(directory: SQLiteDirectory) -> tuple[Authenticator, task.Clock, Context]:
    directory.add_user("Alice@example.test", "right password")
    clock = task.Clock()
    context = Context()
    throttle = LoginThrottle(clock, free_failures=2, max_failures=5, max_delay=8.0, block_seconds=60.0)
    return Authenticator(make_portal(context, directory), throttle, clock), clock, context


def test_success_yields_avatar_with_mailbox_looked_up_at_login(setup: Any) -> None:
    """The store is read when the user logs in (it may open after auth)."""
    auth, clock, context = setup
    context.store = FakeStore()
    avatar = result(auth.login("192.0.2.1", "alice@EXAMPLE.test", "right password"))
    assert IMailUser.providedBy(avatar)
    assert avatar.address == "Alice@example.test"
    assert avatar.mailbox == "mailbox:Alice@example.test"
    assert context.store.asked == ["Alice@example.test"]


def test_failures_are_answered_after_growing_delays(setup: Any) -> None:
    """Free failures answer at once; later ones only after the throttle's delay."""
    auth, clock, _ = setup
    for _ in range(2):
        assert isinstance(failure(auth.login("192.0.2.1", "alice@example.test", "wrong")).value, AuthenticationFailed)
    d = auth.login("192.0.2.1", "alice@example.test", "wrong")
    assert not d.called
    clock.advance(0.49)
    assert not d.called
    clock.advance(0.01)
    assert isinstance(failure(d).value, AuthenticationFailed)
    d = auth.login("192.0.2.1", "alice@example.test", "wrong")
    clock.advance(0.99)
    assert not d.called
    clock.advance(0.01)
    assert isinstance(failure(d).value, AuthenticationFailed)


def test_blocked_ip_is_refused_even_with_the_right_password(setup: Any) -> None:
    """After max_failures the IP gets LoginThrottled at once, until block_seconds pass."""
    auth, clock, _ = setup
    for _ in range(5):
        d = auth.login("192.0.2.1", "nobody@example.test", "wrong")
        clock.advance(10)
        assert isinstance(failure(d).value, AuthenticationFailed)
    assert isinstance(failure(auth.login("192.0.2.1", "alice@example.test", "right password")).value, LoginThrottled)
    assert result(auth.login("192.0.2.2", "alice@example.test", "right password")).address == "Alice@example.test"
    clock.advance(60)
    assert result(auth.login("192.0.2.1", "alice@example.test", "right password")).address == "Alice@example.test"


def test_success_resets_the_delay(setup: Any) -> None:
    """A good login clears the failures: the next mistake is answered at once."""
    auth, clock, _ = setup
    for _ in range(3):
        d = auth.login("192.0.2.1", "alice@example.test", "wrong")
        clock.advance(10)
        failure(d)
    result(auth.login("192.0.2.1", "alice@example.test", "right password"))
    assert isinstance(failure(auth.login("192.0.2.1", "alice@example.test", "wrong")).value, AuthenticationFailed)


@pytest.mark.parametrize("username", ["alice", "", "not an address", "alice@unknown.test"])
def test_malformed_or_unknown_usernames_fail_like_bad_passwords(setup: Any, username: str) -> None:
    """No hint whether the user exists: the same AuthenticationFailed."""
    auth, _, _ = setup
    assert isinstance(failure(auth.login("192.0.2.1", username, "right password")).value, AuthenticationFailed)


def test_empty_password_fails(setup: Any) -> None:
    auth, _, _ = setup
    assert isinstance(failure(auth.login("192.0.2.1", "alice@example.test", "")).value, AuthenticationFailed)


def test_passwords_never_reach_the_log(setup: Any) -> None:
    """Success and failure lines name user and IP, never the password."""
    auth, clock, _ = setup
    with capturedLogs() as events:
        result(auth.login("192.0.2.1", "alice@example.test", "right password"))
        d = auth.login("192.0.2.1", "alice@example.test", "wrong-secret-guess")
        clock.advance(10)
        failure(d)
    text = repr(events)
    assert "login ok" in text and "login failed" in text
    assert "right password" not in text and "wrong-secret-guess" not in text
    assert all(e["log_level"] in (LogLevel.info, LogLevel.warn) for e in events)


# -- parallel attempts: the directory's checks run on a pool the test steps ----------------

class Reactor(task.Clock):
    """task.Clock plus the callFromThread a thread pool's results come back through."""

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class StepPool:
    """A thread pool whose one 'thread' is the test: jobs run when run_next() says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, Any, Any]] = []
        self.ran = 0

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        self.jobs.append((on_result, f, args, kw))

    def run_next(self) -> None:
        on_result, f, args, kw = self.jobs.pop(0)
        self.ran += 1
        try:
            value, ok = f(*args, **kw), True
        except Exception:
            value, ok = Failure(), False
        on_result(ok, value)

    def run_all(self) -> None:
        while self.jobs:
            self.run_next()


@pytest.fixture
def stepped(tmp_path: Any) -> Any:
    """An authenticator over a real directory whose password checks wait for the test (one slot)."""
    pool = StepPool()
    reactor = Reactor()
    directory = SQLiteDirectory(tmp_path / "stepped.sqlite3", extra_domains=["example.test"], reactor=reactor, pool=pool)
    for user in ("alice", "bob", "mallory"):
        directory.add_user(f"{user}@example.test", f"{user} password")
    throttle = LoginThrottle(reactor, free_failures=2, max_failures=8, max_delay=4.0, block_seconds=60.0)
    auth = Authenticator(make_portal(Context(store=FakeStore()), directory), throttle, reactor, slots=1)
    started: list[Any] = []
    login = auth.login

    def tracked(*args: Any) -> Any:
        d = login(*args)
        started.append(d)
        return d

    auth.login = tracked  # type: ignore[method-assign]
    yield auth, reactor, pool, throttle
    # finish every check the test left waiting, so nothing of it runs (or is collected) during a later test
    for _ in range(50):
        pool.run_all()
        reactor.advance(10)
    for d in started:
        d.addErrback(lambda _: None)
    directory.close()


def test_parallel_guesses_from_one_ip_cost_one_hash(stepped: Any) -> None:
    """Nine guesses at once from one IP at one account: one check; the others fail unchecked, as IP failures."""
    auth, reactor, pool, throttle = stepped
    attempts = [auth.login("198.51.100.1", "bob@example.test", f"guess {n}") for n in range(9)]
    assert len(pool.jobs) == 1
    reactor.advance(10)
    assert all(isinstance(failure(d).value, AuthenticationFailed) for d in attempts[1:])
    assert throttle.failures("198.51.100.1") == 8
    pool.run_all()
    reactor.advance(10)
    assert isinstance(failure(attempts[0]).value, AuthenticationFailed)
    assert pool.ran == 1


def test_one_check_per_account_at_a_time_delay_included(stepped: Any) -> None:
    """Guesses at one account from many IPs run one by one; a failure's delay holds the account."""
    auth, reactor, pool, throttle = stepped
    attempts = [auth.login(f"198.51.100.{n}", "bob@example.test", f"guess {n}") for n in range(4)]
    for _ in range(2):  # the free failures: answered at once, the next check starts
        assert len(pool.jobs) == 1
        pool.run_next()
    assert len(pool.jobs) == 1
    pool.run_next()  # third failure of the account: 0.5 s before the answer, the account held meanwhile
    assert pool.jobs == [] and not attempts[2].called
    reactor.advance(0.5)
    assert all(isinstance(failure(d).value, AuthenticationFailed) for d in attempts[:3])
    assert len(pool.jobs) == 1


def test_same_password_at_once_shares_one_check(stepped: Any) -> None:
    """A mail client opening three connections at once costs one hash; each gets its own avatar."""
    auth, _, pool, _ = stepped
    attempts = [auth.login("192.0.2.1", "alice@example.test", "alice password") for _ in range(3)]
    pool.run_all()
    avatars = [result(d) for d in attempts]
    assert pool.ran == 1
    assert [a.address for a in avatars] == ["alice@example.test"] * 3
    assert len({id(a) for a in avatars}) == 3


def test_a_clean_ip_is_checked_before_queued_guesses(stepped: Any) -> None:
    """With the one slot busy, the user's login from a clean IP goes ahead of every queued guess."""
    auth, _, pool, throttle = stepped
    for _ in range(2):
        throttle.record_failure("198.51.100.1", None)
        throttle.record_failure("198.51.100.2", None)
    guesses = [auth.login(f"198.51.100.{n % 2 + 1}", f"victim{n}@example.test", "guess") for n in range(6)]
    user = auth.login("192.0.2.1", "alice@example.test", "alice password")
    pool.run_next()  # the guess already running
    pool.run_next()
    assert result(user).address == "alice@example.test"
    assert not any(d.called for d in guesses[1:])


def test_a_guess_queued_before_its_ip_was_blocked_costs_no_hash(stepped: Any) -> None:
    """The block is checked again when a check's turn comes."""
    auth, reactor, pool, throttle = stepped
    holder = auth.login("192.0.2.9", "bob@example.test", "guess")
    queued = auth.login("198.51.100.1", "bob@example.test", "guess")
    for _ in range(8):
        throttle.record_failure("198.51.100.1", None)
    pool.run_all()
    reactor.advance(10)
    failure(holder)
    assert isinstance(failure(queued).value, LoginThrottled)
    assert pool.ran == 1


def test_unknown_users_queue_and_hash_like_known_ones(stepped: Any) -> None:
    """Parallel guesses at a user that does not exist: same gate, same one dummy hash per check."""
    auth, reactor, pool, _ = stepped
    known = [auth.login("198.51.100.1", "bob@example.test", f"guess {n}") for n in range(3)]
    unknown = [auth.login("198.51.100.2", "nobody@example.test", f"guess {n}") for n in range(3)]
    assert len(pool.jobs) == 1  # one slot: bob's check runs, nobody's waits like bob's would
    pool.run_all()
    reactor.advance(10)
    assert pool.ran == 2
    assert all(isinstance(failure(d).value, AuthenticationFailed) for d in known + unknown)


def test_a_client_that_hangs_up_while_queued_costs_no_hash(stepped: Any) -> None:
    """Cancelling a queued login (the protocol's connection is gone) drops its check."""
    auth, _, pool, _ = stepped
    holder = auth.login("192.0.2.9", "bob@example.test", "guess")
    gone = auth.login("198.51.100.1", "bob@example.test", "guess")
    gone.cancel()
    failure(gone)
    pool.run_all()
    failure(holder)
    assert pool.ran == 1
    assert auth.gate.waiting == 0 and auth.gate.running == 0


def test_a_full_queue_answers_try_later_without_counting_a_failure(tmp_path: Any) -> None:
    pool = StepPool()
    reactor = Reactor()
    directory = SQLiteDirectory(tmp_path / "full.sqlite3", extra_domains=["example.test"], reactor=reactor, pool=pool)
    throttle = LoginThrottle(reactor)
    auth = Authenticator(make_portal(Context(), directory), throttle, reactor, slots=1, max_waiting=1)
    running = auth.login("192.0.2.1", "a@example.test", "x")
    waiting = auth.login("192.0.2.2", "b@example.test", "x")
    refused = auth.login("192.0.2.3", "c@example.test", "x")
    assert type(failure(refused).value) is TemporaryFailure
    assert throttle.failures("192.0.2.3") == 0
    pool.run_all()
    assert all(isinstance(failure(d).value, AuthenticationFailed) for d in (running, waiting))
    directory.close()


def test_a_known_user_logs_in_while_their_account_is_held_by_a_guess(stepped: Any) -> None:
    """After a good login from an IP, that IP's next login skips the queue of guesses at the account."""
    auth, reactor, pool, throttle = stepped
    auth.login("192.0.2.1", "alice@example.test", "alice password")
    pool.run_all()
    for n in range(4):  # the account's failures: the next failure's delay holds alice
        d = auth.login(f"198.51.100.{n}", "alice@example.test", "guess")
        pool.run_all()
        reactor.advance(10)
        failure(d)
    held = auth.login("198.51.100.9", "alice@example.test", "guess")
    pool.run_all()
    assert not held.called  # answered after the delay; alice stays held meanwhile
    stranger = auth.login("203.0.113.5", "alice@example.test", "alice password")
    user = auth.login("192.0.2.1", "alice@example.test", "alice password")
    assert len(pool.jobs) == 1
    pool.run_next()
    assert result(user).address == "alice@example.test" and not stranger.called
    reactor.advance(10)
    failure(held)
    pool.run_all()
    assert result(stranger).address == "alice@example.test"
