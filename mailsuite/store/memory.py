"""An in-memory message store with the Maildir store's behaviour, for fast protocol tests.

Implementation notes:
- Passes the same contract tests as :class:`mailsuite.store.MaildirStore`
  (tests/store/test_maildir.py, the ``any_store`` ones): the same names are
  refused, UIDs/MODSEQ/\\Recent/flags/keywords behave alike, errors are the
  same classes.  Nothing touches the disk and every Deferred has already
  fired when it is returned.
- Change notifications go through the ``clock`` (``callLater(0, ...)``), so a
  test with ``task.Clock`` decides when IDLE sessions hear about changes.
- Not for production: no durability, no other process sees the mail.
"""

from __future__ import annotations

import datetime
import io
import itertools
import time
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.errors import (
    FolderExists,
    InvalidName,
    MailboxInUse,
    MailError,
    NoSuchFolder,
    NoSuchMessage,
    ReadOnlyFolder,
    TemporaryFailure,
)
from mailsuite.facts import FactsCache
from mailsuite.interfaces import (
    SYSTEM_FLAGS,
    Delivery,
    DeliveryResult,
    FolderChange,
    FolderFacts,
    FolderInfo,
    FolderStatus,
    IFolder,
    IIncomingMessage,
    IMessageOctets,
    IMessageReader,
    IMessageStore,
    IUserMailbox,
    MessageInfo,
)
from mailsuite.store import names
from mailsuite.store.header_cache import HeaderCache, header_lines, through_cache
from mailsuite.store.incoming import IncomingMessage
from mailsuite.store.quota import QuotaLimits

_CANONICAL = {flag.lower(): flag for flag in SYSTEM_FLAGS.values()}
_keys = itertools.count(1)


def _canonical_flags(flags: Iterable[str], keywords: list[str], *, register: bool = True) -> frozenset[str]:
    """System flags spelled canonically, keywords as first seen in the folder (new ones registered if asked)."""
    out = set()
    for flag in flags:
        lower = flag.lower()
        if lower in _CANONICAL:
            out.add(_CANONICAL[lower])
        elif flag.startswith("\\"):
            continue
        else:
            for known in keywords:
                if known.lower() == lower:
                    out.add(known)
                    break
            else:
                if register:
                    keywords.append(flag)
                out.add(flag)
    return frozenset(out)


class _Message:
    __slots__ = ("uid", "key", "data", "flags", "internal_date", "modseq", "info")

    def __init__(self, uid: int, key: str, data: bytes, flags: frozenset[str], internal_date: datetime.datetime, modseq: int) -> None:
        self.uid, self.key, self.data, self.flags, self.internal_date, self.modseq = uid, key, data, flags, internal_date, modseq
        self.info: MessageInfo | None = None

    def message_info(self) -> MessageInfo:
        if self.info is None:
            self.info = MessageInfo(self.uid, self.flags, len(self.data), self.internal_date, self.modseq, self.key)
        return self.info


class _Folder:
    """One folder's messages and counters (what the Maildir state files hold)."""

    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highest_modseq = 1
        self.messages: dict[int, _Message] = {}
        self.pending_recent: set[int] = set()  # "still in new/"
        self.keywords: list[str] = []
        self.watchers: list[Callable[[], None]] = []

    def add(self, data: bytes, flags: frozenset[str], internal_date: datetime.datetime, *, recent: bool) -> int:
        self.highest_modseq += 1
        uid = self.uidnext
        self.uidnext += 1
        self.messages[uid] = _Message(uid, f"mem{next(_keys)}.{uid}", data, flags, internal_date, self.highest_modseq)
        if recent:
            self.pending_recent.add(uid)
        return uid


class _User:
    def __init__(self, store: "MemoryStore") -> None:
        self.folders: dict[str, _Folder] = {"INBOX": _Folder(store._uidvalidity())}
        for name in names.DEFAULT_FOLDERS:
            self.folders[name] = _Folder(store._uidvalidity())
        self.subscriptions: list[str] = ["INBOX", *names.DEFAULT_FOLDERS]
        self.lock_owner: object | None = None


def _usage(user: _User) -> tuple[int, int]:
    return sum(len(m.data) for f in user.folders.values() for m in f.messages.values()), sum(len(f.messages) for f in user.folders.values())


@implementer(IMessageStore)
class MemoryStore:
    """Every user's mail in dictionaries; see the module notes."""

    def __init__(self, clock: Any = None, *, default_quota: QuotaLimits = QuotaLimits(), quotas: dict[str, QuotaLimits] | None = None) -> None:
        self.clock = clock
        self.default_quota = default_quota
        self.quotas = dict(quotas or {})
        self._users: dict[tuple[str, str], _User] = {}
        self._last_uidvalidity = int(time.time()) - 1
        #: header blocks (IFolder.read_headers) and facts derived from octets (IFolder.facts), as the Maildir store keeps them
        self.headers = HeaderCache()
        self.facts = FactsCache()

    def _uidvalidity(self) -> int:
        self._last_uidvalidity += 1
        return self._last_uidvalidity

    def _user(self, address: str) -> _User:
        key = names.split_address(address)
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _User(self)
        return user

    def _limits(self, address: str) -> QuotaLimits:
        return self.quotas.get(address, self.default_quota)

    def _notify(self, folder: _Folder) -> None:
        for callback in list(folder.watchers):
            if self.clock is None:
                self._safely(callback)
            else:
                self.clock.callLater(0, self._safely, callback)

    log = Logger()

    def _safely(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self.log.failure("folder change callback failed")

    def new_incoming(self) -> IIncomingMessage:
        return IncomingMessage(None)

    def deliver(self, message: IIncomingMessage, deliveries: Sequence[Delivery]) -> defer.Deferred[list[DeliveryResult]]:
        results = []
        for delivery in deliveries:
            result = DeliveryResult(delivery)
            try:
                user = self._user(delivery.address)
                name = names.normalize_folder(delivery.folder)
                folder = user.folders.get(name)
                if folder is None:
                    raise NoSuchFolder(f"No such folder: {delivery.folder}")
                with message.open() as f:
                    data = delivery.header_prefix + f.read()
                limits = self._limits(delivery.address)
                limits.check(_usage(user), len(data))
                folder.add(data, frozenset(), datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0), recent=True)
                self._notify(folder)
            except MailError as e:
                result.error = e
            except Exception as e:
                result.error = TemporaryFailure(str(e))
            results.append(result)
        return defer.succeed(results)

    def check_quota(self, address: str, size: int) -> defer.Deferred[None]:
        try:
            self._limits(address).check(_usage(self._user(address)), size)
        except MailError as e:
            return defer.fail(e)
        return defer.succeed(None)

    def user_mailbox(self, address: str) -> IUserMailbox:
        names.split_address(address)
        return MemoryMailbox(self, address)

    def remove_user(self, address: str) -> defer.Deferred[None]:
        try:
            self._users.pop(names.split_address(address), None)
        except InvalidName as e:
            return defer.fail(e)
        return defer.succeed(None)


def _call(f: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args, **kwargs)


@implementer(IMessageReader)
class BytesReader:
    """A stored message's bytes, read in pieces (IFolder.open_reader)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, start: int, length: int, then: Callable[[bytes], Any] | None = None) -> defer.Deferred[Any]:
        start = max(0, start)
        data = self.data[start : start + max(0, length)]
        return defer.succeed(data) if then is None else _call(then, data)

    def close(self) -> None:
        self.data = b""


@implementer(IUserMailbox)
class MemoryMailbox:
    """One user's folders in a MemoryStore."""

    def __init__(self, store: MemoryStore, address: str) -> None:
        self.store = store
        self.address = address

    @property
    def _user(self) -> _User:
        return self.store._user(self.address)

    def _folder(self, name: str) -> tuple[str, _Folder]:
        canonical = names.normalize_folder(name)
        folder = self._user.folders.get(canonical)
        if folder is None:
            raise NoSuchFolder(f"No such folder: {name}")
        return canonical, folder

    def list_folders(self) -> defer.Deferred[list[FolderInfo]]:
        def work() -> list[FolderInfo]:
            user = self._user
            real = set(user.folders)
            every = set(real)
            for name in real:
                parts = name.split("/")
                every.update("/".join(parts[:i]) for i in range(1, len(parts)))
            parents = {n.rsplit("/", 1)[0] for n in every if "/" in n}
            return [  # subscriptions to names that are no folder too (RFC 3501 6.3.9, RFC 5258 \\NonExistent)
                FolderInfo(n, names.DEFAULT_FOLDERS.get(n) if n in real else None, n in user.subscriptions, n in parents, n in real, n in every)
                for n in sorted(every | set(user.subscriptions), key=lambda n: (n != "INBOX", n))
            ]

        return _call(work)

    def create_folder(self, name: str) -> defer.Deferred[None]:
        def work() -> None:
            canonical = names.normalize_folder(name)
            user = self._user
            if canonical in user.folders:
                raise FolderExists()
            parts = canonical.split("/")
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in user.folders:
                    user.folders[sub] = _Folder(self.store._uidvalidity())

        return _call(work)

    def delete_folder(self, name: str) -> defer.Deferred[None]:
        def work() -> None:
            canonical, folder = self._folder(name)
            if canonical == "INBOX":
                raise InvalidName("INBOX cannot be deleted")
            del self._user.folders[canonical]
            self.store._notify(folder)

        return _call(work)

    def rename_folder(self, old: str, new: str) -> defer.Deferred[None]:
        def work() -> None:
            old_name = names.normalize_folder(old)
            new_name = names.normalize_folder(new)
            user = self._user
            if new_name == "INBOX":
                raise FolderExists("INBOX exists already")
            if new_name == old_name or new_name.startswith(old_name + "/"):
                raise InvalidName("cannot rename a folder into itself")
            if old_name == "INBOX":
                if new_name in user.folders:
                    raise FolderExists()
                inbox = user.folders["INBOX"]
                parts = new_name.split("/")
                for i in range(1, len(parts)):
                    user.folders.setdefault("/".join(parts[:i]), _Folder(self.store._uidvalidity()))
                target = user.folders[new_name] = _Folder(self.store._uidvalidity())
                for message in inbox.messages.values():
                    target.add(message.data, _canonical_flags(message.flags, target.keywords), message.internal_date, recent=True)
                inbox.messages.clear()
                inbox.pending_recent.clear()
                inbox.highest_modseq += 1
                self.store._notify(inbox)
                return
            moving = [n for n in user.folders if n == old_name or n.startswith(old_name + "/")]
            if not moving:
                raise NoSuchFolder()
            if any(new_name + n[len(old_name):] in user.folders for n in moving):
                raise FolderExists()
            parts = new_name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                user.folders.setdefault(parent, _Folder(self.store._uidvalidity()))
            for n in moving:
                user.folders[new_name + n[len(old_name):]] = user.folders.pop(n)
            user.subscriptions = [new_name + s[len(old_name):] if s == old_name or s.startswith(old_name + "/") else s for s in user.subscriptions]

        return _call(work)

    def set_subscribed(self, name: str, subscribed: bool) -> defer.Deferred[None]:
        def work() -> None:
            canonical = names.normalize_folder(name)
            subs = self._user.subscriptions
            if subscribed and canonical not in subs:
                subs.append(canonical)
            elif not subscribed and canonical in subs:
                subs.remove(canonical)

        return _call(work)

    def folder_exists(self, name: str) -> defer.Deferred[bool]:
        return _call(lambda: names.normalize_folder(name) in self._user.folders)

    def status(self, name: str) -> defer.Deferred[FolderStatus]:
        def work() -> FolderStatus:
            _, f = self._folder(name)
            messages = f.messages.values()
            return FolderStatus(
                len(f.messages), len(f.pending_recent), sum(1 for m in messages if "\\Seen" not in m.flags),
                f.uidnext, f.uidvalidity, f.highest_modseq, sum(len(m.data) for m in messages),
            )

        return _call(work)

    def open_folder(self, name: str, *, read_only: bool = False) -> defer.Deferred[IFolder]:
        def work() -> IFolder:
            canonical, folder = self._folder(name)
            return MemoryFolder(self, canonical, folder, read_only)

        return _call(work)

    def append(self, name: str, message: IIncomingMessage, flags: Iterable[str] = (), internal_date: datetime.datetime | None = None) -> defer.Deferred[int]:
        """APPEND by folder name (as MaildirStore's mailbox offers)."""

        def work() -> int:
            _, folder = self._folder(name)
            return self._append(folder, message, flags, internal_date)

        return _call(work)

    def _append(self, folder: _Folder, message: IIncomingMessage, flags: Iterable[str], internal_date: datetime.datetime | None) -> int:
        with message.open() as f:
            data = f.read()
        self.store._limits(self.address).check(_usage(self._user), len(data))
        when = internal_date or datetime.datetime.now(datetime.timezone.utc)
        when = when.replace(microsecond=0)
        uid = folder.add(data, _canonical_flags(flags, folder.keywords), when, recent=True)
        self.store._notify(folder)
        return uid

    def quota_usage(self) -> defer.Deferred[tuple[int, int]]:
        return _call(lambda: _usage(self._user))

    def lock_exclusive(self, owner: object) -> defer.Deferred[Callable[[], None]]:
        user = self._user
        if user.lock_owner is not None:
            return defer.fail(MailboxInUse())
        user.lock_owner = owner

        def release() -> None:
            if user.lock_owner is owner:
                user.lock_owner = None

        return defer.succeed(release)


@implementer(IFolder)
class MemoryFolder:
    """A session on a MemoryStore folder (snapshot semantics as MaildirFolder)."""

    def __init__(self, mailbox: MemoryMailbox, name: str, folder: _Folder, read_only: bool) -> None:
        self.mailbox = mailbox
        self.name = name
        self._folder = folder
        self.read_only = read_only
        self.recent: frozenset[int] = frozenset()
        self._infos: dict[int, MessageInfo] = {}
        self._watchers: list[Callable[[], None]] = []
        self._load()

    def _load(self) -> tuple[dict[int, MessageInfo], dict[int, MessageInfo]]:
        f = self._folder
        if self.mailbox._user.folders.get(self.name) is not f:
            raise NoSuchFolder(f"No such folder: {self.name}")
        if self.read_only:
            self.recent = frozenset(f.pending_recent)
        else:
            claimed = set(f.pending_recent)
            f.pending_recent.clear()
            self.recent = frozenset(u for u in self.recent if u in f.messages) | frozenset(claimed)
        old, self._infos = self._infos, {uid: m.message_info() for uid, m in f.messages.items()}
        self.uidvalidity, self.uidnext, self.highest_modseq = f.uidvalidity, f.uidnext, f.highest_modseq
        self.keywords = frozenset(f.keywords)
        return old, self._infos

    def messages(self) -> list[MessageInfo]:
        return list(self._infos.values())

    def refresh(self) -> defer.Deferred[FolderChange]:
        def work() -> FolderChange:
            old, new = self._load()
            added = tuple(i for u, i in new.items() if u not in old)
            changed = tuple(i for u, i in new.items() if u in old and old[u] != i)
            return FolderChange(added, changed, tuple(u for u in old if u not in new))

        return _call(work)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._folder.watchers.append(callback)
        self._watchers.append(callback)

        def unsubscribe() -> None:
            if callback in self._folder.watchers:
                self._folder.watchers.remove(callback)

        return unsubscribe

    def append(self, message: IIncomingMessage, flags: Iterable[str] = (), internal_date: datetime.datetime | None = None) -> defer.Deferred[int]:
        return _call(self.mailbox._append, self._folder, message, flags, internal_date)

    def _known(self, uids: Iterable[int]) -> list[_Message]:
        f = self._folder
        if self.mailbox._user.folders.get(self.name) is not f:
            raise NoSuchFolder(f"Folder {self.name} was deleted or re-created")
        return [f.messages[u] for u in sorted(set(uids)) if u in self._infos and u in f.messages]

    def store_flags(self, uids: Iterable[int], flags: Iterable[str], mode: str, unchanged_since: int | None = None) -> defer.Deferred[list[MessageInfo]]:
        def work() -> list[MessageInfo]:
            if self.read_only:
                raise ReadOnlyFolder()
            if mode not in ("set", "add", "remove"):
                raise ValueError(f"mode must be set, add or remove, not {mode!r}")
            f = self._folder
            wanted = _canonical_flags(flags, f.keywords, register=False)
            modseq = f.highest_modseq + 1
            changed = []
            for m in self._known(uids):
                if unchanged_since is not None and m.modseq > unchanged_since:
                    continue
                if mode == "set":
                    new = wanted
                elif mode == "add":
                    new = m.flags | wanted
                else:
                    lowered = {w.lower() for w in wanted}
                    new = frozenset(x for x in m.flags if x.lower() not in lowered)
                new = _canonical_flags(new, f.keywords)  # keywords a message now carries become known
                if new == m.flags:
                    continue
                m.flags, m.modseq, m.info = new, modseq, None
                f.pending_recent.discard(m.uid)
                changed.append(m.message_info())
                self._infos[m.uid] = m.message_info()
            if changed:
                f.highest_modseq = self.highest_modseq = modseq
                self.keywords = frozenset(f.keywords)
                self.mailbox.store._notify(f)
            return changed

        return _call(work)

    def expunge(self, uids: Iterable[int] | None = None) -> defer.Deferred[list[int]]:
        def work() -> list[int]:
            if self.read_only:
                raise ReadOnlyFolder()
            return self._remove(list(self._infos) if uids is None else list(uids), only_deleted=True)

        return _call(work)

    def _remove(self, uids: list[int], *, only_deleted: bool) -> list[int]:
        f = self._folder
        removed = []
        for m in self._known(uids):
            if only_deleted and "\\Deleted" not in m.flags:
                continue
            del f.messages[m.uid]
            f.pending_recent.discard(m.uid)
            self._infos.pop(m.uid, None)
            removed.append(m.uid)
        if removed:
            f.highest_modseq += 1
            self.highest_modseq = f.highest_modseq
            self.recent = frozenset(u for u in self.recent if u in self._infos)
            self.mailbox.store._notify(f)
        return removed

    def copy(self, uids: Iterable[int], destination: str) -> defer.Deferred[list[tuple[int, int]]]:
        return _call(self._copy, list(uids), destination)

    def _copy(self, uids: list[int], destination: str) -> list[tuple[int, int]]:
        _, dest = self.mailbox._folder(destination)
        messages = self._known(uids)
        self.mailbox.store._limits(self.mailbox.address).check(_usage(self.mailbox._user), sum(len(m.data) for m in messages), len(messages))
        pairs = [(m.uid, dest.add(m.data, _canonical_flags(m.flags, dest.keywords), m.internal_date, recent=True)) for m in messages]
        if pairs:
            self.mailbox.store._notify(dest)
        return pairs

    def move(self, uids: Iterable[int], destination: str) -> defer.Deferred[list[tuple[int, int]]]:
        def work() -> list[tuple[int, int]]:
            if self.read_only:
                raise ReadOnlyFolder()
            pairs = self._copy(list(uids), destination)
            self._remove([s for s, _ in pairs], only_deleted=False)
            return pairs

        return _call(work)

    def open_reader(self, uid: int) -> defer.Deferred[IMessageReader]:
        return _call(lambda: BytesReader(self._data(uid)))

    def map_messages(self, uids: Sequence[int], fn: Callable[[int, Any], Any]) -> defer.Deferred[dict[int, Any]]:
        def work() -> dict[int, Any]:
            out = {}
            for uid in uids:
                try:
                    data = self._data(uid)
                except NoSuchMessage:
                    continue
                out[uid] = fn(uid, data)
            return out

        return _call(work)

    def _data(self, uid: int) -> bytes:
        m = self._folder.messages.get(uid)
        if m is None or uid not in self._infos:
            raise NoSuchMessage()
        return m.data

    def _incarnation(self) -> tuple[str, str, int]:
        return (self.mailbox.address, self.name, self._folder.uidvalidity)

    def read_headers(self, uids: Sequence[int], max_size: int | None = None) -> defer.Deferred[dict[int, bytes]]:
        def read(missing: list[int]) -> defer.Deferred[dict[int, bytes]]:
            def work() -> dict[int, bytes]:
                found: dict[int, bytes] = {}
                for uid in missing:
                    try:
                        block = header_lines(io.BytesIO(self._data(uid)), max_size)
                    except NoSuchMessage:
                        continue
                    if block is not None:
                        found[uid] = block
                return found

            return _call(work)

        infos = self._infos  # only messages of this session's view
        return through_cache(self.mailbox.store.headers, self._incarnation(), [u for u in uids if u in infos], read)

    def with_messages(self, fn: Callable[[IMessageOctets], Any]) -> defer.Deferred[Any]:
        return _call(fn, _MemoryOctets(self))

    def facts(self) -> FolderFacts:
        cache = self.mailbox.store.facts
        return FolderFacts(cache, cache.folder_id(self._incarnation()))

    def close(self) -> None:
        for callback in self._watchers:
            if callback in self._folder.watchers:
                self._folder.watchers.remove(callback)
        self._watchers = []


@implementer(IMessageOctets)
class _MemoryOctets:
    """A folder's messages handed out on demand (IFolder.with_messages)."""

    def __init__(self, folder: MemoryFolder) -> None:
        self._folder = folder

    def header(self, uid: int) -> bytes:
        return header_lines(io.BytesIO(self._folder._data(uid))) or b""

    def message(self, uid: int) -> bytes:
        return self._folder._data(uid)
