"""Shared test fixtures: a real mailsuite server process on loopback ephemeral ports.

``mailsuite_server(**overrides)`` writes a config (every listener on
127.0.0.1 port 0, data under tmp_path), starts ``twistd -n mailsuite`` in a
subprocess, waits for ``<data_root>/run/ports.json`` and stops it with
SIGTERM at the end of the test.  ``server.add_user(address, password)`` goes
through the real admin CLI.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailsuite.testing.process import NotReady, clear_ports, render_toml, wait_for_ports

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
LISTENERS = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


def render_config(data_root: Path, overrides: dict[str, Any] | None = None) -> str:
    """A TOML config for tests: loopback, ephemeral ports, data under data_root.

    ``overrides`` maps dotted keys ("limits.recipients", "smtp.auth") to values.
    """
    settings: dict[str, Any] = {"hostname": "mail.example.test", "domains": ["example.test"], "data_root": str(data_root)}
    for name in LISTENERS:
        settings[f"{name}.address"] = "127.0.0.1"
        settings[f"{name}.port"] = 0
    # No real DNS here: inbound SPF/DKIM/DMARC checks would tempfail (451 4.4.3); mail-auth tests turn them on.
    settings["mailauth.verify_inbound"] = False
    settings.update(overrides or {})
    return render_toml(settings)


class ServerProcess:
    """A running `twistd -n mailsuite` and what a test needs to talk to it."""

    #: Extra twistd options before the plugin name (e.g. ``("--logger", "mailsuite.logs.observer")``).
    twistd_options: tuple[str, ...] = ()

    def __init__(self, tmp_path: Path, overrides: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.data_root = tmp_path / "data"
        self.config_path = tmp_path / "mailsuite.toml"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.data_root, overrides))
        self.log_path = tmp_path / "twistd.log"
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "ServerProcess":
        """Start the server and wait until every listener is bound."""
        clear_ports(self.data_root)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", *self.twistd_options, "mailsuite", "--config", str(self.config_path)],
            cwd=self.tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        try:
            self.ports = wait_for_ports(self.process, self.data_root, timeout, self.log)
        except NotReady:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop the server (SIGTERM by default) and return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def env(self) -> dict[str, str]:
        """Environment for child processes: the checkout first on the import path."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- helpers for tests -------------------------------------------------
    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the admin command against this server's config."""
        return subprocess.run(
            [sys.executable, "-m", "mailsuite.cli", "--config", str(self.config_path), *args],
            input=input, capture_output=True, text=True, env=self.env(), check=check, cwd=self.tmp_path,
        )

    def add_user(self, address: str, password: str) -> None:
        """Create a user through the real CLI (password on stdin)."""
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")

    def add_domain(self, domain: str) -> None:
        """Make a domain local through the CLI."""
        self.cli("domain", "add", domain)

    @property
    def certificate(self) -> Path:
        """The server certificate a client should trust (self-signed in tests)."""
        return self.data_root / "tls" / "cert.pem"

    def client_tls(self) -> ssl.SSLContext:
        """An ssl context that trusts this server's certificate (host name not checked)."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        context.check_hostname = False
        return context

    def mail_dir(self, address: str) -> Path:
        """The Maildir of a user (the store's documented layout)."""
        local, _, domain = address.rpartition("@")
        return self.data_root / "mail" / domain.lower() / local


def _server_factory(base: Path, started: list[ServerProcess]) -> Any:
    """The ``start(overrides, users=...)`` function both server fixtures hand to tests."""

    def start(overrides: dict[str, Any] | None = None, *, users: dict[str, str] | None = None, **kw: Any) -> ServerProcess:
        merged = dict(overrides or {})
        merged.update(kw)
        server = ServerProcess(base / f"server{len(started)}", merged)
        server.tmp_path.mkdir(parents=True, exist_ok=True)
        started.append(server)
        for address, password in (users or {}).items():
            server.add_user(address, password)
        return server.start()

    return start


@pytest.fixture
def mailsuite_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``server = mailsuite_server(**{"limits.recipients": 5})`` starts a real server."""
    started: list[ServerProcess] = []
    yield _server_factory(tmp_path, started)
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def mailsuite_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Like ``mailsuite_server`` but the servers live for the whole test module (faster)."""
    started: list[ServerProcess] = []
    yield _server_factory(tmp_path_factory.mktemp("mailsuite"), started)
    for server in started:
        server.stop()
