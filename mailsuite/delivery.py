"""The one way a message enters local mailboxes, for SMTP and for the relay queue.

SMTP hands a transaction's local recipients here once the message is
complete; the queue does the same for local recipients it meets later (DSNs
to our own users, a local domain found at delivery time).  Both get the same
trace lines and the same per-mailbox results, so what later filters (Sieve,
spam) decide per recipient has one place to hook in.

Implementation notes:

* Each copy gets ``Return-Path`` (the envelope sender, ``<>`` for bounces,
  RFC 5321 4.4) and ``Delivered-To`` (the mailbox; also how loops show), then
  the caller's common trace (Received...), before the message itself.
* The store fsyncs every copy before the Deferred fires and reports
  per-mailbox errors in the results (a full mailbox does not fail the others).
"""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailsuite.errors import FolderExists
from mailsuite.interfaces import Delivery, DeliveryResult, IIncomingMessage, IMessageStore

log = Logger(namespace="mailsuite.delivery")


def return_path(sender: str) -> bytes:
    """Return-Path with the envelope sender (``<>`` for bounces)."""
    return f"Return-Path: <{sender}>\r\n".encode("utf-8")


def delivered_to(address: str) -> bytes:
    """Delivered-To naming the local mailbox (also lets loops be detected)."""
    return f"Delivered-To: {address}\r\n".encode("utf-8")


def deliver_local(store: IMessageStore, message: IIncomingMessage, sender: str, mailboxes: Sequence[str], *,
                  trace: bytes = b"", folder: str = "INBOX") -> Deferred[list[DeliveryResult]]:
    """Store one copy of ``message`` per local mailbox; fires with one result per mailbox, in order."""
    prefix = return_path(sender)
    deliveries = [Delivery(address, folder, prefix + delivered_to(address) + trace) for address in mailboxes]
    return store.deliver(message, deliveries)


async def folder_for(store: IMessageStore, mailboxes: Sequence[str], folder: str, *, why: str, session_id: str = "-") -> str:
    """``folder`` once it exists in every mailbox (made where missing), else INBOX.

    For deliveries that file mail elsewhere than INBOX (quarantine, Junk): a
    folder that cannot be made never costs the message, which then goes to
    INBOX with a log line saying why.
    """
    for address in mailboxes:
        try:
            await store.user_mailbox(address).create_folder(folder)
        except FolderExists:
            pass
        except Exception as e:  # noqa: BLE001 - any store refusal: deliver to INBOX instead
            log.warn("[{session}] cannot create {why} folder {folder} for {address}: {error}; delivering to INBOX",
                     session=session_id, why=why, folder=folder, address=address, error=str(e))
            return "INBOX"
    return folder
