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

    def __init__(self, config_path: Path, data_root: Path, log_path: Path, env: Mapping[str, str] | None = None,
                 orphan_remove: Path | None = None) -> None:
        self.config_path = config_path
        #: Removed by the child itself if this process dies without stopping it (see runner.py).
        self.orphan_remove = orphan_remove
        self._lifeline: int | None = None
        self.data_root = data_root
        self.log_path = log_path
        self.env = child_env(env)
        self.process: subprocess.Popen[bytes] | ForkedProcess | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 20.0, forker: ForkServer | None = None) -> dict[str, int]:
        """Start the child and return listener name -> bound port once all are listening.

        With a ``forker``, the server is forked from it (falling back to a new
        process if it cannot), instead of starting a new interpreter.
        """
        clear_ports(self.data_root)
        self.process = None
        if forker is not None:
            try:
                self.process = forker.spawn(self.config_path, self.log_path, self.orphan_remove)  # type: ignore[assignment]
            except OSError:
                self.process = None
        if self.process is None:
            # The child stops (and cleans up) when this pipe's write end closes: when we stop it, or die.
            read_end, self._lifeline = os.pipe()
            command = [sys.executable, "-m", "mailsuite.testing.runner", str(self.config_path), "--lifeline", str(read_end)]
            if self.orphan_remove is not None:
                command += ["--orphan-remove", str(self.orphan_remove)]
            try:
                with open(self.log_path, "ab") as log:
                    self.process = subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.config_path.parent), pass_fds=(read_end,),
                    )
            finally:
                os.close(read_end)
        try:
            self.ports = wait_for_ports(self.process, self.data_root, timeout, self.log, poll=0.01)
        except NotReady:
            forked = isinstance(self.process, ForkedProcess)
            self.stop()
            if not forked:
                raise
            # A forked server that failed (a Twisted whose reactor internals changed, say):
            # the same config in a new interpreter, whose log then tells the real story.
            return self.start(timeout)
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
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        return self.process.returncode

    def log(self) -> str:
        """Everything the child logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a fixture's server process."""
    out = dict(env) if env is not None else dict(os.environ)
    # Let the child cache compiled modules: it is started again and again in a test run.
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


class ForkedProcess:
    """A server forked by the :class:`ForkServer`: the parts of ``subprocess.Popen`` ChildServer uses.

    It is not our child (the fork server reaps it), so its end is seen by
    signalling it, and its exit status is not known (reported as 0).
    """

    stdin = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"mailsuite server {self.pid}", timeout or 0)
            time.sleep(0.005)
        return 0

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """``runner --fork-server``: one process that imported the server, forking one per start.

    Its stdin is its lifeline: it ends when this process closes it or dies,
    and the servers it forked stop and remove their directories then
    (see mailsuite.testing.runner.fork_server).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        import threading

        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            [sys.executable, "-m", "mailsuite.testing.runner", "--fork-server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(env),
        )
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(self, config_path: Path, log_path: Path, remove: Path | None, timeout: float = 60.0) -> ForkedProcess:
        """A new server for ``config_path``; OSError when the fork server cannot make one."""
        import select

        request = {"config": str(config_path), "log": str(log_path), "cwd": str(config_path.parent), "remove": str(remove) if remove else None}
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            try:
                self.process.stdin.write(json.dumps(request).encode() + b"\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise OSError("the fork server is gone") from None
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            line = self.process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise OSError("the fork server did not answer")
        return ForkedProcess(int(line))

    def close(self) -> None:
        """End it (the servers it forked stop too, as orphans)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
