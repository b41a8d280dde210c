"""A minimal Marionette client: enough to run chrome-context JavaScript in Thunderbird.

Why our own: we need five commands of a small framed-JSON protocol, not a
dependency (Mozilla's marionette_driver and its mozbase packages) for them.
Marionette (Gecko's remote protocol, enabled with ``--marionette``) frames
every message as
``<decimal length>:<JSON>``.  The server speaks first with
``{"applicationType": "gecko", "marionetteProtocol": 3}``; a command is
``[0, id, name, params]`` and its answer ``[1, id, error, result]`` where
``error`` is ``null`` or ``{"error", "message", "stacktrace"}``.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class MarionetteError(Exception):
    """A command failed inside the browser (script exception, timeout...)."""


class Marionette:
    """One Marionette connection; ``execute`` runs a script in the chrome context."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.next_id = 0
        hello = self._receive()
        if not isinstance(hello, dict) or hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected greeting {hello!r}")

    @classmethod
    def connect(cls, host: str, port_file: Any, deadline: float, alive: Any = lambda: True) -> "Marionette":
        """Wait for ``port_file`` (the profile's MarionetteActivePort) and connect.

        ``alive()`` returning False (the browser exited) stops the wait early.
        """
        while True:
            if not alive():
                raise MarionetteError("the browser exited before Marionette listened")
            try:
                port = int(port_file.read_text().strip())
                return cls(host, port)
            except (FileNotFoundError, ValueError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise MarionetteError("Marionette did not start in time") from None
                time.sleep(0.1)

    # -- framing -------------------------------------------------------------
    def _receive(self) -> Any:
        while True:
            length, colon, rest = self.buffer.partition(b":")
            if colon and len(rest) >= int(length):
                size = int(length)
                self.buffer = rest[size:]
                return json.loads(rest[:size])
            chunk = self.sock.recv(65536)
            if not chunk:
                raise MarionetteError("Marionette closed the connection")
            self.buffer += chunk

    def command(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result (raises MarionetteError on an error)."""
        self.next_id += 1
        body = json.dumps([0, self.next_id, name, params or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            message = self._receive()
            if isinstance(message, list) and message[0] == 1 and message[1] == self.next_id:
                break
        _, _, error, result = message
        if error:
            raise MarionetteError(f"{name}: {error.get('error')}: {error.get('message')}\n{error.get('stacktrace', '')}")
        return result

    # -- the commands we use -------------------------------------------------------
    def start_session(self) -> None:
        """Open a WebDriver session and switch to the chrome (privileged) context."""
        self.command("WebDriver:NewSession", {"capabilities": {}})
        self.command("Marionette:SetContext", {"value": "chrome"})

    def execute(self, script: str, args: list[Any] | None = None, timeout: float = 60.0) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``; a returned Promise is awaited)."""
        self.command("WebDriver:SetTimeouts", {"script": int(timeout * 1000)})
        result = self.command("WebDriver:ExecuteScript", {"script": script, "args": args or [], "newSandbox": False})
        return result.get("value") if isinstance(result, dict) else result

    def quit(self) -> None:
        """Ask the application to quit (it closes the connection)."""
        try:
            self.command("Marionette:Quit", {"flags": ["eForceQuit"]})
        except (MarionetteError, OSError):
            pass

    def close(self) -> None:
        self.sock.close()
