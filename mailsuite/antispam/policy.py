"""The antispam policy: the checks of ``[antispam]`` combined, behind three calls the SMTP server makes.

:class:`Antispam` is opened once per server (``context.antispam``, see
:func:`open_antispam`); each SMTP connection gets a :class:`ClientScreen`
from :meth:`Antispam.screen` and calls it three times:

1. :meth:`ClientScreen.connect` before the greeting: the connection rate
   limit; on port 25 the DNS lookups start (DNSBL, FCrDNS) and, for a client
   not yet known to wait, the greeting is held ``pregreet.delay`` seconds to
   catch a client that talks first.  A refusal raised here replaces the
   greeting and the server hangs up (RFC 5321 3.1 allows a 554 greeting).
2. :meth:`ClientScreen.recipient` at each RCPT the SMTP policy accepted:
   rate limits, then for port-25 clients without AUTH the score (DNSBL,
   FCrDNS, HELO, pregreet) and greylisting.  Port-25 refusals come at RCPT,
   as postscreen's "enforce" does, so the log line names the sender and
   recipient the client wanted.
3. :meth:`ClientScreen.message` once a message is complete: it is counted
   for the message rate limits and shown to the milters
   (:mod:`~mailsuite.antispam.milter`), whose changes it applies: a
   rewritten copy of the message, recipients added or removed, the junk
   folder for a quarantined message, or a silent discard.

The milters hear MAIL and RCPT from :meth:`ClientScreen.recipient` (after
the checks above passed) and the message from :meth:`ClientScreen.message`;
:meth:`ClientScreen.close` ends their sessions when the client goes.

Implementation notes:

* Authenticated sessions skip every port-25 check and greylisting, and are
  held to their user's hourly limits instead of their IP's.
* ``allow_networks`` and a listing in an "allow" zone skip the port-25
  checks and greylisting, not the rate limits.
* Every refusal is one log line, ``antispam refused``, with client, HELO,
  sender, recipient, check and reason (:meth:`ClientScreen._refuse`).
* Nothing here blocks: DNS answers come through the server's resolver,
  greylist writes go to one worker thread (:class:`~mailsuite.antispam.greylist.Journal`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.logger import Logger

from mailsuite.delivery import folder_for
from mailsuite.antispam import checks, dnsbl
from mailsuite.antispam.milter import MilterChain, Modifications, apply_modifications, spam_flagged, spam_score
from mailsuite.antispam.greylist import SWEEP_INTERVAL, Greylist, Journal
from mailsuite.antispam.ratelimit import RateLimits
from mailsuite.config import Config
from mailsuite.errors import InvalidName, MailError
from mailsuite.threads import LeanThreadPool

log = Logger(namespace="mailsuite.antispam")

#: The listener whose clients get the port-25 checks (other MTAs, not users).
MX_LISTENER = "smtp"


class Refused(MailError):
    """A port-25 check refused the client (RFC 3463 5.7.1: delivery not authorized)."""

    code, enhanced, default_text = 554, "5.7.1", "Service unavailable"


class Greylisted(MailError):
    """RFC 6647 2.1: a temporary refusal the sender's MTA will retry."""

    code, enhanced, default_text = 451, "4.7.1", "Greylisted, try again later"


class RateLimited(MailError):
    """Over a rate limit: try again later (RFC 3463 4.7.1)."""

    code, enhanced, default_text = 450, "4.7.1", "Rate limit exceeded, try again later"


@dataclass(frozen=True)
class Hit:
    """One check that found something: its name, action ("score"/"reject"), weight and reason."""

    check: str
    action: str
    weight: float
    reason: str


@dataclass
class ScreenOutcome:
    """What the SMTP server does with a complete message: store ``message`` (maybe a rewritten copy) in ``folder``, or drop it."""

    message: Any
    folder: str | None = None  # None: where it was going anyway
    discard: bool = False
    header: bytes = b""  # fields to put before the trace (X-Spam-Flag, X-Spam-Score on junk)


@dataclass
class _PortFacts:
    """What the port-25 DNS lookups found about a client."""

    listings: list[dnsbl.Listing] = field(default_factory=list)
    fcrdns: bool | None = None  # None: not checked or DNS failure
    fcrdns_text: str = ""


class Antispam:
    """The server's antispam policy (``context.antispam``): config, shared state, one screen per connection."""

    def __init__(self, config: Config, clock: Any, resolver: Any, greylist: Greylist | None = None, *,
                 store: Any = None, directory: Any = None) -> None:
        self.config = config
        self.store = store  # IMessageStore: rewritten copies, junk folders
        self.directory = directory  # IUserDirectory: recipients a milter adds
        self.settings = config.antispam
        self.clock = clock
        self.resolver = resolver
        self.greylist = greylist
        self.reactor = clock
        self.rates = RateLimits(clock, self.settings.ratelimit)
        self.passes = checks.PassCache(clock, self.settings.pregreet.pass_ttl)
        self.allow_networks = [ipaddress.ip_network(n, strict=False) for n in self.settings.allow_networks]
        self.allow_domains = tuple(d.lower().rstrip(".") for d in self.settings.allow_domains)
        self.own_names = frozenset([config.hostname.lower(), *(d.lower() for d in config.domains)])
        timeout = self.settings.dns_timeout
        self.timeouts = (timeout / 3.0, timeout * 2.0 / 3.0)  # two tries within dns_timeout

    def screen(self, ip: str, listener: str, session_id: str = "-") -> ClientScreen:
        """The screen for one new connection."""
        return ClientScreen(self, ip, listener, session_id)

    def allowed_network(self, ip: str) -> bool:
        """True when ``ip`` is in ``allow_networks``."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in n for n in self.allow_networks if n.version == address.version)

    def allowed_domain(self, domain: str) -> bool:
        """True when ``domain`` is in, or under, one of ``allow_domains``."""
        domain = domain.lower().rstrip(".")
        return any(domain == d or domain.endswith("." + d) for d in self.allow_domains)


class ClientScreen:
    """One connection's view of the policy; see the module notes for the three calls."""

    def __init__(self, antispam: Antispam, ip: str, listener: str, session_id: str) -> None:
        self.antispam = antispam
        self.ip = ip
        self.session_id = session_id
        self.port25 = listener == MX_LISTENER
        self.trusted = antispam.allowed_network(ip)
        self.pregreet: Hit | None = None
        self.port = 0
        self._milters: MilterChain | None = None
        #: The port-25 checks' hits and score at the last RCPT (below reject_score, or it was refused).
        self.door_hits: list[Hit] = []
        self.door_score = 0.0
        self._facts: _PortFacts | None = None
        self._facts_waiters: list[defer.Deferred[None]] | None = None

    # -- 1. connect --------------------------------------------------------------
    async def connect(self, input_waiting: Callable[[], bool | None]) -> None:
        """Before the greeting; ``input_waiting()`` is True when the client has sent bytes, None once it is gone."""
        a = self.antispam
        why = a.rates.connection(self.ip)
        if why is not None:
            self._refuse(RateLimited("Too many connections, try again later", code=421, enhanced="4.7.0"), "ratelimit", why)
        if not self.port25 or self.trusted:
            return
        self._start_lookups()
        settings = a.settings.pregreet
        if not settings.enabled or a.passes.passed(self.ip):
            return
        await task.deferLater(a.clock, settings.delay, lambda: None)
        waiting = input_waiting()
        if waiting is None:
            return  # gone before the greeting: no verdict either way
        if not waiting:
            a.passes.remember(self.ip)
            return
        reason = "client sent data before the greeting (RFC 5321 3.1)"
        if settings.action == "reject":
            self._refuse(Refused("Protocol error: talking before the greeting", code=554, enhanced="5.5.1"), "pregreet", reason)
        self.pregreet = Hit("pregreet", "score", settings.weight, reason)

    def _start_lookups(self) -> None:
        if self._facts_waiters is not None or self._facts is not None:
            return
        self._facts_waiters = []
        defer.Deferred.fromCoroutine(self._lookups()).addErrback(self._lookups_failed)

    async def _lookups(self) -> None:
        a, settings = self.antispam, self.antispam.settings
        facts = _PortFacts()
        zones = settings.dnsbl.zones if settings.dnsbl.enabled else []
        waits: list[defer.Deferred[Any]] = [defer.Deferred.fromCoroutine(dnsbl.lookup_all(a.resolver, self.ip, zones, a.timeouts))]
        if settings.fcrdns.enabled:
            waits.append(defer.Deferred.fromCoroutine(checks.fcrdns(a.resolver, self.ip, a.timeouts)))
        results = await defer.gatherResults(waits, consumeErrors=True)
        facts.listings = results[0]
        if settings.fcrdns.enabled:
            facts.fcrdns, facts.fcrdns_text = results[1]
        self._settle(facts)

    def _lookups_failed(self, failure: Any) -> None:
        log.failure("[{session}] antispam lookups for {ip} failed; counted as clean", failure, session=self.session_id, ip=self.ip)
        self._settle(_PortFacts())

    def _settle(self, facts: _PortFacts) -> None:
        self._facts = facts
        waiters, self._facts_waiters = self._facts_waiters or [], None
        for d in waiters:
            d.callback(None)

    async def _port_facts(self) -> _PortFacts:
        self._start_lookups()
        if self._facts is None:
            d: defer.Deferred[None] = defer.Deferred()
            assert self._facts_waiters is not None
            self._facts_waiters.append(d)
            await d
        assert self._facts is not None
        return self._facts

    # -- 2. RCPT -----------------------------------------------------------------
    async def recipient(self, *, helo: str, user: str | None, sender: str, recipient: str, first: bool) -> None:
        """Raise the refusal for this RCPT (already accepted by the SMTP policy), or count it."""
        a = self.antispam
        context = (helo, sender, recipient)
        why = a.rates.recipient(self.ip, user, first)
        if why is not None:
            self._refuse(RateLimited(f"Rate limit exceeded ({why}), try again later"), "ratelimit", why, context)
        if user is None and self.port25 and not self.trusted:
            facts = await self._port_facts()
            allowed = [item for item in facts.listings if item.zone.action == "allow"]
            if allowed:
                self.trusted = True
                log.info("[{session}] antispam: {ip} allowed by {zone}", session=self.session_id, ip=self.ip, zone=allowed[0].describe())
            else:
                self._judge(self.hits(facts, helo), context)
                self._greylist(facts, context)
        chain = self._milter_chain(helo, user)
        if chain is not None:
            try:
                await chain.recipient(helo=helo, user=user, sender=sender, recipient=recipient, first=first)
            except MailError as e:
                self._refuse(e, "milter", e.text, context)
        a.rates.count_recipient(self.ip, user)

    async def unknown(self, *, helo: str, user: str | None, line: str) -> None:
        """A command the server does not know: tell the milters (SMFIC_UNKNOWN); MailError when one refuses it."""
        chain = self._milter_chain(helo, user)
        if chain is not None:
            await chain.unknown(helo=helo, line=line)

    def wants_unknown(self, user: str | None) -> bool:
        """True when milters are asked about this session's unknown commands."""
        return self._milters is not None or any((user is None and self.port25) or m.submission for m in self.antispam.settings.milters)

    def _milter_chain(self, helo: str, user: str | None) -> MilterChain | None:
        if self._milters is None:
            wanted = [m for m in self.antispam.settings.milters if (user is None and self.port25) or m.submission]
            if not wanted:
                return None
            name = self._facts.fcrdns_text if self._facts is not None and self._facts.fcrdns else f"[{self.ip}]"
            self._milters = MilterChain(self.antispam.reactor, wanted, ip=self.ip, port=self.port, hostname=self.antispam.config.hostname,
                                        client_name=name, session_id=self.session_id)
        return self._milters

    def hits(self, facts: _PortFacts, helo: str) -> list[Hit]:
        """Everything the port-25 checks found about this client so far."""
        settings = self.antispam.settings
        found = [Hit("dnsbl", item.zone.action, item.zone.weight, item.describe()) for item in facts.listings]
        if facts.fcrdns is False:
            found.append(Hit("fcrdns", settings.fcrdns.action, settings.fcrdns.weight, facts.fcrdns_text))
        if settings.helo.enabled:
            problems = checks.helo_problems(helo, self.ip, self.antispam.own_names)
            if problems:
                found.append(Hit("helo", settings.helo.action, settings.helo.weight, "; ".join(problems)))
        if self.pregreet is not None:
            found.append(self.pregreet)
        return found

    def _judge(self, found: list[Hit], context: tuple[str, str, str]) -> None:
        for hit in found:
            if hit.action == "reject":
                self._refuse(Refused(self._blocked_text(hit)), hit.check, hit.reason, context)
        score = sum(hit.weight for hit in found)
        self.door_hits, self.door_score = found, score
        if found and score >= self.antispam.settings.reject_score:
            reason = f"score {score:g} >= {self.antispam.settings.reject_score:g}: " + "; ".join(f"{h.check} {h.reason} ({h.weight:+g})" for h in found)
            worst = max(found, key=lambda h: h.weight)
            self._refuse(Refused(self._blocked_text(worst)), "score", reason, context)

    def _blocked_text(self, hit: Hit) -> str:
        if hit.check == "dnsbl":
            return f"Service unavailable; client [{self.ip}] blocked using {hit.reason}"
        return f"Service unavailable; client [{self.ip}] refused: {hit.reason}"

    def _greylist(self, facts: _PortFacts, context: tuple[str, str, str]) -> None:
        a = self.antispam
        if a.greylist is None:
            return
        helo, sender, recipient = context
        if a.allow_domains and (a.allowed_domain(sender.rpartition("@")[2]) or (facts.fcrdns and a.allowed_domain(facts.fcrdns_text))):
            return
        wait = a.greylist.check(self.ip, sender, recipient)
        if wait > 0:
            self._refuse(Greylisted(f"Greylisted: first delivery attempt from [{self.ip}] for <{recipient}>, please retry in {wait:.0f} seconds (RFC 6647)"),
                         "greylist", f"new triplet, retry in {wait:.0f} s", context)

    # -- 3. end of message -------------------------------------------------------
    async def message(self, *, user: str | None, sender: str, recipients: list[str], message: Any, queue_id: str = "-",
                      local: dict[str, None] | None = None, remote: dict[str, None] | None = None) -> ScreenOutcome:
        """A complete message, about to be handed off: count it, show it to the milters, apply their answer.

        ``local`` and ``remote`` (the transaction's targets) are changed in
        place when a milter adds or deletes recipients.  A refusal raises the
        MailError to answer.
        """
        a = self.antispam
        a.rates.count_message(self.ip, user)
        outcome = ScreenOutcome(message)
        chain = self._milters
        mods = Modifications()
        if chain is not None and any(m.in_message for m in chain.milters):
            raw = await deferToThread(_read_all, message)
            context = ("", sender, ",".join(recipients))
            try:
                verdict = await chain.message(raw, queue_id)
            except MailError as e:
                self._refuse(e, "milter", e.text, context)
            if verdict.discard:
                log.info("[{session}] {qid}: discarded by a milter (client [{ip}], sender <{sender}>)", session=self.session_id, qid=queue_id,
                         ip=self.ip, sender=sender)
                outcome.discard = True
                return outcome
            mods = verdict.mods
            if mods.touches_message() and a.store is not None:
                outcome.message = await deferToThread(_rewrite, a.store, raw, mods)
                message.discard()
            if local is not None and remote is not None:
                await self._change_recipients(mods.add_recipients, mods.delete_recipients, local, remote)
        junk = self._junk(mods)
        if mods.quarantine is not None or junk is not None:
            outcome.folder = await self._junk_folder(list(local or ()))
            log.info("[{session}] {qid}: to {folder}: {reason}", session=self.session_id, qid=queue_id, folder=outcome.folder or "INBOX",
                     reason=f"quarantined by a milter: {mods.quarantine}" if mods.quarantine is not None else junk)
        if junk is not None:
            score = self.door_score + spam_score(mods)
            outcome.header = f"X-Spam-Flag: YES\r\nX-Spam-Score: {score:g}\r\n".encode()
        return outcome

    def _junk(self, mods: Modifications) -> str | None:
        """Why a message goes to the junk folder (``junk_score`` reached, or a milter flagged it), or None."""
        threshold = self.antispam.settings.junk_score
        if not threshold:
            return None
        if spam_flagged(mods):
            return "a milter flagged it as spam"
        score = self.door_score + spam_score(mods)
        if score >= threshold:
            parts = [f"{h.check} {h.weight:+g}" for h in self.door_hits] + ([f"milter {spam_score(mods):+g}"] if spam_score(mods) else [])
            return f"score {score:g} >= junk_score {threshold:g} ({', '.join(parts)})"
        return None

    async def _change_recipients(self, added: list[str], deleted: list[str], local: dict[str, None], remote: dict[str, None]) -> None:
        for address in deleted:
            for targets in (local, remote):
                for target in [t for t in targets if t.lower() == address.lower()]:
                    del targets[target]
        directory = self.antispam.directory
        for address in added:
            domain = address.rpartition("@")[2].lower()
            if directory is None or not await directory.is_local_domain(domain):
                remote.setdefault(address, None)
                continue
            try:
                resolution = await directory.resolve(address)
            except (InvalidName, MailError) as e:
                log.warn("[{session}] a milter added <{address}>, which cannot be delivered: {error}", session=self.session_id, address=address, error=e)
                continue
            for target in resolution.local:
                local.setdefault(target, None)
            for target in resolution.remote:
                remote.setdefault(target, None)

    async def _junk_folder(self, local: list[str]) -> str | None:
        folder = await folder_for(self.antispam.store, local, self.antispam.settings.junk_folder, why="junk", session_id=self.session_id)
        return folder if folder != "INBOX" else None

    def close(self) -> None:
        """The client is gone: end the milter sessions."""
        if self._milters is not None:
            self._milters.close()

    # -- refusals ----------------------------------------------------------------
    def _refuse(self, error: MailError, check: str, reason: str, context: tuple[str, str, str] = ("", "", "")) -> NoReturn:
        helo, sender, recipient = context
        log.info("[{session}] antispam refused client=[{ip}] helo={helo} sender=<{sender}> recipient=<{recipient}> check={check} reason={reason} reply={code} {enhanced}",
                 session=self.session_id, ip=self.ip, helo=helo or "-", sender=sender, recipient=recipient, check=check, reason=reason,
                 code=error.code, enhanced=error.enhanced)
        raise error


class AntispamService(service.Service):
    """Runs the greylist's writer thread and its hourly sweep; writes everything out at stop."""

    name = "antispam"

    def __init__(self, antispam: Antispam, pool: LeanThreadPool | None) -> None:
        self.antispam = antispam
        self.pool = pool
        self._sweeper: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        greylist = self.antispam.greylist
        if self.pool is not None:
            self.pool.start()
        if greylist is not None:
            self._sweeper = task.LoopingCall(greylist.sweep)
            self._sweeper.clock = self.antispam.clock
            self._sweeper.start(SWEEP_INTERVAL, now=True)
        settings = self.antispam.settings
        log.info("antispam: on (DNSBL zones {zones}, pregreet {pregreet}, greylisting {greylist})",
                 zones=len(settings.dnsbl.zones) if settings.dnsbl.enabled else 0,
                 pregreet=f"{settings.pregreet.delay:g} s" if settings.pregreet.enabled else "off",
                 greylist="on" if greylist is not None else "off")

    async def _stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        greylist = self.antispam.greylist
        if greylist is not None and greylist.journal is not None:
            await greylist.journal.flushed()
        if self.pool is not None and self.pool.started:
            self.pool.stop()
        if greylist is not None and greylist.journal is not None:
            greylist.journal.close()

    def stopService(self) -> Any:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())


def open_antispam(context: Any) -> AntispamService | None:
    """Set ``context.antispam`` when ``antispam.enabled``; return the service running its writer thread."""
    config = context.config
    if not config.antispam.enabled:
        return None
    greylist, pool = None, None
    if config.antispam.greylist.enabled:
        pool = LeanThreadPool(1, name="mailsuite-greylist")
        reactor = context.reactor

        def run(f: Callable[[], Any]) -> defer.Deferred[Any]:
            return deferToThreadPool(reactor, pool, f)

        journal = Journal(config.data_path / "antispam" / "greylist.sqlite3", run)
        greylist = Greylist(context.reactor, config.antispam.greylist, journal)
    context.antispam = Antispam(config, context.reactor, context.resolver, greylist, store=context.store, directory=context.directory)
    return AntispamService(context.antispam, pool)


def _read_all(message: Any) -> bytes:
    with message.open() as f:
        return f.read()  # type: ignore[no-any-return]


def _rewrite(store: Any, raw: bytes, mods: Any) -> Any:
    """A new incoming message with a milter's changes (in a worker thread: it may spill to disk)."""
    copy = store.new_incoming()
    copy.write(apply_modifications(raw, mods))
    copy.finish()
    return copy
