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
from mailsuite.testing.mailroom import CapturedMessage, Mailroom, parse_message
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
        self._child = ChildServer(config_path, self._data_root / "data", self._data_root / "server.log")
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
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {payload.decode(errors='replace')}") from None
        return payload if raw else json.loads(payload)

    def _fetch(self, summaries: list[dict[str, Any]]) -> list[CapturedMessage]:
        found = []
        for item in summaries:
            raw = self._api("GET", f"messages/{urllib.parse.quote(item['id'])}/raw", raw=True)
            found.append(CapturedMessage(item["mailbox"], item["folder"], item["uid"], item["sender"], raw, parse_message(raw)))
        return found

    # -- users -------------------------------------------------------------------
    def _mailroom(self) -> Mailroom:
        if self._service is None:
            raise RuntimeError("the *_async methods need start_async() (Twisted tests)")
        return Mailroom(self._service.context)

    def add_user(self, address: str, password: str) -> None:
        """Create a user (strict mode) or pre-create a mailbox (capture mode)."""
        self._api("POST", "users", {"address": address, "password": password})

    def add_user_async(self, address: str, password: str) -> defer.Deferred[None]:
        """Twisted-test form of :meth:`add_user`."""
        return self._mailroom().add_user(address, password)

    # -- looking at mail -------------------------------------------------------
    def messages(self, to: str | None = None, from_: str | None = None, subject: str | None = None) -> list[CapturedMessage]:
        """Every stored message (all mailboxes and folders), filtered by substring of recipient, sender, subject."""
        listing = self._api("GET", "messages", query={"to": to, "from": from_, "subject": subject})
        return self._fetch(listing["messages"])

    def messages_async(self, to: str | None = None, from_: str | None = None, subject: str | None = None) -> defer.Deferred[list[CapturedMessage]]:
        """Twisted-test form of :meth:`messages`."""
        return defer.Deferred.fromCoroutine(self._mailroom().messages(to, from_, subject))

    def wait_for_messages(self, count: int, timeout: float = 5.0, to: str | None = None, from_: str | None = None, subject: str | None = None) -> list[CapturedMessage]:
        """Block until at least ``count`` messages match; AssertionError saying what was there on timeout."""
        answer = self._api("GET", "wait", query={"count": count, "timeout": timeout, "to": to, "from": from_, "subject": subject})
        if "error" in answer:
            filters = {k: v for k, v in {"to": to, "from_": from_, "subject": subject}.items() if v is not None}
            raise AssertionError(f"expected {count} message(s) matching {filters or 'anything'} within {timeout}s, found {len(answer['messages'])}")
        return self._fetch(answer["messages"])

    async def _wait_in_reactor(self, count: int, timeout: float, filters: dict[str, Any]) -> list[CapturedMessage]:
        from twisted.internet import reactor, task

        deadline = time.monotonic() + timeout
        while True:
            found = await self._mailroom().messages(**filters)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} message(s) matching {filters or 'anything'} within {timeout}s, found {len(found)}")
            await task.deferLater(reactor, 0.05, lambda: None)

    def wait_for_messages_async(self, count: int, timeout: float = 5.0, **filters: Any) -> defer.Deferred[list[CapturedMessage]]:
        """Twisted-test form of :meth:`wait_for_messages`."""
        return defer.Deferred.fromCoroutine(self._wait_in_reactor(count, timeout, filters))

    def purge(self) -> None:
        """Delete every stored message and pending fault (users and mailboxes stay)."""
        self._api("DELETE", "messages")
        self._api("DELETE", "faults")

    def purge_async(self) -> defer.Deferred[int]:
        """Twisted-test form of :meth:`purge`."""
        self.faults.clear()
        return defer.Deferred.fromCoroutine(self._mailroom().purge())

    # -- faults ------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        """Queue a fault for the SMTP server (works in both modes)."""
        if self._child is not None:
            self._api("POST", "faults", fault.as_dict())
        else:
            self.faults.add(fault)

    def fail_next(self, command: str, code: int, text: str = "Fault injected by test", count: int = 1) -> None:
        """The next ``count`` SMTP commands of that kind ("CONNECT", "MAIL", "RCPT", "DATA"...) get this reply."""
        self.add_fault(Fault(command, code=code, text=text, count=count))

    def delay_next(self, command: str, seconds: float, count: int = 1) -> None:
        """Delay the reply to the next ``count`` SMTP commands of that kind."""
        self.add_fault(Fault(command, delay=seconds, count=count))

    def drop_next(self, command: str, count: int = 1) -> None:
        """Close the connection instead of answering the next ``count`` SMTP commands of that kind."""
        self.add_fault(Fault(command, drop=True, count=count))
