"""The rate-limit windows as state machines on a task.Clock."""

from __future__ import annotations

from twisted.internet import task

from mailsuite.antispam.ratelimit import RateLimits, Window
from mailsuite.config import RateLimitConfig


def test_window_allows_limit_events_then_says_when_the_next_fits() -> None:
    clock = task.Clock()
    window = Window(clock, 3, 60.0)
    for _ in range(3):
        assert window.allows("a") == 0
        window.record("a")
        clock.advance(10)
    assert window.allows("a") == 30.0  # the first event leaves the window at t=60
    assert window.allows("b") == 0  # keys are apart
    clock.advance(30)
    assert window.allows("a") == 0
    assert window.count("a") == 2


def test_zero_is_no_limit_and_idle_keys_are_swept() -> None:
    clock = task.Clock()
    assert Window(clock, 0, 60.0).allows("a") == 0
    window = Window(clock, 2, 60.0)
    for i in range(50):
        window.record(f"10.0.0.{i}")
    assert len(window) == 50
    clock.advance(61)
    window.sweep()
    assert len(window) == 0


def test_ip_limits_per_minute_and_user_limits_per_hour() -> None:
    clock = task.Clock()
    rates = RateLimits(clock, RateLimitConfig(ip_connections_per_minute=2, ip_messages_per_minute=2, ip_recipients_per_minute=3,
                                              user_messages_per_hour=1, user_recipients_per_hour=2))
    assert rates.connection("192.0.2.1") is None
    assert rates.connection("192.0.2.1") is None
    assert "connections per minute" in (rates.connection("192.0.2.1") or "")
    # recipients: three accepted, the fourth waits
    for _ in range(3):
        assert rates.recipient("192.0.2.1", None, first=False) is None
        rates.count_recipient("192.0.2.1", None)
    assert "recipients per minute" in (rates.recipient("192.0.2.1", None, first=False) or "")
    # messages are asked at a transaction's first RCPT and counted once complete
    rates.count_message("192.0.2.2", None)
    rates.count_message("192.0.2.2", None)
    assert "messages per minute" in (rates.recipient("192.0.2.2", None, first=True) or "")
    assert rates.recipient("192.0.2.2", None, first=False) is None
    # an authenticated user is held to the user's hourly limits, whatever the IP
    rates.count_message("192.0.2.3", "alice@example.test")
    assert "messages per hour from alice@example.test" in (rates.recipient("192.0.2.9", "alice@example.test", first=True) or "")
    clock.advance(3599)
    assert rates.recipient("192.0.2.9", "alice@example.test", first=True) is not None
    clock.advance(2)
    assert rates.recipient("192.0.2.9", "alice@example.test", first=True) is None
    assert rates.connection("192.0.2.1") is None  # the minute is long over
