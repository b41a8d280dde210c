"""A mailsuite server in a child process, for fixtures that must not share the test's reactor.

Synchronous tests block in their clients (smtplib, imaplib...); a server in
the same thread would starve, and a reactor in a background thread would clash
with trial or pytest-twisted tests in the same process.  A child process has
neither problem and is exactly what production runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping


def toml_value(value: Any) -> str:
    """A TOML literal for a bool, number, string, or a list or table (dict) of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(settings: Mapping[str, Any]) -> str:
    """TOML text from dotted keys: {"hostname": "x", "smtp.port": 0, "queue.smarthost.host": "h"}."""
    tables: dict[str, dict[str, Any]] = {"": {}}
    for key, value in settings.items():
        table, _, leaf = key.rpartition(".")
        tables.setdefault(table, {})[leaf] = value
    lines = [f"{k} = {toml_value(v)}" for k, v in tables.pop("").items()]
    for table, values in tables.items():
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


class NotReady(RuntimeError):
    """The server exited, or did not bind its listeners in time; the message carries its log."""


def ports_path(data_root: Path) -> Path:
    """Where the server announces its bound ports (written last at start-up, see mailsuite.service)."""
    return data_root / "run" / "ports.json"


def clear_ports(data_root: Path) -> None:
    """Remove a previous run's ports file, so that only the new server's can signal readiness."""
    ports_path(data_root).unlink(missing_ok=True)


def wait_for_ports(process: subprocess.Popen[bytes], data_root: Path, timeout: float, log: Callable[[], str], poll: float = 0.02) -> dict[str, int]:
    """Listener name -> port, once the server has written ``<data_root>/run/ports.json``.

    The server writes that file only when every listener is bound, so it is the
    one ready signal for every way of starting a server as a child process
    (this module, the test fixtures, benchmarks).  Raises :class:`NotReady`
    with the server's log if it exits or ``timeout`` seconds pass first.
    """
    ports_file = ports_path(data_root)
    deadline = time.monotonic() + timeout
    while not ports_file.exists():
        if process.poll() is not None:
            raise NotReady(f"mailsuite exited with {process.returncode}:\n{log()}")
        if time.monotonic() > deadline:
            raise NotReady(f"mailsuite did not become ready in {timeout}s:\n{log()}")
        time.sleep(poll)
    return dict(json.loads(ports_file.read_text()))


class ChildServer:
    """Runs ``python -m mailsuite.testing.runner CONFIG`` and waits for its ports."""

    def __init__(self, config_path: Path, data_root: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.data_root = data_root
        self.log_path = log_path
        self.env = dict(env) if env is not None else dict(os.environ)
        # Let the child cache compiled modules: it is started again and again in a test run.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0) -> dict[str, int]:
        """Start the child and return listener name -> bound port once all are listening."""
        clear_ports(self.data_root)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailsuite.testing.runner", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.config_path.parent),
            )
        try:
            self.ports = wait_for_ports(self.process, self.data_root, timeout, self.log, poll=0.01)
        except NotReady:
            self.stop()
            raise
        return self.ports

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop the child (SIGTERM by default) and return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        """Everything the child logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
