"""Opening mail authentication for a running server (a PART of mailsuite.service).

``open_mailauth(context)`` sets ``context.mailauth`` to a :class:`MailAuth`
and returns the service that starts and stops its worker threads.

How the SMTP server uses it (all calls on the reactor thread):

* Submission (an authenticated user, 587/465/25 with AUTH), after the
  message is received and the server's own headers are added::

      header = await context.mailauth.sign_message(message, sender_domain, header_prefix=prefix)
      # header: the DKIM-Signature line(s), b"" when the domain has no key;
      # hand ``header + prefix`` as the header_prefix to queue.enqueue /
      # store.deliver: it covers ``prefix + message`` exactly as signed.

* Port 25 without AUTH (mail from other hosts): while DATA streams in, pass
  every line through ``f = context.mailauth.results_filter()``
  (``f.feed(line)`` returns the bytes to write; ``f.close()`` at the end);
  then::

      verdict = await context.mailauth.check_inbound(peer_ip, helo, mail_from, message)
      error = verdict.error()     # AuthenticationRejected 550 5.7.1 / AuthenticationTempFail 451 4.4.3
      if error: reply with it and discard the message
      else: deliver with verdict.header prepended (Delivery.header_prefix),
            to folder verdict.folder ("INBOX", or mailauth.quarantine_folder)

Implementation notes: the worker pool is stopped only after every running
check has finished; lookups started while stopping fail at once, so no
worker waits on a reactor that is shutting down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from mailsuite.config import Config
from mailsuite.mailauth import arc
from mailsuite.resolver import CachingResolver
from mailsuite.mailauth.inbound import InboundChecker, read_message
from mailsuite.mailauth.keys import KeyStore
from mailsuite.mailauth.results import ResultsFilter, strip_results
from mailsuite.mailauth.signing import Signer
from mailsuite.mailauth.verdict import ACCEPT, Verdict
from mailsuite.threads import LeanThreadPool, Runner

#: Worker threads for checks and signing.  Most of their time is spent waiting
#: for DNS answers (no GIL held); each inbound check uses two at once.
THREADS = 16


def key_dir(config: Config) -> Path:
    """Where DKIM keys live: ``mailauth.key_dir`` or ``<data_root>/dkim``."""
    return config.path(config.mailauth.key_dir) if config.mailauth.key_dir else config.data_path / "dkim"


class MailAuth:
    """DKIM signing and inbound checks for one server; the object behind ``context.mailauth``."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any, resolver: CachingResolver, *, threads: int = THREADS) -> None:
        self.config = config
        self.reactor = reactor
        self.authserv_id = config.hostname
        self.resolver = resolver  # the server's one DNS client (context.resolver)
        self.pool = LeanThreadPool(threads, name="mailsuite-mailauth")
        self._runner = Runner(reactor, self.pool)
        self.keys = KeyStore(key_dir(config), config.mailauth.selectors)
        self.signer = Signer(self.keys, config.mailauth.sign)
        self.checker = InboundChecker(reactor, self.resolver, self.pool, config.mailauth, self.authserv_id)
        self._active = 0
        self._idle: list[defer.Deferred[None]] = []
        self._running = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads."""
        if not self._running:
            self.pool.start()
            self._running = True
            self.resolver.closing = False

    def stop(self) -> defer.Deferred[None]:
        """Refuse new lookups, wait for running jobs, then stop the threads."""
        self.resolver.closing = True
        d: defer.Deferred[None] = defer.Deferred()
        if self._active:
            self._idle.append(d)
        else:
            d.callback(None)

        def stop_pool(_: Any) -> None:
            if self._running:
                self._running = False
                self.pool.stop()

        return d.addCallback(stop_pool)

    def _track(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        self._active += 1

        def done(result: Any) -> Any:
            self._active -= 1
            if not self._active:
                waiting, self._idle = self._idle, []
                for w in waiting:
                    w.callback(None)
            return result

        return d.addBoth(done)

    # -- the API for the SMTP server -------------------------------------------
    def sign(self, message: bytes, domain: str) -> bytes:
        """DKIM-Signature line(s) for ``message`` sent as ``domain`` (synchronous: small messages, tests).

        Unlike :meth:`sign_message` (the server's), it signs whatever the From
        says, so tests can make signatures that do not align.
        """
        return self.signer.sign(message, domain, from_domain_only=False)

    def sign_message(self, message: Any, domain: str, header_prefix: bytes = b"") -> defer.Deferred[bytes]:
        """DKIM-Signature line(s) for ``header_prefix + message``, computed in a worker thread.

        ``message`` is bytes or an IIncomingMessage; ``domain`` is the sending
        domain the SMTP server has verified the user may use (its From
        domain).  Fires with ``b""`` when signing is off, the domain has no key
        or the message's From does not name ``domain`` alone.
        """
        if not self.config.mailauth.sign or not self.keys.keys_for(domain):
            return defer.succeed(b"")

        def work() -> bytes:
            return self.signer.sign(header_prefix + read_message(message), domain)

        return self._track(self._runner.run(work))

    def arc_seal_message(self, message: Any, header_prefix: bytes) -> defer.Deferred[bytes]:
        """The ARC set for ``header_prefix + message`` (the prefix starting with our Authentication-Results).

        Fires with ``b""`` when ``mailauth.arc_domain`` is empty or has no RSA key.
        """
        domain = self.config.mailauth.arc_domain
        keys = [k for k in self.keys.keys_for(domain) if k.algorithm.startswith("rsa")] if domain else []
        if not keys:
            return defer.succeed(b"")

        def work() -> bytes:
            return arc.seal(header_prefix + read_message(message), keys[0], self.authserv_id)

        return self._track(self._runner.run(work))

    def check_inbound(self, client_ip: str, helo: str, mail_from: str, message: Any,
                      session_id: str = "-") -> defer.Deferred[Verdict]:
        """SPF, DKIM and DMARC for a message from another host; never fails (see Verdict.action).

        ``session_id`` is the SMTP connection id for the log lines.  With
        ``mailauth.verify_inbound = false`` the verdict is accept with no header.
        """
        if not self.config.mailauth.verify_inbound:
            return defer.succeed(Verdict(ACCEPT))
        return self._track(self.checker.check(client_ip, helo, mail_from, message, session_id))

    def results_filter(self) -> ResultsFilter:
        """A line filter removing Authentication-Results fields that claim to be ours (RFC 8601 5)."""
        return ResultsFilter(self.authserv_id)

    def strip_results(self, message: bytes) -> bytes:
        """``message`` without Authentication-Results fields claiming to be ours."""
        return strip_results(message, self.authserv_id)


class MailAuthService(service.Service):
    """Starts the worker threads with the server and stops them cleanly."""

    def __init__(self, mailauth: MailAuth) -> None:
        self.mailauth = mailauth
        self.setName("mailauth")

    log = Logger()

    def startService(self) -> None:
        super().startService()
        self.mailauth.start()
        settings = self.mailauth.config.mailauth
        self.log.info(
            "mail authentication: DKIM signing {sign}, inbound checks {verify} (authserv-id {authserv_id}, DNS {dns})",
            sign="on" if settings.sign else "off", verify="on" if settings.verify_inbound else "off",
            authserv_id=self.mailauth.authserv_id, dns=self.mailauth.config.queue.resolver or "resolv.conf",
        )

    def stopService(self) -> Any:
        super().stopService()
        return self.mailauth.stop()


def open_mailauth(context: Any) -> MailAuthService:
    """Set ``context.mailauth``; return the service running its threads."""
    mailauth = MailAuth(context.config, context.reactor, context.resolver)
    context.mailauth = mailauth
    return MailAuthService(mailauth)
