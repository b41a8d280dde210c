"""The inbound check of one message: SPF, DKIM, DMARC -> Authentication-Results + Verdict.

Implementation notes:

* Two worker-thread jobs run side by side: SPF (HELO, then MAIL FROM) and
  the message job (read the message, parse its From fields, verify every
  DKIM signature).  DMARC then runs on the reactor thread, asynchronously
  (two TXT lookups at most), and :func:`~mailsuite.mailauth.verdict.decide`
  turns the results into one action.
* The message may be bytes or an ``IIncomingMessage`` (read in the worker
  thread through its ``open()``): a large message never blocks the reactor.
* Anything unexpected is logged with its traceback and becomes a tempfail
  451 4.3.0 verdict: a bug here must not lose mail nor let it pass unchecked.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailsuite.config import MailAuthConfig
from mailsuite.mailauth import arc
from mailsuite.mailauth import dmarc as dmarc_module
from mailsuite.mailauth.bridge import ThreadLookups
from mailsuite.mailauth.dkimcheck import MIN_KEY_BITS, DKIMResult, verify_parsed
from mailsuite.mailauth.dmarc import DMARCOutcome
from mailsuite.resolver import CachingResolver, DNSFailure
from mailsuite.mailauth.results import format_header
from mailsuite.mailauth.spfcheck import SPFResult, check_helo, check_mail_from
from mailsuite.mailauth.verdict import QUARANTINE, TEMPFAIL, Verdict, decide


def read_message(message: Any) -> bytes:
    """The bytes of ``message``: bytes-like, or an IIncomingMessage read through ``open()`` (blocking)."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    with message.open() as f:
        return bytes(f.read())


def _message_facts(lookups: ThreadLookups, message: Any) -> tuple[list[str], list[DKIMResult], str | None]:
    import dkim

    data = read_message(message)
    try:
        parsed = dkim.DKIM(data, minkey=MIN_KEY_BITS)
    except dkim.DKIMException:
        return [], [], None
    from_values = [value for name, value in parsed.headers if name.strip().lower() == b"from"]
    domains = dmarc_module.from_domains(from_values)
    if len(from_values) > 1 and len(domains) == 1:
        domains = domains + domains  # two From fields: as bad as two authors (RFC 5322 3.6)
    arc_result = arc.verify_arc(data, lookups) if arc.has_arc(parsed.headers) else None
    return domains, verify_parsed(parsed, lookups), arc_result


def _spf(lookups: ThreadLookups, ip: str, helo: str, mail_from: str, receiver: str) -> tuple[SPFResult, SPFResult]:
    helo_result = check_helo(lookups, ip, helo, receiver)
    return helo_result, check_mail_from(lookups, ip, mail_from, helo, receiver, helo_result)


class InboundChecker:
    """Runs the checks for one message at a time (many in parallel) on a thread pool of its own."""

    log = Logger()

    def __init__(self, reactor: Any, resolver: CachingResolver, pool: Any, config: MailAuthConfig, authserv_id: str,
                 rng: random.Random | None = None) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.pool = pool
        self.config = config
        self.authserv_id = authserv_id
        self.rng = rng or random.Random()

    def check(self, client_ip: str, helo: str, mail_from: str, message: Any, session_id: str = "-") -> defer.Deferred[Verdict]:
        """The verdict for a message from ``client_ip`` (never fails: errors become tempfail verdicts)."""
        d = defer.Deferred.fromCoroutine(self._check(client_ip, helo or "", mail_from or "", message, session_id))

        def unexpected(failure: Any) -> Verdict:
            self.log.failure("[{session}] mail authentication check failed unexpectedly (client {ip})", failure,
                             session=session_id, ip=client_ip)
            return Verdict(TEMPFAIL, text="Local error checking the sender, try again later", code=451, enhanced="4.3.0")

        return d.addErrback(unexpected)

    async def _check(self, client_ip: str, helo: str, mail_from: str, message: Any, session_id: str) -> Verdict:
        lookups = ThreadLookups(self.reactor, self.resolver)
        receiver = self.authserv_id
        spf_job = deferToThreadPool(self.reactor, self.pool, _spf, lookups, client_ip, helo, mail_from, receiver)
        message_job = deferToThreadPool(self.reactor, self.pool, _message_facts, lookups, message)
        results = await defer.DeferredList([spf_job, message_job], consumeErrors=True)
        for ok, value in results:
            if not ok:
                value.raiseException()
        (spf_helo, spf_from), (domains, dkim_results, arc_result) = results[0][1], results[1][1]
        outcome = await self._dmarc(domains, spf_from, dkim_results)
        header = format_header(self.authserv_id, client_ip=client_ip, spf_mail_from=spf_from, spf_helo=spf_helo,
                               dkim_results=dkim_results, arc=arc_result, dmarc=outcome)
        action, code, enhanced, text = decide(self.config, spf_from, dkim_results, outcome)
        folder = self.config.quarantine_folder if action == QUARANTINE else "INBOX"
        self.log.info(
            "[{session}] mailauth {ip}: spf={spf} dkim={dkim} dmarc={dmarc} from={from_domain} -> {action}",
            session=session_id, ip=client_ip, spf=spf_from.result, dkim=",".join(r.result for r in dkim_results) or "none",
            dmarc=outcome.result, from_domain=outcome.from_domain, action=action,
        )
        return Verdict(action, header, text, folder, spf_from, spf_helo, tuple(dkim_results), outcome, code, enhanced,
                       arc_result)

    async def _dmarc(self, domains: list[str], spf: SPFResult, dkim_results: list[DKIMResult]) -> DMARCOutcome:
        if not domains:
            return DMARCOutcome("none", reason="no From domain")
        if len(domains) > 1:
            return DMARCOutcome("permerror", domains[0], reason="more than one From domain")
        from_domain = domains[0]
        if not dmarc_module.valid_domain(from_domain):
            return DMARCOutcome("none", reason="From domain is not a domain name")
        try:
            record, from_org = await dmarc_module.discover(self.resolver, from_domain)
        except DNSFailure:
            return DMARCOutcome("temperror", from_domain, reason="DNS failure")
        return dmarc_module.evaluate(from_domain, record, from_org, spf, dkim_results, self.rng)
