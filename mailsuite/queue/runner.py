"""The relay queue service: enqueue, schedule attempts, apply results, bounce.

Implementation notes:
- ``enqueue`` writes through :class:`~mailsuite.queue.spool.Spool` in the
  queue's thread pool and fires only after the envelope is fsynced.
- One attempt of one message runs at a time (``_active``); its pending
  recipients are grouped by domain and each group is one SMTP transaction
  (or one local store delivery for our own domains, which is how DSNs to
  local senders arrive in their INBOX).
- Concurrency: a slot per destination (domain, or the smarthost) and a
  global slot are held for the whole transaction; destination first, so a
  busy domain never holds global slots while it waits.
- After an attempt: DSN for newly failed recipients (spooled before the
  original's envelope is updated), then the envelope is saved with the next
  attempt time (retry schedule, capped at arrival + max_age) or removed.
- A null-sender message never causes a DSN (RFC 5321 4.5.5, RFC 3464 2).
- More than MAX_RECEIVED Received fields: the message loops; it bounces
  with 5.4.6 without being sent (RFC 5321 6.3).
- ``flush``/``delete`` come from the CLI through control files polled every
  CONTROL_POLL seconds (see the package docstring).
"""

from __future__ import annotations

import dataclasses
import io
import random
import time
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.errors import MailError, NoSuchUser
from mailsuite.delivery import deliver_local
from mailsuite.interfaces import Envelope, IIncomingMessage, IRelayQueue, IResolver
from mailsuite.queue.client import RecipientResult, Transaction
from mailsuite.queue.dsn import RecipientReport, build_dsn, count_received
from mailsuite.queue.routing import Hop, HopRunner, mx_hosts
from mailsuite.queue.spool import DELIVERED, FAILED, PENDING, QueueEntry, RecipientState, Spool, new_id
from mailsuite.threads import LeanThreadPool

#: RFC 5321 6.3 suggests a hop limit; more Received fields than this is a loop.
MAX_RECEIVED = 50
#: Seconds between looks at the control directory.
CONTROL_POLL = 0.5
BODY_CHUNK = 64 * 1024


class _BodyReader:
    """Reads a spooled message in chunks in the thread pool (never on the reactor thread)."""

    def __init__(self, run: Callable[..., defer.Deferred[Any]], path: Any) -> None:
        self._run = run
        self._path = path
        self._file: Any = None

    async def read(self) -> bytes:
        if self._file is None:
            self._file = await self._run(open, self._path, "rb")
        data: bytes = await self._run(self._file.read, BODY_CHUNK)
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@implementer(IRelayQueue)
class RelayQueue(service.Service):
    """The queue: IRelayQueue for the SMTP side, and the service that delivers."""

    name = "queue"
    log = Logger()

    def __init__(self, context: Any, spool: Spool, resolver: IResolver, pool: LeanThreadPool, tls_options: Callable[[str, bool], Any], rng: random.Random | None = None) -> None:
        self.context = context
        self.config = context.config
        self.reactor = context.reactor
        self.spool = spool
        self.resolver = resolver
        self.pool = pool
        self.rng = rng or random.Random()
        q = self.config.queue
        self.hops = HopRunner(self.reactor, resolver, q.connect_timeout, q.command_timeout, tls_options)
        self._entries: dict[str, QueueEntry] = {}
        self._timers: dict[str, Any] = {}
        self._active: set[str] = set()
        self._flush_after: set[str] = set()
        self._deleted: set[str] = set()
        self._global = defer.DeferredSemaphore(q.max_connections)
        self._per_destination: dict[str, defer.DeferredSemaphore] = {}
        self._control: task.LoopingCall | None = None
        #: Fires (with the queue id) after each finished attempt; tests and the benchmark listen.
        self.attempt_listeners: list[Callable[[str], None]] = []

    # -- helpers ---------------------------------------------------------
    def _run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        # self.pool read at each call (the benchmark swaps it); LeanThreadPool offers what
        # deferToThreadPool uses of Twisted's ThreadPool (see mailsuite.threads)
        return deferToThreadPool(self.reactor, self.pool, f, *args, **kwargs)  # type: ignore[arg-type]

    # -- IRelayQueue -----------------------------------------------------
    def enqueue(self, envelope: Envelope, message: IIncomingMessage, header_prefix: bytes = b"") -> defer.Deferred[str]:
        """Spool message and envelope (fsynced) and schedule the first attempt; fires with the queue id."""
        now = time.time()
        entry = QueueEntry(
            id=new_id(now), sender=envelope.sender, recipients=[RecipientState(r) for r in envelope.recipients],
            arrival=now, next_attempt=now, smtputf8=envelope.smtputf8, body_8bit=envelope.body_8bit, extra=dict(envelope.extra),
        )

        def write() -> QueueEntry:
            with message.open() as source:
                return self.spool.add(entry, source, header_prefix)

        d: defer.Deferred[Any] = self._run(write)
        d.addCallback(self._accepted)
        return d

    def _accepted(self, entry: QueueEntry) -> str:
        self.log.info("[{qid}] queued from <{sender}> for {count} recipient(s), {size} bytes", qid=entry.id, sender=entry.sender, count=len(entry.recipients), size=entry.size)
        self._entries[entry.id] = entry
        if self.running:
            self._schedule(entry)
        return entry.id

    def _enqueue_bytes(self, sender: str, recipients: list[str], data: bytes) -> defer.Deferred[str]:
        now = time.time()
        entry = QueueEntry(id=new_id(now), sender=sender, recipients=[RecipientState(r) for r in recipients], arrival=now, next_attempt=now,
                           smtputf8=any(not r.isascii() for r in recipients), body_8bit=True)
        d: defer.Deferred[Any] = self._run(self.spool.add, entry, io.BytesIO(data))
        d.addCallback(self._accepted)
        return d

    # -- service ---------------------------------------------------------
    def startService(self) -> None:
        """Lock the spool, clean crash debris, resume every entry, start polling for CLI requests.

        Runs before any listener accepts, so the short blocking recovery here
        delays nobody.
        """
        super().startService()
        self.pool.start()
        for _ in range(40):
            if self.spool.try_lock():
                break
            time.sleep(0.05)
        else:
            self.log.critical("queue spool {path} is locked by another process: is a second server running on this data root?", path=str(self.spool.root))
            raise RuntimeError(f"queue spool {self.spool.root} is locked by another process")
        entries, damaged = self.spool.recover()
        for queue_id in damaged:
            self.log.error("[{qid}] damaged queue entry set aside as envelopes/{qid}.json.damaged", qid=queue_id)
        for entry in entries:
            if entry.id not in self._entries:
                self._entries[entry.id] = entry
        for entry in list(self._entries.values()):
            self._schedule(entry)
        self.log.info("queue started with {count} message(s) in the spool", count=len(self._entries))
        self._control = task.LoopingCall(self._poll_control)
        self._control.clock = self.reactor
        self._control.start(CONTROL_POLL, now=True).addErrback(lambda f: self.log.failure("control polling stopped", f))

    def stopService(self) -> Any:
        super().stopService()
        if self._control is not None and self._control.running:
            self._control.stop()
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        self.spool.unlock()
        if self.pool.started:
            self.pool.stop()

    # -- scheduling ------------------------------------------------------
    def _schedule(self, entry: QueueEntry, at: float | None = None) -> None:
        old = self._timers.pop(entry.id, None)
        if old is not None and old.active():
            old.cancel()
        when = entry.next_attempt if at is None else at
        delay = max(0.0, when - time.time())
        self._timers[entry.id] = self.reactor.callLater(delay, self._start_attempt, entry.id)

    def _start_attempt(self, queue_id: str) -> None:
        self._timers.pop(queue_id, None)
        entry = self._entries.get(queue_id)
        if entry is None or not self.running:
            return
        if queue_id in self._active:
            self._flush_after.add(queue_id)
            return
        self._active.add(queue_id)
        d = defer.Deferred.fromCoroutine(self._attempt(entry))
        d.addErrback(self._attempt_crashed, entry)
        d.addBoth(self._attempt_done, queue_id)

    def _attempt_crashed(self, failure: Any, entry: QueueEntry) -> None:
        self.log.failure("[{qid}] attempt failed unexpectedly; retrying later", failure, qid=entry.id)
        entry.next_attempt = time.time() + self._retry_delay(max(entry.attempts, 1))
        if entry.id in self._entries and self.running:
            self._schedule(entry)

    def _attempt_done(self, _: Any, queue_id: str) -> None:
        self._active.discard(queue_id)
        if queue_id in self._flush_after and queue_id in self._entries:
            self._flush_after.discard(queue_id)
            self._schedule(self._entries[queue_id], at=0)
        for listener in list(self.attempt_listeners):
            listener(queue_id)

    def _retry_delay(self, attempts: int) -> float:
        schedule = self.config.queue.retry_schedule or [3600.0]
        return float(schedule[min(attempts - 1, len(schedule) - 1)])

    # -- CLI requests ------------------------------------------------------
    def _poll_control(self) -> defer.Deferred[None]:
        d = self._run(self.spool.take_requests)

        def act(requests: list[tuple[str, str | None]]) -> defer.Deferred[Any] | None:
            waits = []
            for action, queue_id in requests:
                if action == "flush":
                    self.flush(queue_id)
                elif action == "delete" and queue_id:
                    waits.append(self.delete(queue_id))
            return defer.gatherResults(waits) if waits else None

        d.addCallback(act)
        d.addErrback(lambda f: self.log.failure("reading queue control requests failed", f))
        return d

    def flush(self, queue_id: str | None = None) -> int:
        """Attempt now: one entry, or all when ``queue_id`` is None.  Returns how many were scheduled."""
        ids = [queue_id] if queue_id else list(self._entries)
        count = 0
        for qid in ids:
            entry = self._entries.get(qid)
            if entry is None:
                continue
            count += 1
            self.log.info("[{qid}] flush requested", qid=qid)
            if qid in self._active:
                self._flush_after.add(qid)
            else:
                self._schedule(entry, at=0)
        return count

    def delete(self, queue_id: str) -> defer.Deferred[bool]:
        """Remove an entry without bouncing it (admin command)."""
        self._entries.pop(queue_id, None)
        call = self._timers.pop(queue_id, None)
        if call is not None and call.active():
            call.cancel()
        if queue_id in self._active:
            self._deleted.add(queue_id)
        self.log.info("[{qid}] deleted by the administrator", qid=queue_id)
        return self._run(self.spool.remove, queue_id)

    # -- one attempt -------------------------------------------------------
    async def _attempt(self, entry: QueueEntry) -> None:
        qid = entry.id
        header = await self._run(self.spool.read_header, qid)
        now = time.time()
        newly_failed: list[RecipientState] = []
        pending = entry.pending()
        hops = count_received(header)
        if hops > MAX_RECEIVED:
            for r in pending:
                self._set(r, RecipientResult(r.address, 554, "5.4.6", f"too many Received header fields ({hops}): mail loop detected", ""))
                newly_failed.append(r)
        else:
            groups: dict[str, list[RecipientState]] = {}
            for r in pending:
                groups.setdefault(r.domain, []).append(r)
            outcomes = await defer.gatherResults(
                [defer.Deferred.fromCoroutine(self._deliver_group(entry, domain, rcpts)) for domain, rcpts in groups.items()],
                consumeErrors=True,
            )
            by_address = {res.address: res for results in outcomes for res in results}
            for r in pending:
                res = by_address.get(r.address)
                if res is None:
                    continue
                self._set(r, res)
                if r.status == FAILED:
                    newly_failed.append(r)
        entry.attempts += 1
        entry.last_attempt = now
        still = entry.pending()
        errors = [f"{r.address}: {r.diagnostic}" for r in still]
        entry.last_error = errors[0] if errors else ""
        age = now - entry.arrival
        expired = bool(still) and age >= self.config.queue.max_age
        if expired:
            for r in still:
                r.status = FAILED
                r.stage = (r.stage + "; " if r.stage else "") + f"gave up after {age / 3600:.2f} hours"
                newly_failed.append(r)
            still = []
        reports = [self._report(r, "failed", "4.4.7" if expired and r.code is not None and r.code < 500 else r.enhanced) for r in newly_failed]
        if reports and entry.sender:
            await self._bounce(entry, header, reports)
        elif reports:
            self.log.warn("[{qid}] {count} recipient(s) failed; null sender, so no DSN (RFC 3464 2)", qid=qid, count=len(reports))
        warning = self.config.queue.delay_warning
        if still and entry.sender and warning > 0 and age >= warning and not entry.warned:
            until = entry.arrival + self.config.queue.max_age
            await self._bounce(entry, header, [self._report(r, "delayed", r.enhanced if r.enhanced.startswith("4.") else "4.0.0") for r in still], retry_until=until)
            entry.warned = True
        delivered = sum(1 for r in entry.recipients if r.status == DELIVERED)
        if qid in self._deleted:
            self._deleted.discard(qid)
            await self._run(self.spool.remove, qid)
            return
        if not still:
            self._entries.pop(qid, None)
            await self._run(self.spool.remove, qid)
            self.log.info("[{qid}] done: {delivered} delivered, {failed} failed", qid=qid, delivered=delivered, failed=len(entry.recipients) - delivered)
            return
        entry.next_attempt = min(now + self._retry_delay(entry.attempts), entry.arrival + self.config.queue.max_age)
        await self._run(self.spool.save, entry)
        self.log.info("[{qid}] {count} recipient(s) deferred until {when:.0f} ({error})", qid=qid, count=len(still), when=entry.next_attempt, error=entry.last_error)
        if self.running and qid in self._entries:
            self._schedule(entry)

    @staticmethod
    def _set(r: RecipientState, res: RecipientResult) -> None:
        r.code, r.enhanced, r.text, r.remote_mta, r.stage = res.code, res.enhanced, res.text, res.remote_mta, res.stage
        r.status = DELIVERED if res.delivered else FAILED if res.permanent else PENDING

    @staticmethod
    def _report(r: RecipientState, action: str, status: str) -> RecipientReport:
        return RecipientReport(r.address, action, status or ("5.0.0" if action == "failed" else "4.0.0"), r.diagnostic, r.remote_mta, r.stage)

    async def _bounce(self, entry: QueueEntry, header: bytes, reports: list[RecipientReport], retry_until: float | None = None) -> None:
        data = build_dsn(reporting_mta=self.config.hostname, sender=entry.sender, queue_id=entry.id, arrival=entry.arrival, now=time.time(),
                         reports=reports, original_headers=header, retry_until=retry_until, utf8=entry.smtputf8)
        dsn_id = await self._enqueue_bytes("", [self._bounce_address(entry.sender)], data)
        self.log.info("[{qid}] DSN ({action}) for {count} recipient(s) queued as {dsn} to <{sender}>", qid=entry.id, action=reports[0].action,
                      count=len(reports), dsn=dsn_id, sender=entry.sender)

    def _bounce_address(self, sender: str) -> str:
        """Where a DSN goes: the sender, or the address an SRS sender of ours stands for (mailsuite.srs)."""
        srs = getattr(self.context, "srs", None)
        if srs is None or not srs.is_srs(sender) or sender.rpartition("@")[2].lower() != srs.domain:
            return sender
        try:
            return str(srs.reverse(sender))
        except MailError:
            self.log.warn("DSN to a forged or expired SRS address <{sender}> kept as it is", sender=sender)
            return sender

    # -- per destination ---------------------------------------------------
    async def _slots(self, destination: str) -> Callable[[], None]:
        per = self._per_destination.get(destination)
        if per is None:
            per = self._per_destination[destination] = defer.DeferredSemaphore(self.config.queue.max_connections_per_domain)
        await per.acquire()
        await self._global.acquire()

        def release() -> None:
            self._global.release()
            per.release()
            if not per.waiting and per.tokens == per.limit:
                self._per_destination.pop(destination, None)

        return release

    async def _is_local(self, domain: str) -> bool:
        directory = self.context.directory
        if directory is not None and hasattr(directory, "is_local_domain"):
            return bool(await directory.is_local_domain(domain))
        return domain in self.config.domains

    async def _deliver_group(self, entry: QueueEntry, domain: str, rcpts: list[RecipientState]) -> list[RecipientResult]:
        addresses = [r.address for r in rcpts]
        try:
            if await self._is_local(domain):
                return await self._deliver_local(entry, addresses)
        except MailError as e:
            return [RecipientResult(a, e.code, e.enhanced, str(e)) for a in addresses]
        q = self.config.queue
        sh = q.smarthost
        implicit = False
        if sh.enabled:
            destination = f"smarthost {sh.host}"
            mode = {"starttls": "required", "implicit": "implicit", "none": "none"}[sh.tls]
            hops = [Hop(sh.host, sh.port, mode, sh.verify_certificate, sh.username, sh.password)]
        else:
            destination = domain
            try:
                hosts = await mx_hosts(self.resolver, domain, self.rng)
            except MailError as e:
                self.log.info("[{qid}] routing {domain} failed: {error}", qid=entry.id, domain=domain, error=str(e))
                return [RecipientResult(a, e.code, e.enhanced, str(e)) for a in addresses]
            implicit = hosts == [domain]
            hops = [Hop(h, q.outbound_port, "required" if q.require_tls else "opportunistic", q.require_tls) for h in hosts]
        reader = _BodyReader(self._run, self.spool.message_path(entry.id))
        transaction = Transaction(sender=entry.sender, recipients=addresses, size=entry.size, read_chunk=reader.read, helo_name=self.config.hostname,
                                  smtputf8=entry.smtputf8, body_8bit=entry.body_8bit)
        release = await self._slots(destination)
        try:
            return await self.hops.deliver(hops, transaction, entry.id, implicit_mx=implicit)
        finally:
            release()
            reader.close()

    async def _deliver_local(self, entry: QueueEntry, addresses: list[str]) -> list[RecipientResult]:
        """Store into local mailboxes (DSNs to our own users arrive this way)."""
        store = self.context.store
        directory = self.context.directory
        if store is None:
            return [RecipientResult(a, 451, "4.3.0", "local store not available") for a in addresses]
        results: dict[str, RecipientResult] = {}
        mailboxes: dict[str, list[str]] = {}  # recipient -> the local mailboxes it resolves to
        forward: list[str] = []
        for a in addresses:
            try:
                resolution = await directory.resolve(a) if directory is not None else None
            except NoSuchUser as e:
                results[a] = RecipientResult(a, e.code, e.enhanced, f"{e}")
                continue
            except MailError as e:
                results[a] = RecipientResult(a, e.code, e.enhanced, f"{e}")
                continue
            local = list(resolution.local) if resolution is not None else [a]
            forward += list(resolution.remote) if resolution is not None else []
            mailboxes[a] = local
        if forward:
            data = await self._run(self.spool.message_path(entry.id).read_bytes)
            await self._enqueue_bytes(entry.sender, forward, data)
            for a in addresses:
                results.setdefault(a, RecipientResult(a, 250, "2.1.5", "forwarded"))
        wanted = [u for us in mailboxes.values() for u in us]
        if wanted:
            data = await self._run(self.spool.message_path(entry.id).read_bytes)
            incoming = store.new_incoming()
            for i in range(0, len(data), BODY_CHUNK):
                incoming.write(data[i:i + BODY_CHUNK])
            incoming.finish()
            try:
                outcome = await deliver_local(store, incoming, entry.sender, wanted)
            finally:
                incoming.discard()
            outcomes = iter(outcome)
            for a, us in mailboxes.items():
                failures = [r.error for _, r in zip(us, outcomes) if r.error is not None]
                if not failures:
                    results[a] = RecipientResult(a, 250, "2.0.0", "delivered to the local mailbox")
                else:
                    e = failures[0]
                    code, enhanced = (e.code, e.enhanced) if isinstance(e, MailError) else (451, "4.3.0")
                    results[a] = RecipientResult(a, code, enhanced, f"local delivery: {e}")
        return [results.get(a) or RecipientResult(a, 250, "2.0.0", "delivered") for a in addresses]


def entry_summary(entry: QueueEntry) -> dict[str, Any]:
    """A plain dict of an entry (the CLI's JSON output)."""
    return dataclasses.asdict(entry)


__all__ = ["RelayQueue", "PENDING", "DELIVERED", "FAILED", "entry_summary"]
