"""Fault injection for SMTP: make the next N commands of a kind misbehave.

A test (or the HTTP API) adds :class:`Fault` entries to the server's
:class:`FaultPlan`; the SMTP server asks :meth:`FaultPlan.take` before
answering a command and, when a fault is due, answers with the chosen reply,
waits, or drops the connection, as Mailpit's "chaos" does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: Commands a fault can target; "CONNECT" is the greeting.
FAULT_COMMANDS = frozenset({"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "AUTH", "QUIT"})


@dataclass
class Fault:
    """What happens to the next ``count`` commands named ``command``.

    ``code``/``text``: the reply sent instead of the real one (None: the real
    reply).  ``delay``: seconds to wait before the reply.  ``drop``: close the
    connection instead of replying.
    """

    command: str
    code: int | None = None
    text: str = "Fault injected by test"
    count: int = 1
    delay: float = 0.0
    drop: bool = False

    def __post_init__(self) -> None:
        self.command = self.command.upper()
        if self.command not in FAULT_COMMANDS:
            raise ValueError(f"command must be one of {', '.join(sorted(FAULT_COMMANDS))}")
        if self.code is not None and not 200 <= self.code <= 599:
            raise ValueError("code must be an SMTP reply code from 200 to 599")
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.delay < 0:
            raise ValueError("delay must not be negative")

    def reply_line(self) -> bytes:
        """The reply to send in place of the real one."""
        assert self.code is not None
        text = self.text.replace("\r", " ").replace("\n", " ")
        return f"{self.code} {text}\r\n".encode("utf-8")

    def as_dict(self) -> dict[str, object]:
        """JSON form for the HTTP API."""
        return {"command": self.command, "code": self.code, "text": self.text, "count": self.count, "delay": self.delay, "drop": self.drop}


class FaultPlan:
    """The pending faults, safe to change from the test's thread while the reactor runs."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        """Queue a fault behind any earlier one for the same command."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        """A copy of the pending faults, in order."""
        with self._lock:
            return [Fault(**f.as_dict()) for f in self._faults]  # type: ignore[arg-type]

    def take(self, command: str) -> Fault | None:
        """The fault due for this command (using up one of its count), or None."""
        command = command.upper()
        with self._lock:
            for fault in self._faults:
                if fault.command == command:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None
