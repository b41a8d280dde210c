"""The seams between mailsuite's parts.

Protocol code (smtp, pop3, imap) reaches storage, users, the relay queue and
DNS only through these interfaces; ``mailsuite.service`` alone decides which
concrete classes stand behind them.  Every method that may touch the disk, a
database or the network returns a Deferred (the implementation runs blocking
work off the reactor thread).

Addresses are ``str`` in the form ``localpart@domain``; domains are compared
lower-cased (IDNA A-labels or UTF-8 U-labels as given, see the directory).
Folder names are the *IMAP* form with ``/`` as hierarchy separator, decoded
to ``str`` (not modified UTF-7); ``INBOX`` is the inbox, case-insensitively.
"""

from __future__ import annotations

import datetime
import mmap
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Sequence, TypeVar, Union

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

T = TypeVar("T")
#: A read-only bytes-like view of a message's octets (see IFolder.map_messages).
Buffer = Union[bytes, mmap.mmap]

# ---------------------------------------------------------------------------
# Value types shared across the seams
# ---------------------------------------------------------------------------

#: The Maildir flag letters and the IMAP system flags they stand for.
SYSTEM_FLAGS: dict[str, str] = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",  # Maildir "passed"; IMAP has no system flag for it
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}


@dataclass(frozen=True)
class UserRecord:
    """A local user as the directory knows them."""

    address: str
    quota_bytes: int | None = None  # None: the configured default
    quota_messages: int | None = None


@dataclass(frozen=True)
class RecipientResolution:
    """Where mail for one envelope address goes after alias expansion.

    ``local`` holds user addresses whose INBOX receives a copy; ``remote``
    holds addresses the relay queue must deliver elsewhere.  Both empty is
    never returned: unknown addresses raise :class:`mailsuite.errors.NoSuchUser`.
    """

    local: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()


@dataclass(frozen=True)
class FolderInfo:
    """One folder of a user's tree, as LIST needs it."""

    name: str  # IMAP name with "/" separators, e.g. "INBOX", "Archive/2025"
    special_use: str | None = None  # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"
    subscribed: bool = False
    has_children: bool = False
    selectable: bool = True
    # False: a subscription to a name that is no folder (RFC 3501 6.3.9 keeps it; RFC 5258 \NonExistent)
    exists: bool = True


@dataclass(frozen=True)
class MessageInfo:
    """What the store knows of one message without reading its body."""

    uid: int
    flags: frozenset[str]  # IMAP form: "\\Seen", "\\Answered", ..., plus keywords ("$Junk", "Work")
    size: int  # bytes as stored (CRLF line ends)
    internal_date: datetime.datetime  # timezone-aware
    modseq: int
    key: str  # stable opaque id (the Maildir base name); POP3 UIDL uses it


@dataclass(frozen=True)
class FolderStatus:
    """Counters for STATUS / SELECT without opening every message."""

    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highest_modseq: int
    size: int


@dataclass(frozen=True)
class FolderChange:
    """What changed in a folder since a view last looked (for IDLE / NOOP).

    ``added`` and ``changed`` carry the new :class:`MessageInfo`; ``expunged``
    the UIDs that are gone.
    """

    added: tuple[MessageInfo, ...] = ()
    changed: tuple[MessageInfo, ...] = ()
    expunged: tuple[int, ...] = ()


@dataclass(frozen=True)
class FolderFacts:
    """Where callers that derive facts from a folder's messages keep them (``IFolder.facts``).

    ``cache`` is the store's :class:`mailsuite.facts.FactsCache` (thread-safe, bounded, shared
    by every session on the store); ``folder`` the number standing for this folder incarnation
    (user, folder, UIDVALIDITY) in its keys, ``(folder, uid, info.key, info.size)``.
    """

    cache: Any
    folder: int


@dataclass(frozen=True)
class Delivery:
    """One copy of an incoming message for one local mailbox.

    ``header_prefix`` is written before the message (e.g. Return-Path and
    Delivered-To lines, CRLF-terminated); copies with equal prefixes may
    share one file by hard link.
    """

    address: str
    folder: str = "INBOX"
    header_prefix: bytes = b""


@dataclass
class DeliveryResult:
    """The outcome of one :class:`Delivery`: ``error`` is None on success."""

    delivery: Delivery
    error: Exception | None = None


@dataclass(frozen=True)
class Envelope:
    """SMTP envelope handed to the relay queue."""

    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    smtputf8: bool = False
    body_8bit: bool = False
    extra: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------


class IIncomingMessage(Interface):
    """A message being received, before it is stored anywhere.

    Protocols write the bytes as they arrive (CRLF line ends, dot-unstuffed);
    the store decides whether they stay in memory or spill to a temporary file.
    After :meth:`finish` it can be handed to ``IMessageStore.deliver`` and to
    ``IRelayQueue.enqueue`` any number of times, then :meth:`discard` frees it.
    """

    size = Attribute("Bytes written so far.")

    def write(data: bytes) -> None:
        """Append bytes; cheap enough to call on the reactor thread."""

    def finish() -> None:
        """No more bytes will come."""

    def open() -> BinaryIO:
        """A fresh binary reader over everything written (after finish)."""

    def discard() -> None:
        """Release memory and temporary files; safe to call twice."""


class IMessageStore(Interface):
    """All users' mailboxes (one Maildir tree under the data root)."""

    def new_incoming() -> IIncomingMessage:
        """Start receiving a message."""

    def deliver(message: IIncomingMessage, deliveries: Sequence[Delivery]) -> Deferred[list[DeliveryResult]]:
        """Store one copy per delivery, each fsynced (file and directory) before the Deferred fires.

        Fires with one result per delivery, in the order given.

        Never fails as a whole for one bad recipient: per-delivery errors
        (QuotaExceeded, NoSuchFolder...) come back in the results.
        """

    def check_quota(address: str, size: int) -> Deferred[None]:
        """Fail with QuotaExceeded if a message of ``size`` bytes cannot be stored for address now."""

    def user_mailbox(address: str) -> IUserMailbox:
        """The folder tree of one user (created on first use with the default folders)."""

    def remove_user(address: str) -> Deferred[None]:
        """Delete a user's whole tree (admin command)."""


class IUserMailbox(Interface):
    """One user's folders.  Names are IMAP names with ``/`` separators."""

    address = Attribute("The owner's address.")

    def list_folders() -> Deferred[list[FolderInfo]]:
        """Every folder, INBOX first, with subscription and SPECIAL-USE."""

    def create_folder(name: str) -> Deferred[None]:
        """Create a folder (and missing parents); FolderExists / InvalidName on error."""

    def delete_folder(name: str) -> Deferred[None]:
        """Delete a folder; its children survive as non-selectable parents if any (RFC 3501 6.3.4)."""

    def rename_folder(old: str, new: str) -> Deferred[None]:
        """Rename a folder with its children; renaming INBOX moves its messages to a new folder."""

    def set_subscribed(name: str, subscribed: bool) -> Deferred[None]:
        """Record LSUB state; a folder need not exist to be subscribed."""

    def status(name: str) -> Deferred[FolderStatus]:
        """Counters of a folder without opening a session on it."""

    def folder_exists(name: str) -> Deferred[bool]:
        """Whether a selectable folder of that name exists (cheap: no listing, no sync)."""

    def open_folder(name: str, *, read_only: bool = False) -> Deferred[IFolder]:
        """Open a folder for a session; ``read_only`` never changes \\Recent or \\Seen."""

    def quota_usage() -> Deferred[tuple[int, int]]:
        """(bytes, messages) currently used across all folders."""

    def lock_exclusive(owner: object) -> Deferred[Callable[[], None]]:
        """Take the POP3 maildrop lock: fires with a release function, or fails with MailboxInUse.

        The lock is released by the function or when the process dies
        (it never outlives its holder).
        """


class IMessageReader(Interface):
    """An open stored message (see IFolder.open_reader)."""

    size = Attribute("Octets of the stored message (int).")

    def read(start: int, length: int, then: Callable[[bytes], T] | None = None) -> Deferred[bytes | T]:
        """Up to ``length`` octets from offset ``start`` (fewer only at the end), read on the
        store's threads: only those octets are read.  With ``then``, fires with ``then(octets)``
        computed on the same thread (per-chunk work such as POP3's byte-stuffing stays off
        the reactor thread, as map_messages does for whole messages)."""

    def close() -> None:
        """Release the reader (no read may be in progress)."""


class IMessageOctets(Interface):
    """The octets of a folder's messages on demand, inside ``IFolder.with_messages`` (on the
    store's thread, valid only during that call).  Both raise NoSuchMessage for a message
    expunged meanwhile."""

    def header(uid: int) -> bytes:
        """The header block (up to and including the first empty line), reading no further."""

    def message(uid: int) -> bytes:
        """The whole stored message."""


class IFolder(Interface):
    """One opened folder; a session's handle on its messages.

    The folder keeps the UID state of the store (UIDVALIDITY, UIDNEXT, UID per
    message, flags, MODSEQ), identical for every process on the same Maildir.
    Sequence numbers are the *session's* business: the folder speaks UIDs.
    """

    name = Attribute("The IMAP name.")
    uidvalidity = Attribute("UIDVALIDITY (int).")
    uidnext = Attribute("The UID the next message will get (int).")
    highest_modseq = Attribute("Highest MODSEQ in the folder (int).")
    read_only = Attribute("True for EXAMINE-style sessions.")
    recent = Attribute("frozenset of UIDs that are \\Recent for this session.")
    keywords = Attribute("frozenset of the folder's known keywords (custom flags).")

    def messages() -> list[MessageInfo]:
        """The session's current snapshot, ordered by UID (no disk access)."""

    def refresh() -> Deferred[FolderChange]:
        """Rescan (new deliveries, other sessions' and processes' changes) and update the snapshot."""

    def watch(callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the reactor thread) soon after anything changes the folder,
        in this or another process, within a second.  Returns an unsubscribe function."""

    def append(message: IIncomingMessage, flags: Iterable[str] = (), internal_date: datetime.datetime | None = None) -> Deferred[int]:
        """Store a message into this folder (fsynced), returning its UID (APPENDUID)."""

    def store_flags(uids: Iterable[int], flags: Iterable[str], mode: str, unchanged_since: int | None = None) -> Deferred[list[MessageInfo]]:
        """Set (``mode="set"``), add (``"add"``) or remove (``"remove"``) flags; returns the changed messages.

        With ``unchanged_since`` (CONDSTORE), messages whose MODSEQ is greater
        are left alone and omitted from the result.
        """

    def expunge(uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        """Remove the \\Deleted messages (only among ``uids`` if given); returns the removed UIDs."""

    def copy(uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        """Copy messages with their flags to another folder of the same user: [(source uid, new uid)]."""

    def move(uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        """Copy then expunge atomically from the client's point of view: [(source uid, new uid)]."""

    def open_reader(uid: int) -> Deferred[IMessageReader]:
        """A reader of the stored message for reading it in pieces on the store's threads
        (opened there; NoSuchMessage if it was expunged).  It keeps reading the same octets
        if the message is expunged or renamed meanwhile; the caller closes it."""

    def map_messages(uids: Sequence[int], fn: Callable[[int, Buffer], T]) -> Deferred[dict[int, T]]:
        """``{uid: fn(uid, octets)}`` for the messages of ``uids``, computed on the store's threads
        in one trip; messages expunged meanwhile are left out.

        ``octets`` is the stored message as a read-only bytes-like object (memory-mapped
        rather than read where the store can, for big messages), valid only during the call:
        ``fn`` returns what it needs as new objects (slices are copies).  This is how
        protocol code runs parsing work (MIME structure, sections) off the reactor thread
        without opening files itself.
        """

    def read_headers(uids: Sequence[int], max_size: int | None = None) -> Deferred[dict[int, bytes]]:
        """``{uid: header block}`` (as :meth:`IMessageOctets.header`) for ``uids``, expunged ones
        left out: from the store's header cache, the others read in one trip to the store's
        threads and cached.  With ``max_size``, blocks longer than that are left out too (and
        read no further).  For header-only FETCHes and header SEARCHes."""

    def with_messages(fn: Callable[[IMessageOctets], T]) -> Deferred[T]:
        """``fn(octets)`` once on the store's threads, reading only the octets ``fn`` asks for
        (:class:`IMessageOctets`).  For work that decides per message whether it needs the
        header or the whole message (SEARCH over a batch of candidates)."""

    def facts() -> FolderFacts:
        """The store's cache of facts derived from this folder incarnation's messages (no disk access)."""

    def close() -> None:
        """End the session (stop watching; nothing is expunged implicitly)."""


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------


class IUserDirectory(Interface):
    """Local domains, users and aliases; the SQLite directory implements it,
    a PostgreSQL or LDAP one could.  Lookups see changes made by the admin CLI
    in another process without a restart."""

    def is_local_domain(domain: str) -> Deferred[bool]:
        """True if mail for the domain is ours to store."""

    def resolve(address: str) -> Deferred[RecipientResolution]:
        """Expand aliases and catch-alls; NoSuchUser if the local address is unknown."""

    def get_user(address: str) -> Deferred[UserRecord | None]:
        """The user, or None."""

    def sender_addresses(user: str) -> Deferred[frozenset[str]]:
        """Addresses the authenticated user may use in MAIL FROM and From/Sender (their own, aliases pointing only to them, extras; ``@domain``: all of it)."""

    def verify_password(address: str, password: str) -> Deferred[bool]:
        """Check a password (slow hash, off the reactor thread)."""


class ILoginThrottle(Interface):
    """Growing delays and refusals after failed logins, per client IP and per account."""

    def delay_for(ip: str, username: str | None) -> float:
        """Seconds to wait before answering this attempt (0 when clean)."""

    def is_blocked(ip: str, username: str | None) -> bool:
        """True once failures passed the hard limit: refuse (SMTP 454, IMAP NO, POP3 -ERR) and disconnect."""

    def record_failure(ip: str, username: str | None) -> None:
        """Count a failed attempt."""

    def record_success(ip: str, username: str) -> None:
        """Forget the account's failures from this IP."""

    def failures(ip: str) -> int:
        """Failures remembered for the IP (0 when clean); the hashing queue serves clean sources first."""

    def is_known(ip: str, username: str) -> bool:
        """True if the IP logged in to the account lately without failing since; such logins go first."""


class IMailUser(Interface):
    """The avatar every login yields through the shared twisted.cred portal."""

    address = Attribute("The authenticated user's address.")
    mailbox = Attribute("Their IUserMailbox.")


# ---------------------------------------------------------------------------
# Relay
# ---------------------------------------------------------------------------


class IRelayQueue(Interface):
    """The outbound queue: durable hand-off of messages for other domains."""

    def enqueue(envelope: Envelope, message: IIncomingMessage, header_prefix: bytes = b"") -> Deferred[str]:
        """Write message and envelope to the spool, fsynced, before the Deferred fires with the queue id."""


class IResolver(Interface):
    """DNS answers the queue and mail authentication need (twisted.names underneath)."""

    def lookup_mx(domain: str) -> Deferred[list[tuple[int, str]]]:
        """(preference, host) pairs; empty list when the domain has no MX."""

    def lookup_addresses(host: str) -> Deferred[list[str]]:
        """IPv4 and IPv6 addresses of a host."""

    def lookup_txt(name: str) -> Deferred[list[bytes]]:
        """TXT strings of a name, each record joined."""
