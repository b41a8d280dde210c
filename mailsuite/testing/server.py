"""``MailServer``: the whole mailsuite server as a test fixture.

Implementation notes:
- One MailServer = one complete server (every protocol, the real Maildir
  store) on 127.0.0.1 ephemeral ports with its own temporary data root, so
  two fixtures in one process share neither ports nor mail.
- Synchronous tests (``with MailServer() as s:``) get the server in a child
  process (process.py) and control it through its HTTP JSON API: the test's
  blocking clients never starve it, and no reactor is started in the test
  process, so trial or pytest-twisted tests in the same run are unaffected.
- Twisted tests (trial, pytest-twisted) may instead run it inside their
  reactor with the ``*_async`` methods, which return Deferreds.
- Reading mail goes through the store's API (Mailroom), never through file
  paths, so the fixture sees exactly what POP3 and IMAP clients see.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import defer

from mailsuite.config import LISTENER_NAMES
from mailsuite.testing.faults import Fault, FaultPlan
from mailsuite.testing.mailroom import CapturedMessage, Mailroom, mailroom_for
from mailsuite.testing.process import ChildServer, render_toml


class MailServer:
    """A complete mailsuite server for a test, in capture mode unless ``strict``.

    Capture mode: every recipient is accepted into a mailbox of its own,
    nothing is relayed, and any address logs in with any password (over plain
    connections too).  Strict mode: the production policies (users, AUTH
    only over TLS, relay rules); add users with :meth:`add_user`.
    ``config`` takes extra dotted settings, e.g. ``{"limits.recipients": 5}``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        strict: bool = False,
        domains: tuple[str, ...] | list[str] = ("example.test",),
        hostname: str = "mail.example.test",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.strict = strict
        self.domains = [d.lower() for d in domains]
        self.hostname = hostname
        self.extra_config = dict(config or {})
        self.faults = FaultPlan()  # used in-process (async mode); sync mode posts to the child
        self.ports: dict[str, int] = {}
        self._data_root: Path | None = None
        self._child: ChildServer | None = None
        self._service: Any = None

    # -- configuration -----------------------------------------------------
    def settings(self, data_root: Path) -> dict[str, Any]:
        """The dotted config settings this server runs with."""
        settings: dict[str, Any] = {
            "hostname": self.hostname,
            "domains": self.domains,
            "data_root": str(data_root),
            "tls.allow_plaintext_auth": not self.strict,
            "capture.enabled": not self.strict,
            "capture.http_enabled": True,
            "capture.http_address": self.host,
            "capture.http_port": 0,
            # A test fixture never asks DNS about senders (strict mode included).
            "mailauth.verify_inbound": False,
        }
        for name in LISTENER_NAMES:
            settings[f"{name}.address"] = self.host
            settings[f"{name}.port"] = 0
        settings.update(self.extra_config)
        return settings

    # -- lifecycle (synchronous tests: a child process) -------------------------------
    def start(self) -> "MailServer":
        """Start the server in a child process and wait until every listener is bound."""
        if self.running:
            raise RuntimeError("this MailServer is running already")
        self._data_root = Path(tempfile.mkdtemp(prefix="mailsuite-test-"))
        config_path = self._data_root / "mailsuite.toml"
        config_path.write_text(render_toml(self.settings(self._data_root / "data")))
        self._child = ChildServer(config_path, self._data_root / "data", self._data_root / "server.log", orphan_remove=self._data_root)
        try:
            self.ports = self._child.start()
        except Exception:
            self._cleanup()
            raise
        return self

    def stop(self) -> None:
        """Stop the child process and remove the temporary data root."""
        if self._child is not None:
            self._child.stop()
        self._cleanup()

    def __enter__(self) -> "MailServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """What the server logged (child-process mode)."""
        return self._child.log() if self._child is not None else ""

    def _cleanup(self) -> None:
        self._child = None
        self.ports = {}
        if self._data_root is not None:
            shutil.rmtree(self._data_root, ignore_errors=True)
            self._data_root = None

    @property
    def running(self) -> bool:
        """True between start and stop."""
        return self._child is not None or self._service is not None

    # -- lifecycle (Twisted tests: inside the running reactor) --------------------
    async def _start_in_reactor(self) -> "MailServer":
        from twisted.internet import reactor

        from mailsuite.config import parse
        from mailsuite.service import build

        self._data_root = Path(tempfile.mkdtemp(prefix="mailsuite-test-"))
        config = parse(render_toml(self.settings(self._data_root / "data")), str(self._data_root / "mailsuite.toml"))
        self._service = build(config, reactor)
        self._service.context.faults = self.faults
        self._service.startService()
        await defer.gatherResults([s.ready for s in self._service.listeners() if s.ready is not None], consumeErrors=True)
        self.ports = self._service.bound_ports()
        return self

    def start_async(self) -> defer.Deferred["MailServer"]:
        """Start inside the running reactor (trial / pytest-twisted); fires when listening."""
        if self.running:
            return defer.fail(RuntimeError("this MailServer is running already"))
        return defer.Deferred.fromCoroutine(self._start_in_reactor())

    def stop_async(self) -> defer.Deferred[None]:
        """Stop the in-reactor server and remove its data root."""
        service, self._service = self._service, None
        if service is None:
            return defer.succeed(None)
        return defer.maybeDeferred(service.stopService).addBoth(lambda result: (self._cleanup(), None)[1])

    # -- where to connect ------------------------------------------------------
    def _port(self, name: str) -> int:
        if name not in self.ports:
            raise RuntimeError(f"the {name} listener is not running (start the server first)")
        return self.ports[name]

    smtp_port = property(lambda self: self._port("smtp"), doc="Inbound SMTP (port 25 role), plain.")
    submission_port = property(lambda self: self._port("submission"), doc="Submission with STARTTLS (587 role).")
    submissions_port = property(lambda self: self._port("submissions"), doc="Submission over implicit TLS (465 role).")
    pop3_port = property(lambda self: self._port("pop3"), doc="POP3 with STLS (110 role).")
    pop3s_port = property(lambda self: self._port("pop3s"), doc="POP3 over implicit TLS (995 role).")
    imap_port = property(lambda self: self._port("imap"), doc="IMAP with STARTTLS (143 role).")
    imaps_port = property(lambda self: self._port("imaps"), doc="IMAP over implicit TLS (993 role).")
    http_port = property(lambda self: self._port("http"), doc="The HTTP JSON API.")

    @property
    def api_url(self) -> str:
        """Base URL of the HTTP JSON API, e.g. http://127.0.0.1:PORT/api."""
        return f"http://{self.host}:{self.http_port}/api"

    @property
    def data_root(self) -> Path:
        """The server's data root (temporary)."""
        if self._data_root is None:
            raise RuntimeError("the server is not running")
        return self._data_root / "data"

    @property
    def ca_file(self) -> str:
        """PEM file of the server's (self-signed) certificate, for clients to trust."""
        return str(self.data_root / "tls" / "cert.pem")

    def ssl_context(self) -> ssl.SSLContext:
        """A client ssl context trusting this server (host name not checked: it is a test certificate)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = False
        return context

    # -- the HTTP control channel (synchronous mode) --------------------------------
    def _api(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None, raw: bool = False) -> Any:
        if self._child is None:
            raise RuntimeError("the blocking methods need start(); in a Twisted test use the *_async methods")
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.api_url}/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=330) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            if e.code == 408:
                return json.loads(payload)
            try:
                reason = str(json.loads(payload)["error"])
            except (ValueError, KeyError, TypeError):
                reason = payload.decode(errors="replace")
            raise MailServerError(e.code, reason, f"{method} /api/{path}") from None
        return payload if raw else json.loads(payload)

    @staticmethod
    def _captured(items: list[dict[str, Any]]) -> list[CapturedMessage]:
        return [
            CapturedMessage(item["mailbox"], item["folder"], item["uid"], item["sender"], base64.b64decode(item["raw_base64"]),
                            item["recipients"], queue_id=item.get("queue_id"), seq=item.get("seq", 0))
            for item in items
        ]

    # -- users -------------------------------------------------------------------
    def _mailroom(self) -> Mailroom:
        if self._service is None:
            raise RuntimeError("the *_async methods need start_async() (Twisted tests)")
        return mailroom_for(self._service.context)

    def add_user(self, address: str, password: str) -> None:
        """Create a user (strict mode; a fast test-strength hash) or pre-create a mailbox (capture mode).

        Raises :class:`MailServerError` with the reason: status 409 when the
        user exists, 422 when the domain is not local (see :meth:`add_domain`).
        """
        self._api("POST", "users", {"address": address, "password": password})

    def add_user_async(self, address: str, password: str) -> defer.Deferred[None]:
        """Twisted-test form of :meth:`add_user` (fails with the directory's own exception)."""
        return self._mailroom().add_user(address, password)

    def add_domain(self, domain: str) -> None:
        """Make a domain local (strict mode; capture mode takes every domain). 409 if it is already."""
        self._api("POST", "domains", {"domain": domain})

    def add_domain_async(self, domain: str) -> defer.Deferred[None]:
        """Twisted-test form of :meth:`add_domain`."""
        return self._mailroom().add_domain(domain)

    def reset_throttle(self) -> None:
        """Forget failed logins (strict mode slows down and then blocks a client that keeps failing)."""
        if self._child is not None:
            self._api("DELETE", "throttle")
        else:
            self._mailroom().reset_throttle()

    # -- looking at mail -------------------------------------------------------
    def messages(self, to: str | None = None, from_: str | None = None, subject: str | None = None, mailbox: str | None = None) -> list[CapturedMessage]:
        """Every stored message (all mailboxes and folders, arrival order), filtered.

        ``to``, ``from_``, ``subject``: case-insensitive substrings of the
        recipients (envelope, To, Cc), the sender (envelope, From) and the
        Subject; ``mailbox``: exactly this mailbox.  One HTTP request.
        """
        listing = self._api("GET", "messages", query={"to": to, "from": from_, "subject": subject, "mailbox": mailbox, "content": 1})
        return self._captured(listing["messages"])

    def messages_async(self, to: str | None = None, from_: str | None = None, subject: str | None = None, mailbox: str | None = None) -> defer.Deferred[list[CapturedMessage]]:
        """Twisted-test form of :meth:`messages`."""
        return defer.Deferred.fromCoroutine(self._mailroom().messages(to, from_, subject, mailbox))

    def _wait(self, count: int, timeout: float, settle: float, filters: dict[str, Any]) -> tuple[bool, list[CapturedMessage]]:
        query = {"count": count, "timeout": timeout, "settle": settle, "content": 1, "to": filters.get("to"), "from": filters.get("from_"),
                 "subject": filters.get("subject"), "mailbox": filters.get("mailbox")}
        answer = self._api("GET", "wait", query=query)
        return "error" not in answer, self._captured(answer["messages"])

    def wait_for_messages(self, count: int, timeout: float = 5.0, to: str | None = None, from_: str | None = None, subject: str | None = None,
                          mailbox: str | None = None) -> list[CapturedMessage]:
        """Block until at least ``count`` messages match and return every match; AssertionError listing what is there on timeout."""
        filters = _filters(to, from_, subject, mailbox)
        reached, found = self._wait(count, timeout, 0.0, filters)
        if not reached:
            raise AssertionError(_shortfall(f"at least {count}", filters, timeout, found))
        return found

    def expect_messages(self, count: int, timeout: float = 5.0, to: str | None = None, from_: str | None = None, subject: str | None = None,
                        mailbox: str | None = None, settle: float = 0.1) -> list[CapturedMessage]:
        """Exactly ``count`` matching messages: waits until they are there, then ``settle`` seconds more.

        AssertionError, listing the messages found, on a timeout or when more
        than ``count`` match (at once or within ``settle``).
        """
        filters = _filters(to, from_, subject, mailbox)
        reached, found = self._wait(count, timeout, settle, filters)
        if not reached or len(found) != count:
            raise AssertionError(_shortfall(f"exactly {count}", filters, timeout, found))
        return found

    async def _wait_in_reactor(self, count: int, timeout: float, filters: dict[str, Any], exact: bool = False, settle: float = 0.0) -> list[CapturedMessage]:
        from twisted.internet import reactor, task

        deadline = time.monotonic() + timeout
        while True:
            found = await self._mailroom().messages(**filters)
            if len(found) >= count:
                if exact and settle > 0 and len(found) == count:
                    await task.deferLater(reactor, settle, lambda: None)
                    found = await self._mailroom().messages(**filters)
                if exact and len(found) != count:
                    raise AssertionError(_shortfall(f"exactly {count}", filters, timeout, found))
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(_shortfall(f"{'exactly' if exact else 'at least'} {count}", filters, timeout, found))
            await task.deferLater(reactor, 0.05, lambda: None)

    def wait_for_messages_async(self, count: int, timeout: float = 5.0, **filters: Any) -> defer.Deferred[list[CapturedMessage]]:
        """Twisted-test form of :meth:`wait_for_messages`."""
        return defer.Deferred.fromCoroutine(self._wait_in_reactor(count, timeout, filters))

    def expect_messages_async(self, count: int, timeout: float = 5.0, settle: float = 0.1, **filters: Any) -> defer.Deferred[list[CapturedMessage]]:
        """Twisted-test form of :meth:`expect_messages`."""
        return defer.Deferred.fromCoroutine(self._wait_in_reactor(count, timeout, filters, exact=True, settle=settle))

    def purge(self) -> None:
        """Delete every stored message and pending fault (strict mode: users stay; capture mode: addresses are forgotten)."""
        self._api("DELETE", "messages")
        self._api("DELETE", "faults")

    def purge_async(self) -> defer.Deferred[int]:
        """Twisted-test form of :meth:`purge`."""
        self.faults.clear()
        return defer.Deferred.fromCoroutine(self._mailroom().purge())

    # -- faults ------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        """Add a fault to the server's plan (works in both modes); see :class:`mailsuite.testing.Fault`."""
        if self._child is not None:
            self._api("POST", "faults", fault.as_dict())
        else:
            self.faults.add(fault)

    def clear_faults(self) -> None:
        """Forget every pending fault (persistent ones included)."""
        if self._child is not None:
            self._api("DELETE", "faults")
        else:
            self.faults.clear()

    def fail_next(self, command: str, code: int | str, text: str = "Fault injected by test", count: int | None = 1, **target: Any) -> None:
        """The next ``count`` commands of that kind get this reply (``count=None``: every one until cleared).

        SMTP by default (``code`` a reply code); ``protocol="imap"`` with code
        "NO", "BAD" or "BYE", ``protocol="pop3"`` with "-ERR".  ``target``
        takes the other :class:`Fault` fields: ``protocol``, ``port``,
        ``sender``, ``recipient``, ``user``, ``probability``, ``delay``.
        """
        self.add_fault(Fault(command, code=code, text=text, count=count, **target))

    def delay_next(self, command: str, seconds: float, count: int | None = 1, **target: Any) -> None:
        """Delay the reply to the next ``count`` commands of that kind (same ``target`` keywords as :meth:`fail_next`)."""
        self.add_fault(Fault(command, delay=seconds, count=count, **target))

    def drop_next(self, command: str, count: int | None = 1, **target: Any) -> None:
        """Close the connection instead of answering the next ``count`` commands of that kind."""
        self.add_fault(Fault(command, drop=True, count=count, **target))

    def drop_after_store(self, count: int | None = 1, command: str = "DATA", **target: Any) -> None:
        """Store the next message, then drop the connection before the 250 (a client that retries sends a duplicate)."""
        self.add_fault(Fault(command, after_store=True, count=count, **target))


class MailServerError(RuntimeError):
    """The server refused a fixture request; ``status`` is the HTTP status, ``reason`` the server's own words."""

    def __init__(self, status: int, reason: str, request: str = "") -> None:
        super().__init__(f"{request}: HTTP {status}: {reason}" if request else f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


def _filters(to: str | None, from_: str | None, subject: str | None, mailbox: str | None) -> dict[str, str]:
    return {k: v for k, v in {"to": to, "from_": from_, "subject": subject, "mailbox": mailbox}.items() if v is not None}


def _shortfall(expected: str, filters: dict[str, Any], timeout: float, found: list[CapturedMessage]) -> str:
    """The assertion text: what was expected, and every message that is there."""
    lines = [f"expected {expected} message(s) matching {filters or 'anything'} within {timeout}s, found {len(found)}" + (":" if found else "")]
    for m in found[:20]:
        lines.append(f"  - {m.mailbox} [{m.folder}] from <{m.sender}> subject {m.subject!r}")
    if len(found) > 20:
        lines.append(f"  ... and {len(found) - 20} more")
    return "\n".join(lines)
