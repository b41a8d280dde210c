"""The whole server under `twistd -n mailsuite`: start, listeners, logins, clean stop."""

from __future__ import annotations

import dataclasses
import imaplib
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailsuite import config
from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.service import ensure_demo_user, is_embedded_default
from mailsuite.tls import generate_self_signed

IMPLICIT = {"submissions", "pop3s", "imaps"}
LISTENERS = config.LISTENER_NAMES


def _root_conftest() -> Any:
    """tests/conftest.py as a module (a plain `import conftest` may find a sub-folder's conftest first)."""
    spec = importlib.util.spec_from_file_location("mailsuite_tests_root_conftest", Path(__file__).with_name("conftest.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ServerProcess = _root_conftest().ServerProcess


def first_bytes(server: Any, listener: str) -> bytes:
    """Connect to a listener (TLS for the implicit ones) and read its first answer."""
    raw = socket.create_connection(("127.0.0.1", server.ports[listener]), timeout=10)
    sock = server.client_tls().wrap_socket(raw) if listener in IMPLICIT else raw
    with sock:
        return sock.recv(512)


def test_every_listener_binds_answers_and_sigterm_exits_zero(mailsuite_server: Any) -> None:
    """All seven listeners bind loopback ephemeral ports, greet, and SIGTERM stops with status 0."""
    server = mailsuite_server()
    assert sorted(server.ports) == sorted(LISTENERS)
    assert all(port > 0 for port in server.ports.values())
    assert len(set(server.ports.values())) == len(LISTENERS)
    for name in LISTENERS:
        greeting = first_bytes(server, name)
        expected = {"smtp": (b"220", b"421"), "pop3": (b"+OK", b"-ERR"), "imap": (b"* OK", b"* BYE")}[
            "pop3" if name.startswith("pop3") else "imap" if name.startswith("imap") else "smtp"]
        assert greeting.startswith(expected), (name, greeting)
    assert server.stop() == 0
    log = server.log()
    assert "mailsuite stopping" in log
    assert "Traceback" not in log
    for name in LISTENERS:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.ports[name]), timeout=2).close()


def test_disabled_listener_is_not_bound_and_plaintext_auth_warns(mailsuite_server: Any) -> None:
    server = mailsuite_server({"pop3.enabled": False, "imap.enabled": False, "tls.allow_plaintext_auth": True})
    assert sorted(server.ports) == sorted(set(LISTENERS) - {"pop3", "imap"})
    assert "allow_plaintext_auth is true" in server.log()


def test_cli_changes_are_seen_by_the_running_server(mailsuite_server: Any) -> None:
    """A user added, re-passworded and removed with the CLI while the server runs: logins follow at once."""
    server = mailsuite_server()
    secret = "Visible-Secret-42"

    def login(password: str) -> bool:
        with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls(), timeout=30) as imap:
            try:
                imap.login("late@EXAMPLE.test", password)
            except imaplib.IMAP4.error:
                return False
            return True

    assert not login(secret)
    server.add_user("late@example.test", secret)
    assert login(secret)
    server.cli("user", "passwd", "late@example.test", "--password-stdin", input="Other-Secret-43\n")
    assert not login(secret)
    assert login("Other-Secret-43")
    server.cli("user", "remove", "late@example.test")
    assert not login("Other-Secret-43")
    log = server.log()
    assert "login ok: user=late@example.test" in log
    assert secret not in log and "Other-Secret-43" not in log


def test_port_in_use_stops_start_up_with_a_message(tmp_path: Path) -> None:
    """A listener that cannot bind ends the process with a non-zero status and says why."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        server = ServerProcess(tmp_path, {"imap.port": busy.getsockname()[1]})
        with pytest.raises(RuntimeError, match="cannot listen") as info:
            server.start()
        assert "exited with 1" in str(info.value)
    finally:
        busy.close()


def test_bad_tls_key_stops_start_up_without_traceback(tmp_path: Path) -> None:
    """A configured key that does not match its certificate: exit 2 and one clear line."""
    generate_self_signed(tmp_path / "a.pem", tmp_path / "a.key", "a.example.test")
    generate_self_signed(tmp_path / "b.pem", tmp_path / "b.key", "b.example.test")
    server = ServerProcess(tmp_path, {"tls.certificate": str(tmp_path / "a.pem"), "tls.key": str(tmp_path / "b.key")})
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert server.process is not None and server.process.returncode == 2
    assert f"mailsuite: configuration error: {server.config_path}: tls.key: {tmp_path / 'b.key'} does not match the certificate" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_missing_tls_certificate_stops_start_up(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"tls.certificate": str(tmp_path / "none.pem"), "tls.key": str(tmp_path / "none.key")})
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert server.process is not None and server.process.returncode == 2
    assert "tls.certificate: cannot read" in str(info.value) and "Traceback" not in str(info.value)


def test_demo_user_only_with_the_embedded_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The example config gets a demo user with a printed random password, once; other configs never."""
    embedded = config.load(config.default_config_path())
    assert is_embedded_default(embedded)
    embedded = dataclasses.replace(embedded, data_root=str(tmp_path))
    directory = SQLiteDirectory(tmp_path / "users.sqlite3", extra_domains=embedded.domains)
    assert ensure_demo_user(directory, embedded) == "demo@example.test"
    printed = capsys.readouterr().err
    password = printed.split("password: ", 1)[1].split()[0]
    assert len(password) >= 12
    assert directory.authenticate_sync("demo@example.test", password) == "demo@example.test"
    assert ensure_demo_user(directory, embedded) is None
    other = dataclasses.replace(embedded, source=str(tmp_path / "mine.toml"))
    assert not is_embedded_default(other)
    empty = SQLiteDirectory(tmp_path / "other.sqlite3", extra_domains=["example.test"])
    assert ensure_demo_user(empty, other) is None and empty.list_users() == []


def test_twistd_plugin_is_listed() -> None:
    """`twistd --help` lists the mailsuite plugin (the plugin file is installed and importable)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert "mailsuite" in done.stdout


def test_login_throttle_is_wired_from_config(mailsuite_server: Any) -> None:
    """With [auth] max_failures = 3, the fourth attempt from this IP is refused even with the right password."""
    server = mailsuite_server({"auth.free_failures": 0, "auth.max_failures": 3, "auth.max_delay": 0.2}, users={"user@example.test": "right-password"})

    def attempt(password: str) -> str:
        with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.client_tls(), timeout=30) as imap:
            try:
                imap.login("user@example.test", password)
            except imaplib.IMAP4.error as e:
                return str(e)
            except (imaplib.IMAP4.abort, OSError) as e:
                return f"closed: {e}"
            return "ok"

    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in attempt("wrong")
    refused = attempt("right-password")
    assert refused != "ok" and "AUTHENTICATIONFAILED" not in refused
    assert "login refused (throttled)" in server.log()



def test_queue_and_mail_authentication_share_one_resolver(tmp_path: Path) -> None:
    """One DNS client and cache serve MX routing and SPF/DKIM/DMARC (an answer is asked for once)."""
    from twisted.internet import reactor

    from mailsuite.resolver import CachingResolver
    from mailsuite.service import build_context

    cfg = config.parse(f'hostname = "mx.example.test"\ndomains = ["example.test"]\ndata_root = "{tmp_path}"\n'
                       '[queue]\nresolver = "127.0.0.1:5399"\n')
    context = build_context(cfg, reactor)
    try:
        assert isinstance(context.resolver, CachingResolver)
        assert context.queue.resolver is context.resolver
        assert context.mailauth.resolver is context.resolver
        assert context.mailauth.checker.resolver is context.resolver
    finally:
        for stop in reversed(context.on_stop):
            stop()
