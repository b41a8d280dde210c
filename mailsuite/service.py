"""The one place that wires concrete classes into a running server.

:func:`build` turns a :class:`~mailsuite.config.Config` into a Twisted
``MultiService``: it opens the store, the user directory, the relay queue,
the TLS contexts and the login portal once, puts them in a
:class:`ServerContext`, and asks each protocol package for a factory through
``LISTENER_BUILDERS``.  Protocol packages never construct these shared
objects themselves.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsuite.compat import forget_exit_signal
from mailsuite.config import IMPLICIT_TLS, LISTENER_NAMES, Config, ListenerConfig
from mailsuite.limits import ConnectionLimiter, LimitedFactory

if TYPE_CHECKING:  # the concrete parts, named for the reader and mypy only: build_context() loads them by name
    from twisted.cred.portal import Portal

    from mailsuite.antispam.policy import Antispam
    from mailsuite.auth.login import Authenticator
    from mailsuite.interfaces import ILoginThrottle, IMessageStore, IRelayQueue, IUserDirectory
    from mailsuite.mailauth.service import MailAuth
    from mailsuite.resolver import CachingResolver
    from mailsuite.srs import SRS
    from mailsuite.testing.faults import FaultPlan
    from mailsuite.testing.mailroom import Mailroom
    from mailsuite.tls import TLSProvider

log = Logger()

#: "listener name" -> "module:function" building its protocol factory from
#: (ServerContext, listener name, ListenerConfig).
LISTENER_BUILDERS: dict[str, str] = {
    "smtp": "mailsuite.smtp.listener:build_factory",
    "submission": "mailsuite.smtp.listener:build_factory",
    "submissions": "mailsuite.smtp.listener:build_factory",
    "pop3": "mailsuite.pop3.listener:build_factory",
    "pop3s": "mailsuite.pop3.listener:build_factory",
    "imap": "mailsuite.imap.listener:build_factory",
    "imaps": "mailsuite.imap.listener:build_factory",
}

#: What a connection over the caps hears, per protocol family.
REFUSALS: dict[str, bytes] = {
    "smtp": b"421 4.7.0 Too many connections, try again later\r\n",
    "pop3": b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    "imap": b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
}


def protocol_family(listener_name: str) -> str:
    """"smtp", "pop3" or "imap" for a listener name."""
    if listener_name.startswith("pop3"):
        return "pop3"
    if listener_name.startswith("imap"):
        return "imap"
    return "smtp"


@dataclass
class ServerContext:
    """The shared objects every protocol factory receives.

    A part left out (capture mode opens no queue, mail authentication or
    resolver) leaves its attribute None.
    """

    config: Config
    reactor: Any  # the running reactor (IReactorTCP, IReactorTime, IReactorThreads...)
    tls: TLSProvider | None = None  # .server_creator() for implicit TLS and STARTTLS, .client_options(host, verify)
    directory: IUserDirectory | None = None
    store: IMessageStore | None = None
    portal: Portal | None = None  # yields IMailUser avatars
    throttle: ILoginThrottle | None = None
    queue: IRelayQueue | None = None
    resolver: CachingResolver | None = None  # IResolver, and the TTL cache mail authentication asks
    mailauth: MailAuth | None = None  # DKIM signing, SPF/DKIM/DMARC checks
    antispam: Antispam | None = None  # port-25 checks, greylisting, rate limits (antispam.enabled)
    srs: SRS | None = None  # Sender Rewriting Scheme for forwarded mail (srs.enabled)
    authenticator: Authenticator | None = None  # .login(ip, username, password) -> Deferred[IMailUser], throttled
    limiter: ConnectionLimiter | None = None
    faults: FaultPlan | None = None  # capture mode's fault plan, consulted by the protocols before replies
    http_api: ListenerService | None = None  # capture mode's HTTP API listener
    mailroom: Mailroom | None = None  # the test fixture's index of stored mail (testing.mailroom)
    root: MailService | None = None  # the MailService this context belongs to (set by build())
    #: Services opened by the parts (queue runner, store watcher...), started before the listeners.
    children: list[Any] = field(default_factory=list)
    on_stop: list[Callable[[], Any]] = field(default_factory=list)


def endpoint_description(listener: ListenerConfig) -> str:
    """A Twisted server endpoint string for a listener (TLS is added by the service)."""
    address = listener.address.replace(":", "\\:")
    return f"tcp:port={listener.port}:interface={address}"


class ListenerService(service.Service):
    """Listens on one endpoint; remembers the bound port so ephemeral ports can be reported."""

    def __init__(self, name: str, reactor: Any, description: str, factory: Factory) -> None:
        self.setName(name)
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.port: IListeningPort | None = None
        self.ready: defer.Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self.reactor, self.description)
        self.ready = endpoint.listen(self.factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            host = port.getHost()
            log.info("listening: {name} on {host}:{port}", name=self.name, host=host.host, port=host.port)
            return port

        self.ready.addCallback(listening)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None


class MailService(service.MultiService):
    """The whole server: shared objects plus one ListenerService per enabled listener."""

    def __init__(self, context: ServerContext) -> None:
        super().__init__()
        self.context = context

    def listeners(self) -> list[ListenerService]:
        """The listener services, in configuration order."""
        return [s for s in self if isinstance(s, ListenerService)]

    def bound_ports(self) -> dict[str, int]:
        """Listener name -> bound port (after start)."""
        return {s.name: s.port.getHost().port for s in self.listeners() if s.port is not None}

    def startService(self) -> None:
        super().startService()
        readies = [s.ready for s in self.listeners() if s.ready is not None]
        defer.gatherResults(readies, consumeErrors=True).addCallbacks(self._all_listening, self._listen_failed)

    def _all_listening(self, _: Any) -> None:
        run = self.context.config.data_path / "run"
        run.mkdir(parents=True, exist_ok=True)
        tmp = run / "ports.json.tmp"
        tmp.write_text(json.dumps(self.bound_ports()))
        os.replace(tmp, run / "ports.json")
        log.info("mailsuite ready: {ports}", ports=self.bound_ports())

    def _listen_failed(self, failure: Any) -> None:
        error = failure.value.subFailure.value if hasattr(failure.value, "subFailure") else failure.value
        log.critical("cannot listen: {error}", error=error)
        self.context.reactor.callLater(0, _stop_with_error, self.context.reactor)

    def stopService(self) -> Any:
        _clean_exit_on_sigterm(self.context.reactor)
        log.info("mailsuite stopping")
        d = defer.maybeDeferred(super().stopService)
        for stop in reversed(self.context.on_stop):
            d.addBoth(lambda _, stop=stop: stop())
        return d


def _clean_exit_on_sigterm(reactor: Any) -> None:
    """Make a SIGTERM stop exit with status 0.

    twistd re-raises the signal that stopped the reactor after shutdown, so
    the process would end "killed by SIGTERM" (status -15) even though it
    stopped cleanly.  SIGTERM is mailsuite's documented way to stop, so once
    the services are stopping we forget the signal (a private attribute of
    Twisted's reactor, see :mod:`mailsuite.compat`).
    """
    forget_exit_signal(reactor, signal.SIGTERM)


def _stop_with_error(reactor: Any) -> None:
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:
        pass
    os._exit(1)


def build_context(config: Config, reactor: Any) -> ServerContext:
    """Open the shared objects (store, directory, queue, TLS, portal) for a config."""
    context = ServerContext(config=config, reactor=reactor)
    context.limiter = ConnectionLimiter(config.limits.connections_total, config.limits.connections_per_ip)
    for target in PARTS:
        if config.capture.enabled and target in CAPTURE_SKIPS:
            continue
        child = _load(target)(context)
        if child is not None:
            context.children.append(child)
    return context


def _wrap_listener(context: ServerContext, name: str, factory: Factory) -> Factory:
    assert context.limiter is not None
    factory = LimitedFactory(factory, context.limiter, REFUSALS[protocol_family(name)], name, clock=context.reactor)
    if name in IMPLICIT_TLS:
        factory = TLSMemoryBIOFactory(context.tls.server_creator(), False, factory)
    return factory


def build(config: Config, reactor: Any) -> MailService:
    """The MultiService for a config; nothing listens until it is started."""
    context = build_context(config, reactor)
    root = MailService(context)
    context.root = root
    for child in context.children:
        child.setServiceParent(root)
    for name in LISTENER_NAMES:
        listener = config.listener(name)
        if not listener.enabled:
            continue
        factory = _load(LISTENER_BUILDERS[name])(context, name, listener)
        ListenerService(name, reactor, endpoint_description(listener), _wrap_listener(context, name, factory)).setServiceParent(root)
    return root


# The shared parts, opened in this order by build_context(): "module:function"
# taking the ServerContext, filling in its attribute(s), and returning None or
# an IService to run as a child of the server (e.g. the queue's delivery loop).
PARTS: list[str] = [
    "mailsuite.tls:open_tls",  # context.tls
    "mailsuite.auth.service:open_auth",  # context.directory, .throttle, .portal, .authenticator
    "mailsuite.testing.capture:open_capture",  # capture mode: replaces directory and authenticator
    "mailsuite.store.service:open_store",  # context.store
    "mailsuite.resolver:open_resolver",  # context.resolver: the one DNS client and cache
    "mailsuite.queue.service:open_queue",  # context.queue (+ its delivery service)
    "mailsuite.mailauth.service:open_mailauth",  # context.mailauth: DKIM signing, SPF/DKIM/DMARC checks
    "mailsuite.antispam.policy:open_antispam",  # context.antispam: DNSBL, pregreet, greylisting, rate limits
    "mailsuite.srs:open_srs",  # context.srs: SRS rewriting of forwarded senders, reversal of bounces
    "mailsuite.testing.api:open_http_api",  # capture.http_enabled: the HTTP JSON API
]

#: Parts a capture server does without: it relays nothing (every address is local), checks
#: no sender against DNS, and has its own directory and authenticator (testing.capture), so a
#: test fixture starts faster (no SQLite file made and fsynced) and never touches the network.
CAPTURE_SKIPS = frozenset({"mailsuite.resolver:open_resolver", "mailsuite.queue.service:open_queue",
                           "mailsuite.mailauth.service:open_mailauth", "mailsuite.auth.service:open_auth",
                           "mailsuite.antispam.policy:open_antispam"})


def _load(target: str) -> Callable[..., Any]:
    """The function a "module:function" string names."""
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)
