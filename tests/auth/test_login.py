"""The throttled authenticator over the real portal and directory (task.Clock for delays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, capturedLogs

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.login import Authenticator
from mailsuite.auth.portal import make_portal
from mailsuite.auth.throttle import LoginThrottle
from mailsuite.errors import AuthenticationFailed, LoginThrottled
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
