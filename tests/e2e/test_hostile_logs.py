"""Logs that cannot be used against the host, with real clients over TCP.

A client must not be able to fill the disk through the log (per-command
lines are ``debug``, below the default ``log.level``), nor forge lines or
send escape sequences to whoever reads the log (control characters are
escaped in every line).  Both of twistd's observer paths are checked: its
own (``-l``, ``--syslog``, standard output) and ``--logger
mailsuite.logs.observer``.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

USERS = {"alice@example.test": "alice-password-1"}
OBSERVERS = {"twistd": (), "mailsuite.logs": ("--logger", "mailsuite.logs.observer")}
#: 1 MB of each, before login.
FLOODS = {
    "imap": b"a NOOP\r\n",
    "imap-id": b'a ID ("name" "flood")\r\n',
    "smtp": b"NOOP\r\n",
    "pop3": b"NOOP\r\n",
}
FLOOD_BYTES = 1 << 20
#: A user name (an IMAP literal) that would start a line of its own in a log that did not escape.
FORGED = b"x\r\n2030-01-01T00:00:00+0000 [mailsuite.imap#info] forged"
#: Log bytes one flood may add: its connect and close lines, and a line or two more.
LOG_BOUND = 2048
#: What a log line starts with (a traceback's continuation lines start with a tab).
_LINE_START = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[|\t")
#: Raw characters no log line may hold (LF ends lines, TAB starts continuations).
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _start(tmp_path: Path, observer: str, **overrides: Any) -> ServerProcess:
    settings = {"tls.allow_plaintext_auth": True, "smtp.auth": True, "limits.smtp_max_errors": 1000}
    settings.update(overrides)
    server = ServerProcess(tmp_path / observer, settings)
    server.twistd_options = OBSERVERS[observer]
    server.tmp_path.mkdir(parents=True, exist_ok=True)
    for address, password in USERS.items():
        server.add_user(address, password)
    return server.start()


def _flood(port: int, line: bytes) -> int:
    """Send FLOOD_BYTES of ``line`` while reading every answer; the number of bytes answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answered = [0]

        def read() -> None:
            try:
                while chunk := sock.recv(65536):
                    answered[0] += len(chunk)
            except OSError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        batch = line * (65536 // len(line))
        sent = 0
        try:
            while sent < FLOOD_BYTES:
                sock.sendall(batch)
                sent += len(batch)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server hung up (POP3: too many bad commands): fine, the log is what counts
        reader.join(60)
        return answered[0]


def _log_settled(server: ServerProcess) -> int:
    """The log's size once it has stopped growing."""
    size = -1
    while True:
        time.sleep(0.3)
        now = server.log_path.stat().st_size
        if now == size:
            return size
        size = now


def test_pre_login_command_flood_adds_little_log(tmp_path: Path) -> None:
    """1 MB of pre-login NOOP (IMAP, SMTP, POP3) or IMAP ID adds a bounded few lines, not a line per command.

    (twistd's own observer here; the other path drops the same lines, see the next test.)
    """
    observer = "twistd"
    server = _start(tmp_path, observer)
    try:
        grown = {}
        for name, line in FLOODS.items():
            before = _log_settled(server)
            answered = _flood(server.ports[name.split("-")[0]], line)
            grown[name] = _log_settled(server) - before
            assert answered > 0
        print(f"log bytes per 1 MB of pre-login commands ({observer}): {grown}")
        assert all(size < LOG_BOUND for size in grown.values()), grown
    finally:
        server.stop()


def _imap(port: int, *commands: bytes) -> None:
    """Send IMAP commands one at a time (literals after the server's "+"), reading each answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.recv(4096)
        for command in commands:
            parts = re.split(rb"(?<=\}\r\n)", command)
            for part in parts[:-1]:
                sock.sendall(part)
                assert sock.recv(4096).startswith(b"+"), part
            sock.sendall(parts[-1])
            answer = b""
            while not re.search(rb"(^|\n)a (OK|NO|BAD)[^\n]*\n", answer):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk


def _lines(port: int, greeting: bool, *lines: bytes) -> None:
    """Send raw command lines one at a time, reading each reply (SMTP, POP3)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if greeting:
            sock.recv(4096)
        for line in lines:
            sock.sendall(line)
            time.sleep(0.05)
            sock.recv(65536)


@pytest.mark.parametrize("observer", OBSERVERS)
def test_control_characters_from_clients_are_escaped(tmp_path: Path, observer: str) -> None:
    """ESC, CR, LF, NUL, DEL, C1 and U+2028 sent in user names, client IDs, HELO and MAIL FROM never reach the log raw.

    (Nor does a line per IMAP command: debug is below the default log.level on this path too.)
    """
    server = _start(tmp_path, observer, **{"auth.free_failures": 100, "auth.max_failures": 200, "auth.max_delay": 0.0})
    try:
        _imap(server.ports["imap"], b"a NOOP\r\n", b"a NOOP\r\n",
              b'a ID ("name" "\x1b[2J\x1b[31mred" "os" "\x7f\x01")\r\n',
              b'a LOGIN "\x1b]0;owned\x07evil" pw\r\n',
              b"a LOGIN {%d}\r\n%s pw\r\n" % (len(FORGED), FORGED))
        _lines(server.ports["pop3"], True, b"USER \x1b[1mbold\x00nul\r\n", b"PASS pw\r\n")
        plain = base64.b64encode(b"\x00evil\r\nforged line\x1b[0m\x00pw").decode()
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
            client.ehlo("mx.remote.example")
            assert client.docmd("AUTH", f"PLAIN {plain}")[0] == 535
            client.docmd("HELO", "\x1b[31mhelo\x1b[0m")
            client.docmd("XYZZY", "\x1b[5mblink")
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
            client.ehlo("mx.remote.example")
            refused = client.sendmail("c1\u009b31m\u2028line@remote.example", ["alice@example.test"],
                                      b"Subject: escape\r\n\r\nbody\r\n", mail_options=["SMTPUTF8"])
            assert refused == {}
        _log_settled(server)
    finally:
        server.stop()
    log = server.log_path.read_bytes().decode("utf-8")
    assert "\\x1b[2J" in log and "\\x1b]0;owned\\x07evil" in log, "the client's text is logged, escaped"
    assert "x\\x0d\\x0a2030-01-01T00:00:00+0000 [mailsuite.imap#info] forged" in log
    assert "\\x1b[1mbold\\x00nul" in log
    assert "evil\\x0d\\x0aforged line\\x1b[0m" in log
    assert "c1\\x9b31m\\u2028line@remote.example" in log
    assert ": a NOOP" not in log, "per-command debug lines are below the default log.level"
    raw = [line for line in log.split("\n") if _RAW_CONTROL.search(line)]
    assert raw == [], raw[:5]
    forged = [line for line in log.split("\n") if line and not _LINE_START.match(line)]
    assert forged == [], forged[:5]
