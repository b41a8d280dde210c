"""The server's own log observer (mailsuite.logs): twistd-style lines, cheaper to write."""

from __future__ import annotations

import io
import re
import smtplib
from pathlib import Path
from typing import Any

from twisted.logger import LogLevel, Logger, LogPublisher
from twisted.python.failure import Failure

from mailsuite.logs import LineObserver
from tests.conftest import ServerProcess

_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[(?P<system>[^\]]+)\] (?P<text>.*)$")


def emitted(**kw: Any) -> list[str]:
    out = io.StringIO()
    publisher = LogPublisher(LineObserver(out))
    log = Logger(namespace="mailsuite.test", observer=publisher)
    fmt = kw.pop("fmt")
    getattr(log, kw.pop("level", "info"))(fmt, **kw)
    return out.getvalue().splitlines()


def test_line_has_time_namespace_level_and_text() -> None:
    [line] = emitted(fmt="[{session}] {qid}: accepted from=<{sender}> size={size} {value!r}", session="s1", qid="Q1", sender="a@b.test", size=10, value="x")
    match = _LINE.match(line)
    assert match, line
    assert match["system"] == "mailsuite.test#info"
    assert match["text"] == "[s1] Q1: accepted from=<a@b.test> size=10 'x'"


def test_a_missing_field_shows_instead_of_losing_the_line() -> None:
    [line] = emitted(fmt="user {user} from {ip}", user="u@example.test")
    assert line.endswith("user u@example.test from {ip}")


def test_failure_traceback_follows_the_line() -> None:
    out = io.StringIO()
    log = Logger(namespace="mailsuite.test", observer=LogPublisher(LineObserver(out)))
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("delivery to {address} failed", Failure(), address="x@example.test")
    lines = out.getvalue().splitlines()
    assert _LINE.match(lines[0]) and "delivery to x@example.test failed" in lines[0]
    assert any("ZeroDivisionError" in line for line in lines[1:])
    assert all(line.startswith("\t") for line in lines[1:]), "continuation lines are indented, so each event starts a line of its own"


def test_events_it_cannot_format_fall_back_to_twisted() -> None:
    out = io.StringIO()
    observer = LineObserver(out)
    observer({"log_format": "{thing()}", "thing": lambda: "called", "log_level": LogLevel.warn, "log_namespace": "ns", "log_time": 0.0})
    observer({"log_text": "plain legacy text", "log_level": LogLevel.info, "log_namespace": "legacy", "log_time": 0.0})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("[ns#warn] called")
    assert "[legacy#info]" in lines[1]


def test_twistd_logs_through_it(tmp_path: Path) -> None:
    """`twistd --logger mailsuite.logs.observer mailsuite` (the systemd unit's command) logs every accepted message."""
    server = ServerProcess(tmp_path)
    server.twistd_options = ("--logger", "mailsuite.logs.observer")
    server.add_user("someone@example.test", "a long password here")
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
            client.sendmail("sender@remote.test", ["someone@example.test"], b"Subject: hi\r\n\r\nhello\r\n")
    finally:
        assert server.stop() == 0
    lines = server.log().splitlines()
    accepted = [line for line in lines if "accepted from=<sender@remote.test>" in line]
    assert len(accepted) == 1 and _LINE.match(accepted[0]), lines[-20:]
    assert "[mailsuite.smtp." in accepted[0] and "#info]" in accepted[0]
    assert any("mailsuite ready" in line for line in lines)
