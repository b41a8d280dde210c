"""The server's own log observer (mailsuite.logs): twistd-style lines, cheaper to write."""

from __future__ import annotations

import io
import re
import smtplib
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, Logger, LogPublisher, textFileLogObserver
from twisted.python import usage
from twisted.python.failure import Failure

from mailsuite import logs
from mailsuite.logs import LineObserver, SafeObserver
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
        _ = 1 / 0
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


def test_control_characters_are_escaped_in_the_line() -> None:
    """CR, LF, ESC, NUL, DEL, C1 and U+2028 from a field become visible escapes; the event stays one line."""
    [line] = emitted(fmt="login failed for {user}", user="a\r\n2030-01-01 [x] forged\x1b[31m\x00\x7f\x9b\u2028é")
    assert line.endswith("login failed for a\\x0d\\x0a2030-01-01 [x] forged\\x1b[31m\\x00\\x7f\\x9b\\u2028é")


def test_escaping_covers_repr_fields_and_twisteds_fallback() -> None:
    """Whatever path formats the text ({x!r}, Twisted's {f()} syntax), the result is escaped."""
    [line] = emitted(fmt="{value!r} {other}", value=ValueError("\x1b[2J"), other=b"\x1b")
    assert "\x1b" not in line and "\\x1b[2J" in line
    out = io.StringIO()
    LineObserver(out)({"log_format": "{thing()}", "thing": lambda: "\x1b]0;title\x07", "log_level": LogLevel.info, "log_namespace": "ns", "log_time": 0.0})
    assert out.getvalue().endswith("[ns#info] \\x1b]0;title\\x07\n")


def test_traceback_keeps_its_lines_with_control_characters_escaped() -> None:
    """A traceback stays readable (one line per line, each after a tab, so none can pass for an event); other controls are escaped."""
    out = io.StringIO()
    log = Logger(namespace="mailsuite.test", observer=LogPublisher(LineObserver(out)))
    try:
        raise ValueError("bad name \x1b[31m\r\nforged")
    except ValueError:
        log.failure("parsing failed", Failure())
    lines = out.getvalue().splitlines()
    assert len(lines) > 3 and all(line.startswith("\t") for line in lines[1:])
    assert "\tbuiltins.ValueError: bad name \\x1b[31m\\x0d" in lines and "\tforged" in lines


def test_level_drops_the_events_below_it() -> None:
    """The default level ("info") drops debug lines; "debug" keeps them; "warn" drops info."""
    for level, kept in (("info", ["info", "warn"]), ("debug", ["debug", "info", "warn"]), ("warn", ["warn"])):
        out = io.StringIO()
        log = Logger(namespace="mailsuite.test", observer=LogPublisher(LineObserver(out, level)))
        for name in ("debug", "info", "warn"):
            getattr(log, name)("a {name} line", name=name)
        assert [line.rsplit(" ", 2)[-2] for line in out.getvalue().splitlines()] == kept


def test_safe_observer_gives_twistds_observer_escaped_text() -> None:
    """twistd's own observer (or syslog, or a custom one) behind SafeObserver: same level and escaping, its own line format."""
    out = io.StringIO()
    log = Logger(namespace="mailsuite.test", observer=LogPublisher(SafeObserver(textFileLogObserver(out), "info")))
    log.debug("per command {tag}", tag="a")
    log.info("login failed for {user}", user="x\r\nforged\x1b[0m")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.failure("oops {what}", Failure(), what="\x00")
    lines = out.getvalue().splitlines()
    assert "per command" not in out.getvalue()
    assert lines[0].endswith("[mailsuite.test#info] login failed for x\\x0d\\x0aforged\\x1b[0m")
    assert "[mailsuite.test#critical] oops \\x00" in lines[1]
    assert any("ZeroDivisionError" in line for line in lines[2:]) and all(line.startswith("\t") for line in lines[2:])


def test_configure_twistd_wraps_whichever_observer_twistd_would_start() -> None:
    """Without --logger: twistd's default made safe; with ours: a LineObserver at the level; a bad name is twistd's usage error."""
    options: dict[str, Any] = {"logger": None, "logfile": "-", "nodaemon": True, "syslog": False, "prefix": ""}
    logs.configure_twistd(options, "warn")
    assert options["logger"] == "mailsuite.logs.twistd_observer"
    made = logs.twistd_observer()
    assert isinstance(made, SafeObserver)
    options = {"logger": "mailsuite.logs.observer"}
    logs.configure_twistd(options, "debug")
    made = logs.twistd_observer()
    assert isinstance(made, LineObserver)
    with pytest.raises(usage.UsageError):
        logs.configure_twistd({"logger": "no.such.module.observer"}, "info")
