"""Drive a full-screen terminal program (mutt) the way a user does, through tmux.

Why tmux: a curses program needs a real terminal and draws with escape
sequences; tmux gives it one and hands back the rendered screen as plain text
(``capture-pane``), so a test can wait for what a user would see instead of
sleeping.  Each :class:`TmuxScreen` runs its own tmux server on a private
socket (``-S``, in a temporary directory) with no user configuration, and
:meth:`TmuxScreen.close` kills that server (and with it the program) by its
own socket, never others, and removes the socket.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Mapping, Sequence

#: Printed in the pane when the program ends, so a test can see its exit status.
EXIT_MARK = "[program exited with status "


class TmuxScreen:
    """One program in a detached tmux pane of a fixed size."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 width: int = 150, height: int = 40) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise RuntimeError("tmux is not installed (Debian package tmux)")
        self.tmux = tmux
        self._socket_dir = tempfile.mkdtemp(prefix="mailsuite-tmux-")
        self.socket = os.path.join(self._socket_dir, "socket")
        environment = dict(env if env is not None else os.environ)
        environment.pop("TMUX", None)
        self._env = environment
        # Keep the pane after the program ends and show how it ended.
        script = f"{shlex.join(argv)}; echo; echo '{EXIT_MARK}'$?']'; sleep 600"
        self._run("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height),
                  "sh", "-c", script, cwd=cwd)

    def _run(self, *args: str, cwd: str | None = None) -> str:
        result = subprocess.run([self.tmux, "-S", self.socket, *args], capture_output=True, text=True,
                                env=self._env, cwd=cwd, timeout=10)
        if result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def send(self, *keys: str) -> None:
        """Press keys: tmux key names ("Enter", "Escape", "C-u") or literal text via :meth:`type`."""
        self._run("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        """Type text literally (no key-name interpretation)."""
        self._run("send-keys", "-t", "main", "-l", text)

    def screen(self) -> str:
        """The visible screen as text, one line per terminal row."""
        return self._run("capture-pane", "-p", "-t", "main")

    def lines(self) -> list[str]:
        return self.screen().splitlines()

    def wait_for(self, condition: str | re.Pattern[str] | Callable[[str], bool], timeout: float = 8.0,
                 what: str | None = None) -> str:
        """Poll the screen until ``condition`` holds; return that screen or fail showing the last one."""
        if isinstance(condition, str):
            needle = condition
            check: Callable[[str], bool] = lambda s: needle in s  # noqa: E731
        elif isinstance(condition, re.Pattern):
            pattern = condition
            check = lambda s: pattern.search(s) is not None  # noqa: E731
        else:
            check = condition
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or condition!r}; screen:\n{text}")
            time.sleep(0.05)

    def exit_status(self) -> int | None:
        """The program's exit status once it has ended, else None."""
        m = re.search(re.escape(EXIT_MARK) + r"(\d+)\]", self.screen())
        return int(m.group(1)) if m else None

    def close(self) -> None:
        """Kill this tmux server (and the program in it)."""
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], capture_output=True, env=self._env, timeout=10)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
