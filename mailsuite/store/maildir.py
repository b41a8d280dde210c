"""The Maildir message store: IMessageStore, IUserMailbox and IFolder over Maildir++ directories.

Implementation notes:
- Layout: ``<root>/<domain lower-cased>/<localpart>/`` is a standard Maildir
  (``tmp/ new/ cur/``); folders are Maildir++ subdirectories ``.Name`` with
  their own ``tmp/ new/ cur/`` and a ``maildirfolder`` file (encoding of names:
  see names.py).  A new mailbox gets Sent, Drafts, Trash, Junk and Archive.
- Per-user files in the root: ``subscriptions`` (IMAP names, one per line),
  ``mailsuite-uidvalidity`` (counter), ``mailsuite-user.lock`` (folder tree
  changes), ``mailsuite-pop3.lock`` (the POP3 maildrop flock).  Per-folder
  state files: see state.py.
- Delivery (RFC-free, the Maildir rules): unique name in ``tmp/``, write,
  fsync the file, rename (or hard link, for copies with an equal header
  prefix) into ``new/``, fsync ``new/``; only then does the Deferred fire.
  Deliveries do not touch the state files: the next session or STATUS gives
  them UIDs, exactly like a message dropped into new/ by another program.
- All disk work runs in the store's thread pool (``mailsuite.threads.Runner``),
  message reads included (``open_reader``, ``map_messages``,
  ``read_headers``, ``with_messages``); the reactor thread only builds
  Deferreds, diffs snapshots and stats directories for the watcher.
- The store owns the caches derived from immutable message octets, shared
  by every session: header blocks (``self.headers``, header_cache.py) and
  SEARCH's facts (``self.facts``, :mod:`mailsuite.facts`, handed out per
  folder incarnation by ``IFolder.facts()``).
- A session's snapshot (``messages()``) changes only in ``refresh()`` and
  in the results of the session's own store/expunge/move, so sequence numbers
  kept by the IMAP layer stay valid between them.
- ``\\Recent`` (RFC 3501 2.3.2): a read-write session claims the unclaimed
  messages (those in ``new/``, moved to ``cur/`` on the way, and every UID at
  or above the state's ``first_recent``: APPENDed, COPYed and MOVEd messages
  too); they are recent for it alone.  A read-only session claims nothing and
  changes no flag; its ``recent`` is the unclaimed set.  APPEND works on
  read-only handles too (the IMAP layer appends through one so it never
  claims other sessions' \\Recent).
- A session whose folder was deleted and re-created (UIDVALIDITY changed)
  fails with NoSuchFolder instead of touching the new folder's messages.
- RENAME moves children along (RFC 3501 6.3.5) and may land on a
  ``\\Noselect`` parent; only existing real folders collide (FolderExists).
  Renaming INBOX moves its messages into the new folder; INBOX stays.
- Quota (bytes, messages; 0 = unlimited) is checked before DELIVER, APPEND
  and COPY with the directory's per-user override or the configured default.
"""

from __future__ import annotations

import collections
import datetime
import errno
import fcntl
import mmap
import os
import shutil
import threading
import time
from typing import Any, Callable, Iterable, ParamSpec, Sequence, TypeVar

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
    storage_error,
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
from mailsuite.store.durable import FILE_MODE, DirSync, fsync_dir, make_dir, make_dirs, unique_name, write_atomic, write_file
from mailsuite.store.header_cache import HeaderCache, header_lines, through_cache
from mailsuite.store.incoming import IncomingMessage
from mailsuite.store.spares import SparePool, open_spare
from mailsuite.store.quota import QuotaLimits, UsageCounter
from mailsuite.store.state import FolderState, allocate_uidvalidity
from mailsuite.store.state_records import Entry
from mailsuite.store.watch import FolderWatcher
from mailsuite.threads import BlockingRunner, after_result

_P = ParamSpec("_P")
_T = TypeVar("_T")

_CANONICAL_FLAGS = {flag.lower(): flag for flag in SYSTEM_FLAGS.values()}


class InlineRunner:
    """Runs store work synchronously in the caller's thread (admin CLI, fast deterministic tests)."""

    def run(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> defer.Deferred[_T]:
        """``f(*args, **kwargs)`` now, as a Deferred."""
        return defer.maybeDeferred(f, *args, **kwargs)


def _canonical_flags(flags: Iterable[str]) -> set[str]:
    out = set()
    for flag in flags:
        lower = flag.lower()
        if lower == "\\recent":
            continue
        out.add(_CANONICAL_FLAGS.get(lower, flag))
    return out


def _letters_equal(a: str, b: str) -> bool:
    return sorted(a[3:] if a else "") == sorted(b[3:] if b else "")


@implementer(IMessageStore)
class MaildirStore:
    """Every user's Maildir under one root directory."""

    log = Logger()

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        runner: BlockingRunner,
        clock: Any,
        default_quota: QuotaLimits = QuotaLimits(),
        directory: Any = None,
        spool_dir: str | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.runner = runner
        self.clock = clock
        self.default_quota = default_quota
        self.directory = directory
        self.spool_dir = spool_dir or os.path.join(self.root, ".incoming")
        self.watcher = FolderWatcher(clock)
        self.usage_counter = UsageCounter()
        self.dirsync = DirSync()
        #: header blocks (IFolder.read_headers) and facts derived from octets (IFolder.facts), for every session
        self.headers = HeaderCache()
        self.facts = FactsCache()
        self._states: dict[str, FolderState] = {}
        self._states_lock = threading.Lock()
        self._ready_users: set[str] = set()
        self._pop3_locks: dict[str, object] = {}
        self._tmp_checked: dict[str, float] = {}
        self._roots: dict[str, str] = {}  # address -> user root (see user_root)
        #: ready-made empty files for deliveries (mailsuite.store.spares); the server sets it, the CLI and tests need not
        self.spares: SparePool | None = None
        make_dirs(self.root)

    # -- paths and shared state ------------------------------------------------
    def user_root(self, address: str) -> str:
        """The Maildir root of a user (InvalidName for unsafe addresses).

        Asked several times per message (RCPT, delivery, quota); the answer
        for an address never changes, so valid ones are remembered (the check
        took about 7 us).
        """
        root = self._roots.get(address)
        if root is None:
            local, domain = names.split_address(address)
            root = os.path.join(self.root, domain, local)
            if len(self._roots) >= 4096:
                self._roots.clear()
            self._roots[address] = root
        return root

    def folder_path(self, user_root: str, name: str) -> tuple[str, str]:
        """(canonical IMAP name, directory) of a folder."""
        canonical = names.normalize_folder(name)
        if canonical == "INBOX":
            return canonical, user_root
        return canonical, os.path.join(user_root, names.folder_dirname(canonical))

    def state(self, folder_dir: str, user_root: str) -> FolderState:
        """The process-wide FolderState of a folder directory."""
        with self._states_lock:
            state = self._states.get(folder_dir)
            if state is None:
                state = self._states[folder_dir] = FolderState(folder_dir, lambda: allocate_uidvalidity(user_root))
            return state

    def forget_states(self, prefix: str) -> None:
        """Drop cached states at or under a directory (folder deleted or renamed)."""
        with self._states_lock:
            for path in list(self._states):
                if path == prefix or path.startswith(prefix + os.sep) or path.startswith(prefix + "."):
                    del self._states[path]

    def ensure_user(self, user_root: str) -> None:
        """Create a user's Maildir with the default folders, once (blocking; safe across processes)."""
        if user_root in self._ready_users:
            return
        if os.path.isdir(os.path.join(user_root, "cur")):
            self._ready_users.add(user_root)
            return
        make_dirs(user_root)
        fd = os.open(os.path.join(user_root, "mailsuite-user.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.isdir(os.path.join(user_root, "cur")):
                for name in names.DEFAULT_FOLDERS:
                    path = os.path.join(user_root, names.folder_dirname(name))
                    try:
                        _make_maildir(path, subfolder=True)
                    except FolderExists:
                        pass  # made by an attempt that stopped half-way (disk full, crash): go on from there
                write_atomic(os.path.join(user_root, "subscriptions"), "".join(f"{n}\n" for n in ["INBOX", *names.DEFAULT_FOLDERS]).encode(), sync_dir=False)
                for sub in ("tmp", "new"):
                    make_dirs(os.path.join(user_root, sub))
                fsync_dir(user_root)
                make_dir(os.path.join(user_root, "cur"))  # last: its presence means "complete"
                fsync_dir(user_root)
                fsync_dir(os.path.dirname(user_root))
        finally:
            os.close(fd)
        self._ready_users.add(user_root)

    # -- IMessageStore ------------------------------------------------------------
    def new_incoming(self) -> IIncomingMessage:
        return IncomingMessage(self.spool_dir)

    def quota_limits(self, address: str) -> defer.Deferred[QuotaLimits]:
        """The user's limits: the directory's per-user override, else the configured default.

        Asked at RCPT and again at delivery; the server's directory answers
        repeated asks from memory while its database is unchanged
        (mailsuite.auth.lookup_cache), so a quota changed with the CLI applies
        to the next message.
        """
        default = self.default_quota
        if self.directory is None or not hasattr(self.directory, "get_user"):
            return defer.succeed(default)

        def limits(record: Any) -> QuotaLimits:
            if record is None:
                return default
            qb = getattr(record, "quota_bytes", None)
            qm = getattr(record, "quota_messages", None)
            return QuotaLimits(default.bytes if qb is None else qb, default.messages if qm is None else qm)

        def failed(failure: Any) -> QuotaLimits:
            self.log.failure("quota lookup for {address} failed; using the default", failure, address=address)
            return default

        return defer.maybeDeferred(self.directory.get_user, address).addCallbacks(limits, failed)

    def check_quota(self, address: str, size: int) -> defer.Deferred[None]:
        try:
            root = self.user_root(address)
        except InvalidName as e:
            return defer.fail(e)

        def check(limits: QuotaLimits) -> Any:
            if limits.unlimited:
                return None
            return self.runner.run(lambda: limits.check(self.usage_counter.usage(root), size))

        return self.quota_limits(address).addCallback(check)

    def deliver(self, message: IIncomingMessage, deliveries: Sequence[Delivery]) -> defer.Deferred[list[DeliveryResult]]:
        deliveries = list(deliveries)
        addresses = sorted({d.address for d in deliveries})
        limits: defer.Deferred[list[QuotaLimits]]
        if len(addresses) == 1:  # the common case, without gatherResults' bookkeeping (~25 us)
            limits = self.quota_limits(addresses[0]).addCallback(lambda one: [one])
        else:
            limits = defer.gatherResults([self.quota_limits(a) for a in addresses], consumeErrors=True)

        def write(found: list[QuotaLimits]) -> defer.Deferred[tuple[list[DeliveryResult], set[str]]]:
            return self.runner.run(self._deliver_blocking, message, deliveries, dict(zip(addresses, found)))

        def delivered(outcome: tuple[list[DeliveryResult], set[str]]) -> list[DeliveryResult]:
            results, touched = outcome
            for path in touched:
                self.watcher.notify(path)
            return results

        return limits.addCallback(write).addCallback(delivered)

    def _deliver_blocking(self, message: IIncomingMessage, deliveries: list[Delivery], limits: dict[str, QuotaLimits]) -> tuple[list[DeliveryResult], set[str]]:
        results = [DeliveryResult(d) for d in deliveries]
        groups: dict[bytes, list[tuple[int, str]]] = {}
        counted: set[str] = set()  # new/ directories whose quota usage the counter keeps (see added())
        for i, delivery in enumerate(deliveries):
            try:
                root = self.user_root(delivery.address)
                self.ensure_user(root)
                _, folder_dir = self.folder_path(root, delivery.folder)
                if not os.path.isdir(os.path.join(folder_dir, "new")):
                    raise NoSuchFolder(f"No such folder: {delivery.folder}")
                quota = limits.get(delivery.address, self.default_quota)
                if not quota.unlimited:
                    quota.check(self.usage_counter.usage(root), len(delivery.header_prefix) + message.size)
                    counted.add(os.path.join(folder_dir, "new"))
            except MailError as e:
                results[i].error = e
                continue
            except Exception as e:
                self.log.failure("delivery to {address} failed", address=delivery.address)
                results[i].error = storage_error(e)
                continue
            groups.setdefault(delivery.header_prefix, []).append((i, folder_dir))
        touched: set[str] = set()
        for prefix, targets in groups.items():
            size = len(prefix) + message.size
            name = unique_name(size)
            first_dir = targets[0][1]
            tmp, fd = self._take_spare()
            if fd is None:
                tmp = os.path.join(first_dir, "tmp", name)
            try:
                with message.open() as source:
                    write_file(tmp, source, prefix, fd=fd)
            except Exception as e:
                self.log.failure("writing a delivery failed")
                for i, _ in targets:
                    results[i].error = storage_error(e)
                continue
            before = {}
            if counted:
                before = {d: os.stat(d) for d in (os.path.join(f, "new") for _, f in targets) if d in counted and self.usage_counter.watches(d)}
            placed: list[tuple[int, str]] = []
            for i, folder_dir in targets[1:]:
                copy_name = unique_name(size)
                try:
                    try:
                        os.link(tmp, os.path.join(folder_dir, "new", copy_name))
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                            raise
                        _copy_into_new(tmp, folder_dir, copy_name)
                    placed.append((i, folder_dir))
                except OSError as e:
                    self.log.failure("linking a delivery failed")
                    results[i].error = storage_error(e)
            try:
                try:
                    os.rename(tmp, os.path.join(first_dir, "new", name))
                except OSError as e:
                    if fd is None or e.errno != errno.EXDEV:
                        raise
                    # a spare cannot cross file systems: copy it through the mailbox's own tmp/
                    _copy_into_new(tmp, first_dir, name)
                    os.unlink(tmp)
                placed.insert(0, targets[0])
            except OSError as e:
                self.log.failure("placing a delivery failed")
                results[targets[0][0]].error = storage_error(e)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            if before:
                for new_dir, copies in collections.Counter(os.path.join(f, "new") for _, f in placed).items():
                    if new_dir in before:
                        self.usage_counter.added(new_dir, size, before[new_dir], copies)
            for i, folder_dir in placed:
                new_dir = os.path.join(folder_dir, "new")
                try:
                    self.dirsync.sync(new_dir)
                    touched.add(folder_dir)
                except OSError as e:
                    results[i].error = storage_error(e)
        if self.spares is not None:
            after_result(self.spares.fill)
        return results, touched

    def _take_spare(self) -> tuple[str, int | None]:
        """(path, open fd) of a ready empty file for a delivery, or ("", None): the caller creates its own."""
        path = self.spares.take() if self.spares is not None else None
        if path is None:
            return "", None
        fd = open_spare(path)
        return (path, fd) if fd is not None else ("", None)

    def user_mailbox(self, address: str) -> IUserMailbox:
        return UserMailbox(self, address, self.user_root(address))

    def remove_user(self, address: str) -> defer.Deferred[None]:
        try:
            root = self.user_root(address)
        except InvalidName as e:
            return defer.fail(e)

        def remove() -> None:
            if not os.path.isdir(root):
                return
            graveyard = os.path.join(self.root, ".removed")
            make_dirs(graveyard)
            target = os.path.join(graveyard, unique_name())
            os.rename(root, target)
            fsync_dir(os.path.dirname(root))
            self._ready_users.discard(root)
            self.forget_states(root)
            shutil.rmtree(target, ignore_errors=True)

        return self.runner.run(remove)

    # -- housekeeping ---------------------------------------------------------------
    def clean_incoming(self, max_age: float = 86400.0) -> int:
        """Remove spilled incoming files older than ``max_age`` (left by a crash); blocking."""
        removed = 0
        try:
            entries = list(os.scandir(self.spool_dir))
        except FileNotFoundError:
            return 0
        now = time.time()
        for e in entries:
            try:
                if e.name.startswith("incoming-") and now - e.stat().st_mtime > max_age:
                    os.unlink(e.path)
                    removed += 1
            except OSError:
                pass
        return removed

    #: Maildir rule: files in tmp/ untouched for 36 hours are leftovers of a crashed writer.
    TMP_MAX_AGE = 36 * 3600.0
    TMP_CHECK_INTERVAL = 3600.0

    def clean_tmp(self, folder_dir: str) -> int:
        """Remove stale files from a folder's tmp/ (at most once an hour per folder); blocking."""
        now = time.time()
        if now - self._tmp_checked.get(folder_dir, 0.0) < self.TMP_CHECK_INTERVAL:
            return 0
        self._tmp_checked[folder_dir] = now
        removed = 0
        try:
            entries = list(os.scandir(os.path.join(folder_dir, "tmp")))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                if e.is_file(follow_symlinks=False) and now - e.stat(follow_symlinks=False).st_mtime > self.TMP_MAX_AGE:
                    os.unlink(e.path)
                    removed += 1
            except OSError:
                pass
        return removed

    def close(self) -> None:
        """Stop the watcher (the thread pool belongs to whoever made the runner)."""
        self.watcher.stop()


def _make_maildir(path: str, *, subfolder: bool) -> None:
    """Create a Maildir(++ folder) atomically: built under a temporary name, renamed into place."""
    parent = os.path.dirname(path)
    staging = os.path.join(parent, "tmp", f".mkfolder-{unique_name()}")
    make_dirs(staging)
    for sub in ("tmp", "new", "cur"):
        make_dir(os.path.join(staging, sub))
    if subfolder:
        os.close(os.open(os.path.join(staging, "maildirfolder"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE))
    try:
        os.rename(staging, path)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FolderExists() from None
        raise
    fsync_dir(parent)


def _read_subscriptions(root: str) -> list[str]:
    try:
        with open(os.path.join(root, "subscriptions"), encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


@implementer(IUserMailbox)
class UserMailbox:
    """One user's folder tree."""

    def __init__(self, store: MaildirStore, address: str, root: str) -> None:
        self.store = store
        self.address = address
        self.root = root

    def _run(self, f: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        def work() -> _T:
            self.store.ensure_user(self.root)
            return f(*args)

        return self.store.runner.run(work)

    def _user_lock(self) -> int:
        fd = os.open(os.path.join(self.root, "mailsuite-user.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _path(self, name: str) -> tuple[str, str]:
        return self.store.folder_path(self.root, name)

    # -- listing ---------------------------------------------------------------------
    def list_folders(self) -> defer.Deferred[list[FolderInfo]]:
        return self._run(self._list_folders)

    def _folder_names(self) -> set[str]:
        found: set[str] = set()
        with os.scandir(self.root) as it:
            for e in it:
                name = names.dirname_to_folder(e.name)
                if name is not None and e.is_dir(follow_symlinks=False) and os.path.isdir(os.path.join(e.path, "cur")):
                    found.add(name)
        return found

    def _list_folders(self) -> list[FolderInfo]:
        real = self._folder_names()
        real.add("INBOX")
        subscribed = set(_read_subscriptions(self.root))
        every = set(real)
        for name in real:
            parts = name.split("/")
            for i in range(1, len(parts)):
                every.add("/".join(parts[:i]))
        parents = {"/".join(n.split("/")[:-1]) for n in every if "/" in n}
        out = []
        # RFC 3501 6.3.9: a subscription outlives its folder; RFC 5258 lists it as \\NonExistent
        for name in sorted(every | subscribed, key=lambda n: (n != "INBOX", n)):
            out.append(FolderInfo(
                name=name,
                special_use=names.DEFAULT_FOLDERS.get(name) if name in real else None,
                subscribed=name in subscribed,
                has_children=name in parents,
                selectable=name in real,
                exists=name in every,
            ))
        return out

    # -- tree changes ------------------------------------------------------------------
    def create_folder(self, name: str) -> defer.Deferred[None]:
        try:
            canonical, path = self._path(name)
        except InvalidName as e:
            return defer.fail(e)
        return self._run(self._create_folder, canonical, path)

    def _create_folder(self, canonical: str, path: str) -> None:
        if canonical == "INBOX":
            raise FolderExists()
        fd = self._user_lock()
        try:
            if os.path.isdir(os.path.join(path, "cur")):
                raise FolderExists()
            parts = canonical.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent == "INBOX":
                    continue
                parent_path = self._path(parent)[1]
                if not os.path.isdir(os.path.join(parent_path, "cur")):
                    try:
                        _make_maildir(parent_path, subfolder=True)
                    except FolderExists:
                        pass
            _make_maildir(path, subfolder=True)
        finally:
            os.close(fd)
        self.store.forget_states(path)

    def delete_folder(self, name: str) -> defer.Deferred[None]:
        try:
            canonical, path = self._path(name)
        except InvalidName as e:
            return defer.fail(e)
        if canonical == "INBOX":
            return defer.fail(InvalidName("INBOX cannot be deleted"))
        return self._run(self._delete_folder, path).addCallback(self._notify)

    def _notify(self, paths: list[str]) -> None:
        """Tell watchers (on the reactor thread) about folders that went away or moved."""
        for path in paths:
            self.store.watcher.notify(path)

    def _delete_folder(self, path: str) -> list[str]:
        fd = self._user_lock()
        try:
            if not os.path.isdir(os.path.join(path, "cur")):
                raise NoSuchFolder()
            graveyard = os.path.join(self.root, "tmp", f".deleted-{unique_name()}")
            os.rename(path, graveyard)
            fsync_dir(self.root)
        finally:
            os.close(fd)
        self.store.forget_states(path)
        shutil.rmtree(graveyard, ignore_errors=True)
        return [path]

    def rename_folder(self, old: str, new: str) -> defer.Deferred[None]:
        try:
            old_name, old_path = self._path(old)
            new_name, new_path = self._path(new)
        except InvalidName as e:
            return defer.fail(e)
        if new_name == "INBOX":
            return defer.fail(FolderExists("INBOX exists already"))
        if new_name == old_name or new_name.startswith(old_name + "/"):
            return defer.fail(InvalidName("cannot rename a folder into itself"))
        if old_name == "INBOX":
            return self._rename_inbox(new_name, new_path)
        return self._run(self._rename_folder, old_name, old_path, new_name, new_path).addCallback(self._notify)

    def _rename_folder(self, old_name: str, old_path: str, new_name: str, new_path: str) -> list[str]:
        fd = self._user_lock()
        try:
            existing = self._folder_names()
            moving = sorted(n for n in existing if n == old_name or n.startswith(old_name + "/"))
            if not moving:
                raise NoSuchFolder()
            # the target may be a \\Noselect parent of other folders; only real folders collide
            if any(new_name + n[len(old_name):] in existing for n in moving):
                raise FolderExists()
            parts = new_name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent != "INBOX" and parent not in existing:
                    try:
                        _make_maildir(self._path(parent)[1], subfolder=True)
                    except FolderExists:
                        pass
            moved: list[str] = []
            for name in moving:
                target = new_name + name[len(old_name):]
                src = self._path(name)[1]
                os.rename(src, self._path(target)[1])
                self.store.forget_states(src)
                moved.append(src)
            fsync_dir(self.root)
            subscriptions = _read_subscriptions(self.root)
            renamed = [new_name + s[len(old_name):] if s == old_name or s.startswith(old_name + "/") else s for s in subscriptions]
            if renamed != subscriptions:
                write_atomic(os.path.join(self.root, "subscriptions"), "".join(f"{s}\n" for s in renamed).encode("utf-8"))
        finally:
            os.close(fd)
        return moved

    def _rename_inbox(self, new_name: str, new_path: str) -> defer.Deferred[None]:
        """RFC 3501 6.3.5: renaming INBOX moves its messages to a new folder; INBOX stays, empty."""

        async def run() -> None:
            await self.create_folder(new_name)
            inbox = await self.open_folder("INBOX", read_only=False)
            try:
                uids = [m.uid for m in inbox.messages()]
                if uids:
                    await inbox.move(uids, new_name)
            finally:
                inbox.close()

        return defer.Deferred.fromCoroutine(run())

    def set_subscribed(self, name: str, subscribed: bool) -> defer.Deferred[None]:
        try:
            canonical = names.normalize_folder(name)
        except InvalidName as e:
            return defer.fail(e)

        def work() -> None:
            fd = self._user_lock()
            try:
                current = _read_subscriptions(self.root)
                if subscribed and canonical not in current:
                    current.append(canonical)
                elif not subscribed and canonical in current:
                    current.remove(canonical)
                else:
                    return
                write_atomic(os.path.join(self.root, "subscriptions"), "".join(f"{s}\n" for s in current).encode("utf-8"))
            finally:
                os.close(fd)

        return self._run(work)

    # -- folders ------------------------------------------------------------------------
    def _state(self, name: str) -> tuple[str, str, FolderState]:
        canonical, path = self._path(name)
        return canonical, path, self.store.state(path, self.root)

    def folder_exists(self, name: str) -> defer.Deferred[bool]:
        try:
            _, path = self._path(name)
        except InvalidName as e:
            return defer.fail(e)
        return self._run(os.path.isdir, os.path.join(path, "cur"))

    def status(self, name: str) -> defer.Deferred[FolderStatus]:
        try:
            _, _, state = self._state(name)
        except InvalidName as e:
            return defer.fail(e)

        def work() -> FolderStatus:
            with state.locked():
                records: list[str] = []
                state.sync(records)
                state.commit(records)
                return _status(state)

        return self._run(work)

    def open_folder(self, name: str, *, read_only: bool = False) -> defer.Deferred[IFolder]:
        try:
            canonical, path, state = self._state(name)
        except InvalidName as e:
            return defer.fail(e)
        folder = MaildirFolder(self, canonical, path, state, read_only)
        return self._run(folder._initial_load).addCallback(lambda _: folder)

    def append(self, name: str, message: IIncomingMessage, flags: Iterable[str] = (), internal_date: datetime.datetime | None = None) -> defer.Deferred[int]:
        """APPEND to a folder by name without opening a session on it; fires with the new UID."""
        try:
            _, path, state = self._state(name)
        except InvalidName as e:
            return defer.fail(e)
        return self._append(path, state, message, flags, internal_date)

    def _append(self, path: str, state: FolderState, message: IIncomingMessage, flags: Iterable[str], internal_date: datetime.datetime | None) -> defer.Deferred[int]:
        flag_set = _canonical_flags(flags)
        d = self.store.quota_limits(self.address)

        def work(limits: QuotaLimits) -> int:
            self.store.ensure_user(self.root)
            if not os.path.isdir(os.path.join(path, "cur")):
                raise NoSuchFolder()
            if not limits.unlimited:
                limits.check(self.store.usage_counter.usage(self.root), message.size)
            base = unique_name(message.size)
            tmp = os.path.join(path, "tmp", base)
            with message.open() as source:
                write_file(tmp, source)
            if internal_date is not None:
                stamp = internal_date.timestamp()
                os.utime(tmp, (stamp, stamp))
            try:
                with state.locked():
                    records: list[str] = []
                    suffix = state.suffix_for(flag_set, records)
                    os.rename(tmp, os.path.join(path, "cur", base + suffix))
                    self.store.dirsync.sync(os.path.join(path, "cur"))
                    (uid,) = state.sync(records, extra=[base])
                    state.commit(records)
                    return uid
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

        def stored(uid: int) -> int:
            self.store.watcher.notify(path)
            return uid

        return d.addCallback(lambda limits: self.store.runner.run(work, limits)).addCallback(stored)

    def quota_usage(self) -> defer.Deferred[tuple[int, int]]:
        return self._run(self.store.usage_counter.usage, self.root)

    def lock_exclusive(self, owner: object) -> defer.Deferred[Callable[[], None]]:
        registry = self.store._pop3_locks
        if self.root in registry:
            return defer.fail(MailboxInUse())
        registry[self.root] = owner

        def take() -> int:
            self.store.ensure_user(self.root)
            fd = os.open(os.path.join(self.root, "mailsuite-pop3.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise MailboxInUse() from None
            return fd

        def taken(fd: int) -> Callable[[], None]:
            released: list[bool] = []

            def release() -> None:
                if released:
                    return
                released.append(True)
                os.close(fd)  # closing the descriptor drops the flock
                if registry.get(self.root) is owner:
                    del registry[self.root]

            return release

        def failed(failure: Any) -> Any:
            if registry.get(self.root) is owner:
                del registry[self.root]
            return failure

        return self.store.runner.run(take).addCallbacks(taken, failed)


def _status(state: FolderState) -> FolderStatus:
    """STATUS counters (lock held); recounted only when the state changed since the last STATUS."""
    cached = state.status_cache
    if cached is not None and cached[0] == state.version:
        status: FolderStatus = cached[1]
        return status
    messages = unseen = size = 0
    recent = len(state.unclaimed_recent())
    for entry in state.entries.values():
        messages += 1
        size += entry.size
        if "S" not in entry.suffix[3:]:
            unseen += 1
    status = FolderStatus(messages, recent, unseen, state.uidnext, state.uidvalidity, state.highest_modseq, size)
    state.status_cache = (state.version, status)
    return status


@implementer(IFolder)
class MaildirFolder:
    """A session's view of one folder; see the module notes."""

    log = Logger()

    def __init__(self, mailbox: UserMailbox, name: str, path: str, state: FolderState, read_only: bool) -> None:
        self.mailbox = mailbox
        self.store = mailbox.store
        self.name = name
        self.path = path
        self.state = state
        self.read_only = read_only
        self.uidvalidity = 0
        self.uidnext = 1
        self.highest_modseq = 1
        self.recent: frozenset[int] = frozenset()
        self.keywords: frozenset[str] = frozenset()
        self._infos: dict[int, MessageInfo] = {}
        self._shared = False  # _infos is the state's shared snapshot: copy before changing it
        self._list: list[MessageInfo] | None = None
        self._version = -1
        self._unwatch: list[Callable[[], None]] = []
        self._closed = False

    # -- loading (worker thread) ----------------------------------------------------
    def _load_locked(self) -> tuple[dict[int, MessageInfo] | None, list[int], tuple[int, int, int, frozenset[str]], frozenset[int], int]:
        """Sync under the lock; returns (new snapshot or None if unchanged, claimed, header, in new/, state version)."""
        state = self.state
        with state.locked():
            self._check_same_folder()
            records: list[str] = []
            state.sync(records, claim=not self.read_only)  # read-write: new files go to cur/ on the way
            moving = not self.read_only and bool(state.moved_new or state.in_new())
            claimed = [] if self.read_only else state.claim_recent(records)
            if moving:
                # The claim renamed files new/ -> cur/, so the next sync of any session would list
                # both directories again (on a big folder, most of a SELECT's time): list them now,
                # once the mtime clock has moved on, so the listing is remembered as settled.
                state.wait_until_settled("cur")
                state.wait_until_settled("new")
                state.sync(records)
            state.commit(records)
            header = (state.uidvalidity, state.uidnext, state.highest_modseq, frozenset(state.keywords))
            in_new = frozenset(state.unclaimed_recent()) if self.read_only else frozenset()
            if state.version == self._version and not claimed:
                return None, claimed, header, in_new, state.version
            return state.snapshot(), claimed, header, in_new, state.version

    def _initial_load(self) -> None:
        self.store.ensure_user(self.mailbox.root)
        if not os.path.isdir(os.path.join(self.path, "cur")):
            raise NoSuchFolder(f"No such folder: {self.name}")
        if not self.read_only:
            self.store.clean_tmp(self.path)
        snapshot, claimed, header, in_new, version = self._load_locked()
        assert snapshot is not None
        self._infos = snapshot
        self._shared = True
        self._version = version
        self._apply_header(header)
        self.recent = in_new if self.read_only else frozenset(claimed)

    def _apply_header(self, header: tuple[int, int, int, frozenset[str]]) -> None:
        self.uidvalidity, self.uidnext, self.highest_modseq, self.keywords = header

    def _own_infos(self) -> None:
        if self._shared:
            self._infos = dict(self._infos)
            self._shared = False

    # -- IFolder ----------------------------------------------------------------------
    def messages(self) -> list[MessageInfo]:
        if self._list is None:
            self._list = list(self._infos.values())
        return list(self._list)  # the caller may change its copy

    def refresh(self) -> defer.Deferred[FolderChange]:
        def done(result: Any) -> FolderChange:
            snapshot, claimed, header, in_new, version = result
            self._apply_header(header)
            if snapshot is None:
                return FolderChange()
            self._version = version
            old = self._infos
            added = []
            changed = []
            for uid, info in snapshot.items():
                before = old.get(uid)
                if before is None:
                    added.append(info)
                elif before is not info and before != info:
                    changed.append(info)
            expunged = tuple(uid for uid in old if uid not in snapshot)
            self._infos = snapshot
            self._shared = True
            self._list = None
            if self.read_only:
                self.recent = in_new
            else:
                self.recent = frozenset(u for u in self.recent if u in snapshot) | frozenset(claimed)
            return FolderChange(tuple(added), tuple(changed), expunged)

        return self.store.runner.run(self._load_locked).addCallback(done)

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        unsubscribe = self.store.watcher.watch(self.path, callback)
        self._unwatch.append(unsubscribe)
        return unsubscribe

    def append(self, message: IIncomingMessage, flags: Iterable[str] = (), internal_date: datetime.datetime | None = None) -> defer.Deferred[int]:
        return self.mailbox._append(self.path, self.state, message, flags, internal_date)

    def _check_same_folder(self) -> None:
        """Lock held: refuse to go on if the folder was deleted and re-created (its UIDs mean other messages now)."""
        if self.uidvalidity and self.state.uidvalidity != self.uidvalidity:
            raise NoSuchFolder(f"Folder {self.name} was deleted or re-created")

    def _session_entries(self, uids: Iterable[int]) -> list[Entry]:
        """The state entries of the given UIDs that this session knows, in UID order (lock held)."""
        self._check_same_folder()
        entries = self.state.entries
        return [entries[u] for u in sorted(set(uids)) if u in self._infos and u in entries]

    def store_flags(self, uids: Iterable[int], flags: Iterable[str], mode: str, unchanged_since: int | None = None) -> defer.Deferred[list[MessageInfo]]:
        if self.read_only:
            return defer.fail(ReadOnlyFolder())
        if mode not in ("set", "add", "remove"):
            return defer.fail(ValueError(f"mode must be set, add or remove, not {mode!r}"))
        wanted = _canonical_flags(flags)
        uid_list = list(uids)
        state = self.state

        def work() -> list[MessageInfo]:
            with state.locked():
                records: list[str] = []
                modseq = state.highest_modseq + 1
                changed: list[MessageInfo] = []
                pending = self._session_entries(uid_list)
                for attempt in (0, 1):
                    retry = []
                    for entry in pending:
                        if unchanged_since is not None and entry.modseq > unchanged_since:
                            continue
                        current = set(state.flags_of(entry.suffix))
                        if mode == "set":
                            new = set(wanted)
                        elif mode == "add":
                            new = current | wanted
                        else:
                            lowered = {f.lower() for f in wanted}
                            new = {f for f in current if f.lower() not in lowered}
                        suffix = state.suffix_for(new, records)
                        if entry.where == "cur" and _letters_equal(suffix, entry.suffix):
                            continue
                        if entry.where == "new" and suffix == ":2,":
                            continue  # no flags to record; leave it in new/ (and \Recent)
                        if state.set_suffix(entry, suffix, modseq, records):
                            changed.append(state.info(entry))
                        else:
                            retry.append(entry.uid)
                    if not retry or attempt:
                        break
                    state.sync(records)  # renamed by another program meanwhile: rescan, retry once
                    pending = self._session_entries(retry)
                if changed:
                    # make the renames durable before the client hears the flags are stored
                    self.store.dirsync.sync(os.path.join(self.path, "cur"))
                    state.highest_modseq = max(state.highest_modseq, modseq)
                    records.append(state.header_record())
                state.commit(records)
                return changed

        def done(changed: list[MessageInfo]) -> list[MessageInfo]:
            if changed:
                self._own_infos()
                for info in changed:
                    if info.uid in self._infos:
                        self._infos[info.uid] = info
                self._list = None
                self.highest_modseq = max(self.highest_modseq, max(i.modseq for i in changed))
                self.keywords = frozenset(state.keywords)
                self.store.watcher.notify(self.path)
            return changed

        return self.store.runner.run(work).addCallback(done)

    def expunge(self, uids: Iterable[int] | None = None) -> defer.Deferred[list[int]]:
        if self.read_only:
            return defer.fail(ReadOnlyFolder())
        candidates = list(self._infos) if uids is None else list(uids)
        return self._remove(candidates, only_deleted=True)

    def _remove(self, uids: list[int], *, only_deleted: bool) -> defer.Deferred[list[int]]:
        state = self.state

        def work() -> tuple[list[int], int]:
            with state.locked():
                records: list[str] = []
                removed: list[int] = []
                pending = self._session_entries(uids)
                for attempt in (0, 1):
                    retry = []
                    for entry in pending:
                        if only_deleted and "T" not in entry.suffix[3:]:
                            continue
                        try:
                            os.unlink(os.path.join(self.path, entry.filename))
                        except FileNotFoundError:
                            retry.append(entry.uid)
                            continue
                        state.remove(entry, records)
                        removed.append(entry.uid)
                    if not retry or attempt:
                        break
                    before = set(state.entries)
                    state.sync(records)
                    removed.extend(u for u in retry if u in before and u not in state.entries)  # gone meanwhile
                    pending = self._session_entries(retry)
                if removed:
                    fsync_dir(os.path.join(self.path, "cur"))
                    state.highest_modseq += 1
                    records.append(state.header_record())
                state.commit(records)
                return sorted(set(removed)), state.highest_modseq

        def done(outcome: tuple[list[int], int]) -> list[int]:
            removed, highest = outcome
            if removed:
                self.highest_modseq = max(self.highest_modseq, highest)
                self._own_infos()
                for uid in removed:
                    self._infos.pop(uid, None)
                self._list = None
                self.recent = frozenset(u for u in self.recent if u in self._infos)
                self.store.watcher.notify(self.path)
            return removed

        return self.store.runner.run(work).addCallback(done)

    def copy(self, uids: Iterable[int], destination: str) -> defer.Deferred[list[tuple[int, int]]]:
        return self._copy(list(uids), destination)

    def _copy(self, uids: list[int], destination: str) -> defer.Deferred[list[tuple[int, int]]]:
        mailbox = self.mailbox
        try:
            _, dest_path, dest_state = mailbox._state(destination)
        except InvalidName as e:
            return defer.fail(e)
        source_state = self.state

        def link_all(limits: QuotaLimits) -> list[tuple[int, int]]:
            if not os.path.isdir(os.path.join(dest_path, "cur")):
                raise NoSuchFolder(f"No such folder: {destination}")
            linked: list[tuple[int, str, frozenset[str]]] = []
            with source_state.locked():
                entries = self._session_entries(uids)
                if not limits.unlimited:
                    limits.check(self.store.usage_counter.usage(mailbox.root), sum(e.size for e in entries), len(entries))
                for attempt in (0, 1):
                    retry = []
                    for entry in entries:
                        base = unique_name(entry.size)
                        target = os.path.join(dest_path, "tmp", base)
                        src = os.path.join(self.path, entry.filename)
                        try:
                            _link_or_copy(src, target)
                        except FileNotFoundError:
                            retry.append(entry.uid)
                            continue
                        linked.append((entry.uid, base, source_state.flags_of(entry.suffix)))
                    if not retry or attempt:
                        break
                    records: list[str] = []
                    source_state.sync(records)
                    source_state.commit(records)
                    entries = self._session_entries(retry)
            linked.sort()
            try:
                with dest_state.locked():
                    records = []
                    for _, base, flags in linked:
                        suffix = dest_state.suffix_for(set(flags), records)
                        os.rename(os.path.join(dest_path, "tmp", base), os.path.join(dest_path, "cur", base + suffix))
                    if linked:
                        self.store.dirsync.sync(os.path.join(dest_path, "cur"))
                    new_uids = dest_state.sync(records, extra=[base for _, base, _ in linked])
                    dest_state.commit(records)
            except BaseException:
                for _, base, _ in linked:
                    try:
                        os.unlink(os.path.join(dest_path, "tmp", base))
                    except OSError:
                        pass
                raise
            return [(src_uid, new_uid) for (src_uid, _, _), new_uid in zip(linked, new_uids)]

        def copied(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
            self.store.watcher.notify(dest_path)
            return pairs

        return self.store.quota_limits(mailbox.address).addCallback(lambda limits: self.store.runner.run(link_all, limits)).addCallback(copied)

    def move(self, uids: Iterable[int], destination: str) -> defer.Deferred[list[tuple[int, int]]]:
        if self.read_only:
            return defer.fail(ReadOnlyFolder())
        uid_list = list(uids)

        def remove(pairs: list[tuple[int, int]]) -> Any:
            return self._remove([src for src, _ in pairs], only_deleted=False).addCallback(lambda _: pairs)

        return self._copy(uid_list, destination).addCallback(remove)

    def _current_path(self, uid: int) -> str:
        info = self._infos.get(uid)
        if info is None:
            raise NoSuchMessage()
        entry = self.state.entries.get(uid)
        if entry is not None and entry.base == info.key:
            return os.path.join(self.path, entry.filename)
        return os.path.join(self.path, "cur", info.key + ":2,")

    def _find(self, uid: int) -> str:
        """Locate a message renamed by another process since the last sync (rare; scans the folder)."""
        base = self._infos[uid].key
        for where in ("cur", "new"):
            try:
                with os.scandir(os.path.join(self.path, where)) as it:
                    for e in it:
                        if e.name == base or e.name.startswith(base + ":"):
                            return e.path
            except FileNotFoundError:
                break
        raise NoSuchMessage()

    def _open_fd(self, uid: int, path: str | None = None) -> int:
        """A read-only descriptor of the message file (NoSuchMessage when it is gone)."""
        try:
            return os.open(path or self._current_path(uid), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                return os.open(self._find(uid), os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, KeyError):
                raise NoSuchMessage() from None

    def _read_message(self, uid: int) -> bytes:
        """The whole message, read in the calling thread (a store thread).  For SEARCH
        BODY/TEXT over many small files: one open(2) and usually one read(2), no file object
        (2.5x cheaper than a file object and its read)."""
        fd = self._open_fd(uid)
        try:
            info = self._infos.get(uid)  # one lookup: the reactor thread may refresh meanwhile
            want = info.size + 1 if info is not None else 65536
            data = os.read(fd, want)
            if len(data) < want:
                return data  # a regular file reads short only at its end
            chunks = [data]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _read_header_block(self, uid: int, path: str | None = None, limit: int | None = None) -> bytes | None:
        """The header block (see header_lines), read in the calling thread (a store thread)."""
        with os.fdopen(self._open_fd(uid, path), "rb") as fp:
            return header_lines(fp, limit)

    def read_headers(self, uids: Sequence[int], max_size: int | None = None) -> defer.Deferred[dict[int, bytes]]:
        def read(missing: list[int]) -> defer.Deferred[dict[int, bytes]]:
            paths: dict[int, str] = {}
            for uid in missing:
                try:
                    paths[uid] = self._current_path(uid)
                except NoSuchMessage:
                    continue

            def work() -> dict[int, bytes]:
                found: dict[int, bytes] = {}
                for uid, path in paths.items():
                    try:
                        block = self._read_header_block(uid, path, max_size)
                    except NoSuchMessage:
                        continue
                    if block is not None:
                        found[uid] = block
                return found

            return self.store.runner.run(work)

        infos = self._infos  # only messages of this session's view
        return through_cache(self.store.headers, (self.mailbox.address, self.name, self.uidvalidity), [u for u in uids if u in infos], read)

    def with_messages(self, fn: Callable[[IMessageOctets], Any]) -> defer.Deferred[Any]:
        return self.store.runner.run(fn, _FolderOctets(self))

    def facts(self) -> FolderFacts:
        cache = self.store.facts
        return FolderFacts(cache, cache.folder_id((self.mailbox.address, self.name, self.uidvalidity)))

    def open_reader(self, uid: int) -> defer.Deferred[IMessageReader]:
        try:
            path = self._current_path(uid)
        except NoSuchMessage as e:
            return defer.fail(e)
        runner = self.store.runner
        return runner.run(lambda: FileReader(self._open_fd(uid, path), runner))

    def map_messages(self, uids: Sequence[int], fn: Callable[[int, Any], Any]) -> defer.Deferred[dict[int, Any]]:
        paths: dict[int, str] = {}
        for uid in uids:
            try:
                paths[uid] = self._current_path(uid)
            except NoSuchMessage:
                continue

        def work() -> dict[int, Any]:
            out: dict[int, Any] = {}
            for uid, path in paths.items():
                try:
                    fd = self._open_fd(uid, path)
                except NoSuchMessage:
                    continue
                try:
                    out[uid] = _with_octets(fd, lambda octets: fn(uid, octets))  # noqa: B023 - called at once
                finally:
                    os.close(fd)
            return out

        return self.store.runner.run(work)

    def close(self) -> None:
        self._closed = True
        for unsubscribe in self._unwatch:
            unsubscribe()
        self._unwatch = []


@implementer(IMessageOctets)
class _FolderOctets:
    """A folder's messages read on demand in a store thread (IFolder.with_messages)."""

    __slots__ = ("_folder",)

    def __init__(self, folder: MaildirFolder) -> None:
        self._folder = folder

    def header(self, uid: int) -> bytes:
        return self._folder._read_header_block(uid) or b""

    def message(self, uid: int) -> bytes:
        return self._folder._read_message(uid)


@implementer(IMessageReader)
class FileReader:
    """An open message file read with pread(2) on the store's threads (the descriptor keeps
    the octets readable after a rename or an expunge by anyone)."""

    def __init__(self, fd: int, runner: BlockingRunner) -> None:
        self.fd = fd
        self.runner = runner
        self.size = os.fstat(fd).st_size

    def read(self, start: int, length: int, then: Callable[[bytes], Any] | None = None) -> defer.Deferred[Any]:
        if self.fd < 0:
            return defer.fail(ValueError("reader closed"))
        if then is None:
            return self.runner.run(os.pread, self.fd, max(0, length), max(0, start))
        return self.runner.run(_pread_then, self.fd, max(0, length), max(0, start), then)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _pread_then(fd: int, length: int, start: int, then: Callable[[bytes], Any]) -> Any:
    return then(os.pread(fd, length, start))


#: Messages up to this size are read into memory for map_messages; bigger ones are mapped.
MAP_MIN = 256 * 1024


def _with_octets(fd: int, fn: Callable[[Any], Any]) -> Any:
    """``fn(octets)`` over a message file: read whole when small, else memory-mapped (only the
    pages ``fn`` touches are read, and they count against the page cache, not our heap)."""
    size = os.fstat(fd).st_size
    if size <= MAP_MIN:
        return fn(os.pread(fd, size, 0))  # a stored message never changes
    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    try:
        return fn(mapped)
    finally:
        mapped.close()


def _copy_into_new(src: str, folder_dir: str, name: str) -> None:
    """Deliver a copy of the file ``src`` as ``new/<name>`` of a folder, the Maildir way (its own tmp/, fsync, rename).

    For a written message file that cannot be linked or renamed into the
    folder (another file system, or a link limit).
    """
    own_tmp = os.path.join(folder_dir, "tmp", name)
    with open(src, "rb") as source:
        write_file(own_tmp, source)
    try:
        os.rename(own_tmp, os.path.join(folder_dir, "new", name))
    except OSError:
        try:
            os.unlink(own_tmp)
        except OSError:
            pass
        raise


def _link_or_copy(src: str, dest: str) -> None:
    """Hard-link a message file (same inode: same bytes, same internal date), copying across devices."""
    try:
        os.link(src, dest)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        with open(src, "rb") as source:
            write_file(dest, source)
        st = os.stat(src)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
