"""The captured mail of a running server, seen through the store's API.

Shared by :class:`mailsuite.testing.MailServer` and the HTTP JSON API, so a
Python test and a curl call see the same messages, the same way POP3 and IMAP
clients do (never through file paths).

Implementation notes:
- :class:`Mailroom` keeps an index: one read-only folder view per mailbox
  folder, watched (IFolder.watch) so that only folders that changed are
  rescanned, and the bytes of every message it has seen, so a listing reads
  no file twice.  The store notifies watchers of its own changes on the next
  reactor turn, before a test whose SMTP client got its 250 can ask.
- Envelope recipients come from the stored copies: every copy of one SMTP
  transaction carries the transaction's queue id in the Received field this
  server wrote, and its mailbox in Delivered-To, so the recipients of a
  message are the mailboxes holding a copy with the same queue id.
- One operation at a time (a DeferredLock): a purge never races a listing.
- Purging in capture mode also forgets the addresses, so an empty purge stays
  cheap however many addresses earlier tests used.
"""

from __future__ import annotations

import itertools
import re
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Pattern

from twisted.internet import defer, threads
from twisted.logger import Logger

if TYPE_CHECKING:
    from email.message import EmailMessage

# The email package and mimeview are imported when a message is first parsed, not at the
# server's start-up (the fixture's start time is mostly imports).
#: Seconds a background sync waits after a change, so a burst of deliveries is indexed in one pass.
BACKGROUND_DELAY = 0.02
_QUEUE_ID = re.compile(rb"\(mailsuite\) with [A-Za-z0-9]+ id ([0-9A-Za-z]+)")


def parse_message(raw: bytes) -> "EmailMessage":
    """Parse stored bytes (CRLF line ends) into an EmailMessage whose text has Python's "\\n" line ends."""
    from mailsuite.testing import mimeview

    return mimeview.parse(raw)


class Headers:
    """A message's header fields in order, repeats kept, names case-insensitive, values decoded."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def __getitem__(self, name: str) -> str:
        """The first value of the field; KeyError when the message has none."""
        for key, value in self._items:
            if key.lower() == name.lower():
                return value
        raise KeyError(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def get_all(self, name: str) -> list[str]:
        """Every value of the field, in order (e.g. all Received fields)."""
        return [value for key, value in self._items if key.lower() == name.lower()]

    def items(self) -> list[tuple[str, str]]:
        """(name, value) pairs in order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key.lower() == name.lower() for key, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return iter([key for key, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Attachment:
    """One attachment (or inline part) of a captured message."""

    def __init__(self, filename: str | None, content_type: str, data: bytes, content_id: str | None = None, inline: bool = False) -> None:
        self.filename = filename
        self.content_type = content_type
        self.data = data
        self.content_id = content_id
        self.inline = inline

    @property
    def size(self) -> int:
        """Decoded size in bytes."""
        return len(self.data)

    def __repr__(self) -> str:
        return f"Attachment(filename={self.filename!r}, content_type={self.content_type!r}, size={self.size})"


class CapturedMessage:
    """One stored message with its envelope, as a test looks at it.

    Parsing is lazy: listing many messages costs nothing until a test reads
    ``.text``, ``.html``, ``.attachments``, ``.headers`` or ``.message``.
    """

    def __init__(self, mailbox: str, folder: str, uid: int, sender: str, raw: bytes,
                 recipients: list[str] | None = None, *, queue_id: str | None = None, seq: int = 0) -> None:
        self.mailbox = mailbox  # the mailbox holding this copy (envelope recipient after alias expansion)
        self.folder = folder
        self.uid = uid
        self.sender = sender  # envelope sender (Return-Path), "" for the null sender
        self.raw = raw
        self.queue_id = queue_id if queue_id is not None else queue_id_of(raw)
        #: Envelope recipients: every mailbox this message's SMTP transaction delivered to.
        self.recipients = list(recipients) if recipients is not None else [mailbox]
        self.seq = seq  # arrival order in the server's index

    def __repr__(self) -> str:
        return f"CapturedMessage(id={self.id!r}, sender={self.sender!r}, subject={self.subject!r})"

    @property
    def id(self) -> str:
        """Stable id for the HTTP API: ``mailbox/folder/uid``."""
        return f"{self.mailbox}/{self.folder}/{self.uid}"

    # -- parsed views (lazy) ------------------------------------------------------------
    @cached_property
    def message(self) -> "EmailMessage":
        """The whole message parsed by Python's email package (policy.default)."""
        return parse_message(self.raw)

    @cached_property
    def head(self) -> "EmailMessage":
        """The header only, parsed (cheaper than :attr:`message` for summaries and filters)."""
        end = self.raw.find(b"\r\n\r\n")
        head = self.raw if end < 0 else self.raw[: end + 4]
        import email.policy
        from email.parser import BytesHeaderParser

        return BytesHeaderParser(policy=email.policy.default).parsebytes(head.replace(b"\r\n", b"\n"))  # type: ignore[return-value]

    @cached_property
    def view(self) -> dict[str, Any]:
        """The plain data view of :func:`mailsuite.testing.mimeview.view`."""
        from mailsuite.testing import mimeview

        return mimeview.view(self.raw)

    def header(self, name: str) -> str:
        """One decoded header field ("" when missing), from the cheap header parse."""
        try:
            return str(self.head.get(name, ""))
        except Exception:  # noqa: BLE001 - a malformed field
            return ""

    @property
    def subject(self) -> str:
        """The decoded Subject header ("" when missing)."""
        return self.header("Subject")

    @property
    def text(self) -> str | None:
        """The text/plain body, decoded (None when there is none)."""
        return self.view["text"]

    @property
    def html(self) -> str | None:
        """The text/html body, decoded (None when there is none)."""
        return self.view["html"]

    @cached_property
    def headers(self) -> Headers:
        """Every header field in order, decoded: ``headers["Subject"]``, ``headers.get_all("Received")``."""
        return Headers([(name, value) for name, value in self.view["headers"]])

    @cached_property
    def attachments(self) -> list[Attachment]:
        """Attachments and inline parts (everything but the text and HTML bodies), with their bytes."""
        from mailsuite.testing import mimeview

        out = []
        for item in self.view["attachments"]:
            data = mimeview.attachment_data(self.raw, item["index"]) or b""
            out.append(Attachment(item["filename"], item["content_type"], data, item["content_id"], item["inline"]))
        return out

    def links(self) -> list[str]:
        """URLs in the text body and href targets in the HTML body, in order, without repeats."""
        return list(self.view["links"])

    def search(self, pattern: str | Pattern[str], flags: int = 0) -> re.Match[str] | None:
        """The first match of ``pattern`` in the text body, else the HTML body, else the decoded header fields."""
        regex = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        header_text = "\n".join(f"{name}: {value}" for name, value in self.view["headers"])
        for haystack in (self.text, self.html, header_text):
            if haystack:
                match = regex.search(haystack)
                if match is not None:
                    return match
        return None

    # -- filters -----------------------------------------------------------------------
    def matches(self, to: str | None = None, from_: str | None = None, subject: str | None = None, mailbox: str | None = None) -> bool:
        """Case-insensitive substring filters on recipient, sender and subject; ``mailbox`` is exact."""
        if mailbox is not None and mailbox.lower() != self.mailbox.lower():
            return False
        if to is not None:
            haystack = " ".join([self.mailbox, *self.recipients, self.header("To"), self.header("Cc")]).lower()
            if to.lower() not in haystack:
                return False
        if from_ is not None:
            haystack = " ".join([self.sender, self.header("From")]).lower()
            if from_.lower() not in haystack:
                return False
        if subject is not None and subject.lower() not in self.subject.lower():
            return False
        return True


def envelope_sender(raw: bytes) -> str:
    """The address of the Return-Path field this server wrote ("" when none)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"return-path:"):
            value = line.split(b":", 1)[1].strip().decode("utf-8", "replace")
            return value[1:-1] if value.startswith("<") and value.endswith(">") else value
    return ""


def queue_id_of(raw: bytes) -> str | None:
    """The queue id in the Received field this server wrote on SMTP reception (None for APPENDed mail)."""
    match = _QUEUE_ID.search(raw, 0, 4096)
    return match.group(1).decode("ascii") if match else None


def arrival_key(queue_id: str | None) -> tuple[str, int]:
    """Sorts queue ids by reception: 11 hex digits of milliseconds, 6 of process, then a hex counter (smtp/headers.new_id)."""
    if queue_id is None:
        return "", 0
    try:
        return queue_id[:11], int(queue_id[17:] or "0", 16)
    except ValueError:
        return queue_id, 0


class _FolderView:
    """The index's read-only view of one folder and the messages it has read from it."""

    __slots__ = ("folder", "dirty", "messages", "unwatch")

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.dirty = True
        self.messages: dict[int, CapturedMessage] = {}
        self.unwatch: Callable[[], None] | None = None

    def close(self) -> None:
        if self.unwatch is not None:
            self.unwatch()
        self.folder.close()


class Mailroom:
    """Lists, deletes and purges the messages of every mailbox of one server context (see the notes)."""

    log = Logger()

    def __init__(self, context: Any) -> None:
        self.context = context
        self._views: dict[tuple[str, str], _FolderView] = {}
        self._seq = itertools.count(1)
        self._lock = defer.DeferredLock()
        self._listeners: list[Callable[[], None]] = []
        self._notify_call: Any = None
        self._background: Any = None  # the pending background sync (a DelayedCall), if any
        self._new: list[CapturedMessage] = []  # found by the running sync, numbered when it ends
        on_new = getattr(context.directory, "on_new", None)
        if on_new is not None:  # capture mode: a new address's folders are opened before a test asks
            on_new.append(lambda address: context.reactor.callFromThread(self._changed, None))

    # -- change notification (web UI live updates) ------------------------------------------
    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the reactor thread soon after stored mail may have changed; returns an unsubscribe function.

        Only folders the index has opened are watched: a listing
        (:meth:`messages`) opens the folders of new mailboxes.
        """
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    def _changed(self, key: tuple[str, str] | None) -> None:
        """A watched folder changed (``key``) or a mailbox appeared (None): sync in the background, tell listeners."""
        view = self._views.get(key) if key is not None else None
        if view is not None:
            view.dirty = True
        if self._background is None:
            self._background = self.context.reactor.callLater(BACKGROUND_DELAY, self._sync_in_background)
        if self._listeners and self._notify_call is None:
            self._notify_call = self.context.reactor.callLater(0, self._notify)

    def _sync_in_background(self) -> None:
        """Keep the index current between requests, so a listing finds the work (first opens, reads) done."""
        self._background = None

        async def sync() -> None:
            await self._lock.acquire()
            try:
                await self._sync(full=False)
            finally:
                self._lock.release()

        defer.ensureDeferred(sync()).addErrback(lambda f: self.log.failure("background index sync failed", f))

    def _notify(self) -> None:
        self._notify_call = None
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:  # noqa: BLE001
                self.log.failure("mail change listener failed")

    # -- the index ---------------------------------------------------------------------------
    def _addresses(self) -> list[str]:
        directory = self.context.directory
        if hasattr(directory, "addresses"):
            return list(directory.addresses())
        return [user.address if hasattr(user, "address") else str(user) for user in directory.list_users()]

    async def _folders(self, address: str) -> list[str]:
        mailbox = self.context.store.user_mailbox(address)
        return [info.name for info in await mailbox.list_folders() if info.selectable]

    def _run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        reactor = self.context.reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    async def _open(self, address: str, name: str) -> _FolderView:
        folder = await self.context.store.user_mailbox(address).open_folder(name, read_only=True)
        view = _FolderView(folder)
        view.unwatch = folder.watch(lambda key=(address, name): self._changed(key))
        self._views[(address, name)] = view
        return view

    async def _sync_folder(self, address: str, name: str, view: _FolderView, fresh: bool) -> None:
        if not view.dirty:
            return
        view.dirty = False
        if not fresh:
            await view.folder.refresh()
        present = {info.uid for info in view.folder.messages()}
        for uid in [u for u in view.messages if u not in present]:
            del view.messages[uid]
        new = sorted(present - view.messages.keys())
        if not new:
            return
        # read on the store's threads, one trip per folder (never a file opened here); a message
        # expunged meanwhile is left out and the next refresh drops it
        octets = await view.folder.map_messages(new, lambda uid, data: bytes(data))
        for uid in new:
            raw = octets.get(uid)
            if raw is not None:
                view.messages[uid] = message = CapturedMessage(address, name, uid, envelope_sender(raw), raw)
                self._new.append(message)

    async def _sync_mailbox(self, address: str) -> None:
        if (address, "INBOX") not in self._views:
            await self._sync_one(address, "INBOX")  # opening INBOX creates a new mailbox (and its folders)
        try:
            names = await self._folders(address)
        except Exception as e:  # noqa: BLE001 - e.g. a name the store refuses
            self.log.debug("index: {address}: {error}", address=address, error=e)
            return
        for key in [k for k in self._views if k[0] == address and k[1] not in names]:
            self._views.pop(key).close()
        await defer.gatherResults([defer.ensureDeferred(self._sync_one(address, name)) for name in names], consumeErrors=True)

    async def _sync_one(self, address: str, name: str) -> None:
        view = self._views.get((address, name))
        fresh = view is None
        try:
            if view is None:
                view = await self._open(address, name)
            await self._sync_folder(address, name, view, fresh)
        except Exception as e:  # noqa: BLE001 - deleted or re-created meanwhile: look again next time
            self.log.debug("index: {address} {folder}: {error}", address=address, folder=name, error=e)
            stale = self._views.pop((address, name), None)
            if stale is not None:
                stale.close()

    async def _sync(self, full: bool = True) -> list[CapturedMessage]:
        """Bring the index up to date; every stored message in arrival order.

        ``full``: also list every mailbox's folders again (a folder made by an
        IMAP CREATE is news to nobody); otherwise only new mailboxes and the
        folders whose watch fired are looked at.  Mailboxes and folders are
        synced concurrently: a folder's first open writes its UID state (an
        fsync), and the store's threads do those in parallel.
        """
        addresses = self._addresses()
        wanted = set(addresses)
        for key in [k for k in self._views if k[0] not in wanted]:
            self._views.pop(key).close()
        if full:  # an explicit read looks at every known folder, not only those whose watch fired (a refresh
            for view in self._views.values():  # of an unchanged folder is a stat), so a missed event cannot hide mail
                view.dirty = True
        work = [self._sync_mailbox(a) for a in addresses if full or (a, "INBOX") not in self._views]
        if not full:
            work += [self._sync_one(*key) for key, view in self._views.items() if view.dirty]
        await defer.gatherResults([defer.ensureDeferred(w) for w in work], consumeErrors=True)
        # Number the newly found in arrival order (the queue id starts with the millisecond clock),
        # whatever order the concurrent folder syncs ended in.
        order = {a: i for i, a in enumerate(addresses)}
        self._new.sort(key=lambda m: (arrival_key(m.queue_id), order.get(m.mailbox, 0), m.folder, m.uid))
        for message in self._new:
            message.seq = next(self._seq)
        self._new = []
        found = [m for view in self._views.values() for m in view.messages.values()]
        found.sort(key=lambda m: m.seq)
        by_queue: dict[str, list[str]] = {}
        for m in found:
            if m.queue_id is not None:
                group = by_queue.setdefault(m.queue_id, [])
                if m.mailbox not in group:
                    group.append(m.mailbox)
        for group in by_queue.values():  # in the order the server first saw the addresses (RCPT order for new ones)
            group.sort(key=lambda a: order.get(a, len(order)))
        for m in found:
            m.recipients = list(by_queue[m.queue_id]) if m.queue_id is not None else []
        return found

    # -- the public operations ----------------------------------------------------------------
    def mailboxes(self) -> list[str]:
        """The addresses whose folders the index holds open."""
        return list(dict.fromkeys(address for address, _ in self._views))

    async def messages(self, to: str | None = None, from_: str | None = None, subject: str | None = None, mailbox: str | None = None,
                       *, full: bool = True) -> list[CapturedMessage]:
        """Every stored message (all mailboxes and folders, arrival order) matching the filters.

        ``full=False`` skips listing every mailbox's folders again (for polling
        loops; changes in known folders and new mailboxes are still seen).
        """
        await self._lock.acquire()
        try:
            found = await self._sync(full)
        finally:
            self._lock.release()
        return [m for m in found if m.matches(to, from_, subject, mailbox)]

    async def get(self, message_id: str) -> CapturedMessage | None:
        """One message by its id, or None."""
        address, name, uid = split_id(message_id)
        for m in await self.messages(mailbox=address):
            if m.folder == name and m.uid == uid:
                return m
        return None

    async def _remove(self, address: str, name: str, uids: list[int] | None) -> list[int]:
        folder = await self.context.store.user_mailbox(address).open_folder(name)
        try:
            present = [m.uid for m in folder.messages()]
            targets = present if uids is None else [u for u in uids if u in present]
            if not targets:
                return []
            await folder.store_flags(targets, ["\\Deleted"], "add")
            return list(await folder.expunge(targets))
        finally:
            folder.close()
            view = self._views.get((address, name))
            if view is not None:
                view.dirty = True

    async def delete(self, message_id: str) -> bool:
        """Delete one message by its id; False when it is not there."""
        address, name, uid = split_id(message_id)
        await self._lock.acquire()
        try:
            return bool(await self._remove(address, name, [uid]))
        finally:
            self._lock.release()

    async def purge(self) -> int:
        """Delete every stored message (strict mode: users stay; capture mode: addresses are forgotten); returns how many."""
        await self._lock.acquire()
        try:
            await self._sync()
            targets = [defer.ensureDeferred(self._remove(address, name, None)) for (address, name), view in list(self._views.items()) if view.messages]
            removed = sum(len(uids) for uids in await defer.gatherResults(targets, consumeErrors=True))
            directory = self.context.directory
            if hasattr(directory, "forget_all"):
                directory.forget_all()
                for view in self._views.values():
                    view.close()
                self._views.clear()
            return removed
        finally:
            self._lock.release()

    def add_user(self, address: str, password: str) -> defer.Deferred[None]:
        """Create a user (strict mode, with a fast test-strength hash) or pre-create a mailbox (capture mode)."""
        directory = self.context.directory
        if hasattr(directory, "remember"):
            directory.remember(address)
            return defer.succeed(None)
        return self._run(lambda: directory.add_user(address, password_hash=fast_hash(password)) and None)

    def add_domain(self, domain: str) -> defer.Deferred[None]:
        """Make a domain local (strict mode; in capture mode every domain is)."""
        directory = self.context.directory
        if hasattr(directory, "remember"):
            return defer.succeed(None)
        return self._run(lambda: directory.add_domain(domain) and None)

    def reset_throttle(self) -> None:
        """Forget failed logins, so a test that tried wrong passwords does not slow the next one down."""
        throttle = self.context.throttle
        if throttle is not None:
            throttle.reset()


def fast_hash(password: str) -> str:
    """An argon2id hash with the smallest cost argon2 allows: verifying takes microseconds, not 50 ms.

    Only for test users: the stored string is a normal argon2id hash, so the
    real login code verifies it unchanged.
    """
    import argon2

    if not password:
        raise ValueError("the password is empty")
    return argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)


def split_id(message_id: str) -> tuple[str, str, int]:
    """Inverse of CapturedMessage.id (folder names may contain "/")."""
    address, _, rest = message_id.partition("/")
    name, _, uid = rest.rpartition("/")
    if not address or not name or not uid.isdigit():
        raise ValueError(f"not a message id: {message_id!r}")
    return address, name, int(uid)


def mailroom_for(context: Any) -> Mailroom:
    """The context's one Mailroom (its index is shared by the HTTP API, the web UI and in-reactor fixtures)."""
    if getattr(context, "mailroom", None) is None:
        context.mailroom = Mailroom(context)
    return context.mailroom  # type: ignore[no-any-return]
