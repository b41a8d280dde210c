"""Fault injection for tests: make SMTP, IMAP and POP3 commands misbehave on purpose.

A test (or the HTTP API) adds :class:`Fault` entries to the server's
:class:`FaultPlan`; each protocol asks :meth:`FaultPlan.take` before it
answers a command and, when a fault is due, answers with the chosen reply,
waits, or drops the connection, as Mailpit's "chaos" does.

Implementation notes:
- The protocols see a narrow hook: ``plan.take(...)`` returns None (the
  common case: go on) or a :class:`Fault`; SMTP carries out a fault itself
  (its reply codes, its transaction), IMAP and POP3 call :meth:`Fault.perform`
  / :meth:`Fault.greet` with their own write / close / abort functions.  A
  server without a plan (production) never builds one: ``context.faults`` is None.
- A fault targets one protocol and one command ("CONNECT" is the greeting;
  an IMAP "FETCH" fault also hits "UID FETCH"), and optionally a listening
  port, the envelope sender, a recipient or the logged-in user; it fires on
  the next ``count`` matching commands, or on every one until cleared when
  ``count`` is None, each time with ``probability``.
- ``after_store`` (SMTP DATA/BDAT): the message is stored, then the
  connection drops instead of the final 250, so a client that retries
  delivers a duplicate (RFC 5321 6.1 allows it; the test checks the client copes).
- The plan is changed from the HTTP API or a test's thread while the reactor
  reads it: a lock guards the list.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Awaitable, Callable, Iterable

from twisted.internet import defer

PROTOCOLS = ("smtp", "imap", "pop3")

#: Commands a fault can target per protocol; "CONNECT" is the greeting.  IMAP takes any command name.
FAULT_COMMANDS = {
    "smtp": frozenset({"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "AUTH", "QUIT", "STARTTLS", "NOOP", "VRFY", "EXPN", "HELP"}),
    "pop3": frozenset({"CONNECT", "CAPA", "STLS", "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT"}),
}
_IMAP_COMMAND = re.compile(r"^(?:UID )?[A-Z][A-Z0-9-]*$")
#: Replies a fault may send instead of the real one, per protocol (SMTP: a reply code).
IMAP_REPLIES = ("NO", "BAD", "BYE")
POP3_REPLIES = ("-ERR",)
_ADDRESS = re.compile(r"<([^>]*)>")


@dataclass
class Fault:
    """What happens to the matching commands (see the module notes).

    ``code``: the reply sent instead of the real one: an SMTP reply code
    (200-599), IMAP "NO", "BAD" or "BYE" (BYE closes the connection), POP3
    "-ERR"; None sends the real reply.  ``delay``: seconds to wait first.
    ``drop``: close the connection instead of replying.
    """

    command: str
    code: int | str | None = None
    text: str = "Fault injected by test"
    count: int | None = 1
    delay: float = 0.0
    drop: bool = False
    protocol: str = "smtp"
    after_store: bool = False
    probability: float = 1.0
    port: int | None = None
    sender: str | None = None
    recipient: str | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        self.protocol = str(self.protocol).lower()
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        self.command = " ".join(str(self.command).upper().split())
        if self.protocol == "imap":
            if not _IMAP_COMMAND.match(self.command):
                raise ValueError("command must be an IMAP command name such as FETCH, UID FETCH or CONNECT")
        elif self.command not in FAULT_COMMANDS[self.protocol]:
            raise ValueError(f"command must be one of {', '.join(sorted(FAULT_COMMANDS[self.protocol]))}")
        self._check_code()
        if self.after_store:
            if self.protocol != "smtp" or self.command not in ("DATA", "BDAT"):
                raise ValueError("after_store applies to SMTP DATA and BDAT only")
            self.drop, self.code = True, None
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise ValueError("count must be at least 1, or None for every matching command until cleared")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if not 0 < self.probability <= 1:
            raise ValueError("probability must be more than 0 and at most 1")
        if self.port is not None and not 0 < int(self.port) < 65536:
            raise ValueError("port must be a TCP port number")

    def _check_code(self) -> None:
        if self.code is None:
            return
        if self.protocol == "smtp":
            try:
                self.code = int(self.code)
            except (TypeError, ValueError):
                raise ValueError("code must be an SMTP reply code from 200 to 599") from None
            if not 200 <= self.code <= 599:
                raise ValueError("code must be an SMTP reply code from 200 to 599")
            return
        code = str(self.code).upper()
        if self.protocol == "pop3":
            code = "-ERR" if code in ("ERR", "-ERR") else code
            if code not in POP3_REPLIES:
                raise ValueError('code must be "-ERR" for POP3')
        elif code not in IMAP_REPLIES or (self.command == "CONNECT" and code != "BYE"):
            raise ValueError('code must be "NO", "BAD" or "BYE" for IMAP ("BYE" only for CONNECT)')
        self.code = code

    # -- matching ------------------------------------------------------------------
    def matches(self, protocol: str, command: str, port: Callable[[], int | None], user: str | None, sender: str | None, recipients: Iterable[str]) -> bool:
        """True when this fault targets that command on that connection and transaction."""
        if protocol != self.protocol:
            return False
        if command != self.command and not (protocol == "imap" and command == f"UID {self.command}"):
            return False
        if self.port is not None and port() != self.port:
            return False
        if self.user is not None and (user or "").lower() != self.user.lower():
            return False
        if self.sender is not None and (sender is None or sender.lower() != self.sender.lower()):
            return False
        if self.recipient is not None and self.recipient.lower() not in {r.lower() for r in recipients}:
            return False
        return True

    # -- carrying it out --------------------------------------------------------------
    @property
    def closes(self) -> bool:
        """True when the reply ends the connection (IMAP BYE, a refused greeting)."""
        return self.code == "BYE" or (self.command == "CONNECT" and self.code is not None and self.protocol != "smtp")

    def reply_line(self, tag: str = "") -> bytes:
        """The reply to send in place of the real one (``tag``: the IMAP command's tag)."""
        assert self.code is not None
        text = self.text.replace("\r", " ").replace("\n", " ")
        if self.protocol == "imap":
            return f"* BYE {text}\r\n".encode() if self.code == "BYE" else f"{tag} {self.code} {text}\r\n".encode()
        if self.protocol == "pop3":
            return f"-ERR {text}\r\n".encode()
        return f"{self.code} {text}\r\n".encode("utf-8")

    async def perform(self, clock: Any, write: Callable[[bytes], Any], close: Callable[[], Any], abort: Callable[[], Any], tag: str = "") -> bool:
        """Wait, drop or reply (IMAP and POP3); True when that took the real reply's place."""
        if self.delay:
            await sleep(clock, self.delay)
        if self.drop:
            abort()
            return True
        if self.code is None:
            return False
        write(self.reply_line(tag))
        if self.closes:
            close()
        return True

    def greet(self, clock: Any, greeting: Callable[[], Any], write: Callable[[bytes], Any], close: Callable[[], Any], abort: Callable[[], Any]) -> None:
        """A CONNECT fault: the greeting after ``delay``, or the fault's reply / a drop instead."""
        d = defer.ensureDeferred(self.perform(clock, write, close, abort))
        d.addCallback(lambda replaced: None if replaced else greeting())

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the HTTP API."""
        return asdict(self)


def sleep(clock: Any, seconds: float) -> Awaitable[None]:
    """A Deferred firing after ``seconds`` on ``clock``."""
    d: defer.Deferred[None] = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d


def _port_of(transport: Any) -> int | None:
    try:
        return int(transport.getHost().port)
    except Exception:  # noqa: BLE001 - a test transport without an address
        return None


def _address_in(arg: str) -> str | None:
    match = _ADDRESS.search(arg or "")
    return match.group(1) if match else None


class FaultPlan:
    """The pending faults, safe to change from the test's thread while the reactor runs."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.random = random.random  # replaceable in tests of the probability

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
            return [Fault(**{f.name: getattr(fault, f.name) for f in fields(Fault)}) for fault in self._faults]

    def take(self, command: str, protocol: str = "smtp", *, transport: Any = None, user: Any = None,
             sender: str | None = None, recipients: Iterable[str] = (), arg: str = "") -> Fault | None:
        """The fault due for this command (using up one of its count), or None.

        ``user``: the logged-in user (an address or an avatar with ``.address``);
        ``sender`` / ``recipients``: the transaction's envelope so far; ``arg``:
        the command's argument (SMTP MAIL and RCPT name their address there).
        """
        if not self._faults:
            return None
        command = command.upper()
        if protocol == "smtp" and command in ("MAIL", "RCPT"):
            address = _address_in(arg)
            if command == "MAIL":
                sender = address
            elif address is not None:
                recipients = [*recipients, address]
        user_name = getattr(user, "address", user)
        port_cache: list[int | None] = []

        def port() -> int | None:
            if not port_cache:
                port_cache.append(_port_of(transport))
            return port_cache[0]

        with self._lock:
            for fault in self._faults:
                if not fault.matches(protocol, command, port, user_name, sender, recipients):
                    continue
                if fault.probability < 1 and self.random() >= fault.probability:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return fault
        return None
