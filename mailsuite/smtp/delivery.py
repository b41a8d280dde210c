"""Hand one accepted SMTP transaction to the local mailboxes and the relay queue.

Implementation notes:

- The caller replies 250 only after :func:`hand_off` returns: by then every
  local mailbox has its copy fsynced (:func:`mailsuite.delivery.deliver_local`, the
  same path the queue uses) and the relay
  queue has the remote recipients fsynced in its spool (``IRelayQueue.enqueue``).
- With more than one target, quotas are checked again for every local mailbox
  with the real size before anything is written; one full mailbox fails the whole transaction with
  ``452 4.2.2`` (the client retries later; nobody got a copy yet).  Quotas were
  already checked at RCPT with the SIZE the client announced, where the
  refusal can be per recipient.
- If writing then fails for some targets (disk error, a quota race), the
  transaction fails with a temporary error (``452 4.3.1`` when the disk is
  full, RFC 3463 X.3.1) and the log names the targets that
  did get a copy (a retry will duplicate it for them; the alternative, silently
  losing the others, is worse).  The store and queue interfaces offer no way
  to take a fsynced copy back.
- Local deliveries and the queue hand-off run concurrently (both off the
  reactor thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailsuite.delivery import deliver_local
from mailsuite.errors import MailError, QuotaExceeded, StorageFull, TemporaryFailure, storage_error
from mailsuite.interfaces import Envelope

log = Logger(namespace="mailsuite.smtp.delivery")


@dataclass
class Transaction:
    """Everything the hand-off needs from one mail transaction."""

    sender: str  # "" for <>
    local: list[str]  # local mailbox addresses (deduplicated)
    remote: list[str]  # remote recipient addresses (deduplicated)
    smtputf8: bool
    body_8bit: bool
    trace: bytes  # Received (+ Message-ID/Date on submission), common to every copy
    session_id: str = "-"
    queue_id: str = "-"
    folder: str = "INBOX"  # where local copies go (mailauth may say a quarantine folder)
    relay_sender: str | None = None  # the queue's envelope sender when not ``sender`` (SRS for forwarded mail)


async def hand_off(store: Any, queue: Any, message: Any, tx: Transaction) -> None:
    """Store and queue the message; returns only when every copy is fsynced, else raises MailError."""
    # With a single target the store's own quota check inside deliver() cannot
    # leave a partial delivery behind, so the extra round trip is skipped.
    targets = len(tx.local) + (1 if tx.remote else 0)
    for address in tx.local if targets > 1 else ():
        try:
            await store.check_quota(address, message.size + len(tx.trace) + 200)
        except QuotaExceeded:
            raise MailError(f"Mailbox full: {address}", code=452, enhanced="4.2.2") from None
    waits: list[defer.Deferred[Any]] = []
    if tx.local:
        waits.append(defer.maybeDeferred(deliver_local, store, message, tx.sender, tx.local, trace=tx.trace, folder=tx.folder))
    if tx.remote:
        envelope = Envelope(sender=tx.sender if tx.relay_sender is None else tx.relay_sender, recipients=tuple(tx.remote), smtputf8=tx.smtputf8, body_8bit=tx.body_8bit)
        waits.append(defer.maybeDeferred(queue.enqueue, envelope, message, tx.trace))
    if len(waits) == 1:  # the common case, without DeferredList's bookkeeping
        try:
            outcomes: list[tuple[bool, Any]] = [(True, await waits[0])]
        except Exception:
            outcomes = [(False, Failure())]
    else:
        outcomes = await defer.DeferredList(waits, consumeErrors=True)
    done: list[str] = []
    failed: list[tuple[str, BaseException]] = []
    index = 0
    if tx.local:
        ok, value = outcomes[index]
        index += 1
        if ok:
            for result in value:
                if result.error is None:
                    done.append(result.delivery.address)
                else:
                    failed.append((result.delivery.address, result.error))
        else:
            failed.extend((a, value.value) for a in tx.local)
    if tx.remote:
        ok, value = outcomes[index]
        if ok:
            done.append(f"queue:{value}")
        else:
            failed.append(("queue", value.value))
    if not failed:
        return
    for target, error in failed:
        if isinstance(error, MailError):
            log.warn("[{session}] {qid}: copy for {target} failed: {error}", session=tx.session_id, qid=tx.queue_id, target=target, error=error)
        else:
            log.error("[{session}] {qid}: copy for {target} failed unexpectedly: {error!r}", session=tx.session_id, qid=tx.queue_id, target=target, error=error)
    if done:
        log.error("[{session}] {qid}: transaction failed after copies were stored for {done}; a retry will duplicate them",
                  session=tx.session_id, qid=tx.queue_id, done=", ".join(done))
    first = failed[0][1]
    if isinstance(first, QuotaExceeded):
        raise MailError(f"Mailbox full: {failed[0][0]}", code=452, enhanced="4.2.2")
    if isinstance(first, MailError) and not first.permanent:
        raise first
    if isinstance(storage_error(first), StorageFull):  # the queue's spool ran out of room
        raise StorageFull()
    raise TemporaryFailure("Local delivery failed, try again later")
