"""The user directory in one SQLite file: domains, users, aliases.

Implementation notes:

- File: ``<data_root>/users.sqlite3`` (mode 0600: it holds password hashes),
  WAL journal so the server reads while the admin CLI writes from another
  process.  Every lookup is its own autocommit read, so CLI changes are seen
  by the running server at the next lookup, without a restart.  The server
  remembers answers only while SQLite's ``data_version`` is unchanged
  (:mod:`.lookup_cache`), which keeps that promise without a thread trip per
  lookup.
- Addresses are stored in normal form (:mod:`.addresses`); columns use
  ``COLLATE NOCASE``, so ``Alice@example.org`` and ``alice@example.org`` are
  one user, and lookups answer with the address as it was created.
- Aliases are rows ``(source, target)``; a source may have several targets,
  local or remote.  A catch-all is the source ``@domain`` and applies only
  when the address is neither a user nor an alias.  A user address may also
  be an alias source: the user keeps a copy and the targets get one too.
- Local domains are those in the table plus ``extra_domains`` (the config's
  ``domains``).
- Who may send as whom (MAIL FROM, and the From/Sender header fields of
  submitted mail): a user owns their own address and every alias whose only
  target is them (a catch-all or a list alias with several targets is owned
  by nobody).  The ``senders`` table adds more per user, as Postfix's
  ``smtpd_sender_login_maps``: an address (any domain, e.g. a shared
  ``office@``) or ``@domain`` for every address of that domain.  Its rows go
  with the user when the user is removed.
- The :class:`~mailsuite.interfaces.IUserDirectory` methods return Deferreds
  and run SQLite and hashing on the given thread pool (never on the reactor
  thread); without a pool (the CLI, unit tests) they run inline.  The admin
  methods (``add_user``...) are synchronous and raise
  :class:`DirectoryError` subclasses with a message meant for the admin.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from mailsuite.auth import hashing
from mailsuite.auth.addresses import domain_of, normalise_address, normalise_domain
from mailsuite.auth.lookup_cache import DataVersion, LookupCache
from mailsuite.errors import InvalidName, NoSuchUser
from mailsuite.interfaces import IUserDirectory, RecipientResolution, UserRecord

T = TypeVar("T")

#: Alias chains longer than this are treated as a loop.
MAX_ALIAS_DEPTH = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS users (
    address TEXT PRIMARY KEY COLLATE NOCASE,
    password TEXT NOT NULL,
    quota_bytes INTEGER,
    quota_messages INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    source TEXT NOT NULL COLLATE NOCASE,
    target TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (source, target)
);
CREATE TABLE IF NOT EXISTS senders (
    user TEXT NOT NULL COLLATE NOCASE,
    address TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (user, address)
);
"""


class DirectoryError(Exception):
    """An admin operation that cannot be done; the message says why."""


class AlreadyExists(DirectoryError):
    """The user, alias or domain exists already."""


class NotFound(DirectoryError):
    """The user, alias or domain does not exist."""


class NotLocal(DirectoryError):
    """The address's domain is not one of ours."""


def catch_all_source(domain: str) -> str:
    """The alias source that stands for every unknown address of ``domain``."""
    return "@" + normalise_domain(domain)


def parse_sender_address(address: str) -> str:
    """A normal-form extra sender address: an address, or ``@domain`` / ``*@domain`` for all of a domain."""
    return parse_alias_source(address)


def parse_alias_source(source: str) -> str:
    """A normal-form alias source: an address, or ``@domain`` / ``*@domain`` for a catch-all."""
    value = source.strip()
    if value.startswith("*@"):
        value = value[1:]
    if value.startswith("@"):
        return catch_all_source(value[1:])
    return normalise_address(value)


@implementer(IUserDirectory)
class SQLiteDirectory:
    """Domains, users and aliases in SQLite (see the module notes)."""

    log = Logger()

    def __init__(self, path: str | os.PathLike[str], *, extra_domains: Iterable[str] = (), reactor: Any = None, pool: Any = None) -> None:
        self.path = Path(path)
        self.extra_domains = frozenset(normalise_domain(d) for d in extra_domains)
        self.reactor = reactor
        self.pool = pool
        self._local = threading.local()
        self._create()
        # The server (with a pool) remembers answers while the file is unchanged; the CLI asks every time.
        self._version: DataVersion | None = DataVersion(str(self.path)) if pool is not None else None
        self._answers = LookupCache(self._version, remember_errors=(NoSuchUser, InvalidName)) if self._version is not None else None

    # -- plumbing ----------------------------------------------------------
    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; every statement sees the latest commit)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def _run(self, f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        if self.pool is None:
            return defer.maybeDeferred(f, *args)
        return threads.deferToThreadPool(self.reactor, self.pool, f, *args)

    def _cached(self, kind: str, key: str, f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        if self._answers is None:
            return self._run(f, *args)
        return self._answers.lookup((kind, key), lambda: self._run(f, *args))

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        if self._version is not None:
            self._version.close()
            self._version = None
            self._answers = None
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- queries (blocking; run through _run by the Deferred API) ------------
    def local_domains(self) -> list[str]:
        """Every local domain: the config's and the directory's, sorted."""
        rows = self._db().execute("SELECT name FROM domains").fetchall()
        return sorted(self.extra_domains | {r[0] for r in rows})

    def _is_local_domain(self, domain: str) -> bool:
        domain = domain.lower()
        if domain in self.extra_domains:
            return True
        return self._db().execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is not None

    def _user_row(self, address: str) -> tuple[Any, ...] | None:
        return self._db().execute(  # type: ignore[no-any-return]  # sqlite3 rows are Any
            "SELECT address, password, quota_bytes, quota_messages FROM users WHERE address = ?", (address,)
        ).fetchone()

    def _targets(self, source: str) -> list[str]:
        rows = self._db().execute("SELECT target FROM aliases WHERE source = ? ORDER BY target", (source,)).fetchall()
        return [r[0] for r in rows]

    def _resolve(self, address: str) -> RecipientResolution:
        address = normalise_address(address)
        if not self._is_local_domain(domain_of(address)):
            return RecipientResolution(remote=(address,))
        local: dict[str, None] = {}
        remote: dict[str, None] = {}
        self._expand(address, local, remote, set(), 0)
        if not local and not remote:
            raise NoSuchUser()
        return RecipientResolution(local=tuple(local), remote=tuple(remote))

    def _expand(self, address: str, local: dict[str, None], remote: dict[str, None], seen: set[str], depth: int) -> None:
        key = address.lower()
        if key in seen or depth > MAX_ALIAS_DEPTH:
            return
        seen.add(key)
        if not self._is_local_domain(domain_of(address)):
            remote[address] = None
            return
        user = self._user_row(address)
        if user is not None:
            local[user[0]] = None
        targets = self._targets(address)
        if user is None and not targets:
            targets = self._targets(catch_all_source(domain_of(address)))
        for target in targets:
            self._expand(target, local, remote, seen, depth + 1)

    def find_user(self, address: str) -> UserRecord | None:
        """The user record or None (blocking; get_user is the Deferred form)."""
        try:
            address = normalise_address(address)
        except InvalidName:
            return None
        row = self._user_row(address)
        if row is None:
            return None
        return UserRecord(address=row[0], quota_bytes=row[2], quota_messages=row[3])

    def _sender_addresses(self, user: str) -> frozenset[str]:
        row = self._user_row(normalise_address(user))
        if row is None:
            return frozenset()
        owner = row[0]
        addresses = {owner}
        db = self._db()
        for (source,) in db.execute("SELECT DISTINCT source FROM aliases WHERE target = ?", (owner,)).fetchall():
            if source.startswith("@"):
                continue
            targets = {t.lower() for t in self._targets(source)}
            if targets == {owner.lower()}:
                addresses.add(source)
        addresses.update(self._extra_senders(owner))
        return frozenset(addresses)

    def _extra_senders(self, user: str) -> list[str]:
        rows = self._db().execute("SELECT address FROM senders WHERE user = ? ORDER BY address", (user,)).fetchall()
        return [r[0] for r in rows]

    def authenticate_sync(self, address: str, password: str) -> str | None:
        """The user's address as stored if the password is right, else None (blocking, slow)."""
        try:
            address = normalise_address(address)
        except InvalidName:
            hashing.verify_dummy(password)  # the same work as a real check: unknown names cost the same time
            return None
        row = self._user_row(address)
        if row is None:
            hashing.verify_dummy(password)
            return None
        try:
            ok = hashing.verify(row[1], password)
        except hashing.UnknownHashScheme as e:
            self.log.error("user {user}: stored password hash cannot be checked: {error}", user=row[0], error=str(e))
            return None
        if not ok:
            return None
        if hashing.needs_rehash(row[1]):
            # Migrated Dovecot hashes become argon2id after the first good login.
            self._db().execute("UPDATE users SET password = ? WHERE address = ? AND password = ?", (hashing.hash_password(password), row[0], row[1]))
        return str(row[0])

    # -- IUserDirectory --------------------------------------------------------
    def is_local_domain(self, domain: str) -> defer.Deferred[bool]:
        """True if mail for the domain is stored here."""
        return self._cached("domain", domain, self._is_local_domain, domain)

    def resolve(self, address: str) -> defer.Deferred[RecipientResolution]:
        """Expand aliases and the catch-all; NoSuchUser for an unknown local address."""
        return self._cached("resolve", address, self._resolve, address)

    def get_user(self, address: str) -> defer.Deferred[UserRecord | None]:
        """The user record, or None."""
        return self._cached("user", address, self.find_user, address)

    def sender_addresses(self, user: str) -> defer.Deferred[frozenset[str]]:
        """The user's own address, aliases whose only target is the user, and their extra senders (``@domain``: all of it)."""
        return self._cached("senders", user, self._sender_addresses, user)

    def verify_password(self, address: str, password: str) -> defer.Deferred[bool]:
        """Check a password (slow hash, on the pool)."""
        return self._run(self.authenticate_sync, address, password).addCallback(lambda found: found is not None)

    def authenticate(self, address: str, password: str) -> defer.Deferred[str | None]:
        """Like verify_password but fires with the stored address (for the login avatar) or None."""
        return self._run(self.authenticate_sync, address, password)

    # -- admin (synchronous, used by the CLI and tests) -------------------------
    def add_domain(self, domain: str) -> str:
        """Make a domain local; AlreadyExists if it is."""
        domain = normalise_domain(domain)
        if domain in self.extra_domains:
            raise AlreadyExists(f"domain {domain} is already local (listed in the configuration's domains)")
        try:
            self._db().execute("INSERT INTO domains (name) VALUES (?)", (domain,))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"domain {domain} exists already") from None
        return domain

    def remove_domain(self, domain: str, *, force: bool = False) -> None:
        """Forget a local domain; refuses while users or aliases use it unless ``force``."""
        domain = normalise_domain(domain)
        db = self._db()
        if db.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
            if domain in self.extra_domains:
                raise DirectoryError(f"domain {domain} comes from the configuration file's domains; remove it there")
            raise NotFound(f"no such domain: {domain}")
        pattern = "%@" + domain
        users = db.execute("SELECT COUNT(*) FROM users WHERE address LIKE ?", (pattern,)).fetchone()[0]
        aliases = db.execute("SELECT COUNT(DISTINCT source) FROM aliases WHERE source LIKE ?", (pattern,)).fetchone()[0]
        if (users or aliases) and not force:
            raise DirectoryError(f"domain {domain} still has {users} user(s) and {aliases} alias(es); remove them first or use --force")
        with _transaction(db):
            db.execute("DELETE FROM users WHERE address LIKE ?", (pattern,))
            db.execute("DELETE FROM senders WHERE user LIKE ?", (pattern,))
            db.execute("DELETE FROM aliases WHERE source LIKE ?", (pattern,))
            db.execute("DELETE FROM domains WHERE name = ?", (domain,))

    def list_domains(self) -> list[str]:
        """Every local domain (configuration and directory)."""
        return self.local_domains()

    def require_local(self, address: str) -> None:
        """NotLocal unless the (normalised) address's domain is local."""
        domain = domain_of(address)
        if not self._is_local_domain(domain):
            raise NotLocal(f"{domain} is not a local domain: add it with `mailsuite domain add {domain}` or list it in the configuration's domains")

    def add_user(self, address: str, password: str | None = None, *, password_hash: str | None = None,
                 quota_bytes: int | None = None, quota_messages: int | None = None) -> str:
        """Create a user from a password (hashed with argon2id) or an imported hash; returns the address."""
        address = normalise_address(address)
        self.require_local(address)
        stored = self._stored_hash(password, password_hash)
        try:
            self._db().execute(
                "INSERT INTO users (address, password, quota_bytes, quota_messages, created) VALUES (?, ?, ?, ?, ?)",
                (address, stored, quota_bytes, quota_messages, time.time()),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {address} exists already") from None
        return address

    @staticmethod
    def _stored_hash(password: str | None, password_hash: str | None) -> str:
        if password_hash is not None:
            try:
                hashing.check_format(password_hash)
            except hashing.UnknownHashScheme as e:
                raise DirectoryError(str(e)) from None
            return password_hash.strip()
        if not password:
            raise DirectoryError("the password is empty")
        return hashing.hash_password(password)

    def set_password(self, address: str, password: str | None = None, *, password_hash: str | None = None) -> None:
        """Replace a user's password (or hash); NotFound for an unknown user."""
        address = normalise_address(address)
        stored = self._stored_hash(password, password_hash)
        cursor = self._db().execute("UPDATE users SET password = ? WHERE address = ?", (stored, address))
        if cursor.rowcount == 0:
            raise NotFound(f"no such user: {address}")

    def set_quota(self, address: str, quota_bytes: int | None, quota_messages: int | None) -> None:
        """Set a user's own quota (None: the configured default; 0: unlimited)."""
        address = normalise_address(address)
        cursor = self._db().execute("UPDATE users SET quota_bytes = ?, quota_messages = ? WHERE address = ?", (quota_bytes, quota_messages, address))
        if cursor.rowcount == 0:
            raise NotFound(f"no such user: {address}")

    def remove_user(self, address: str) -> None:
        """Delete a user (their mail stays on disk); NotFound for an unknown user."""
        address = normalise_address(address)
        db = self._db()
        with _transaction(db):
            cursor = db.execute("DELETE FROM users WHERE address = ?", (address,))
            if cursor.rowcount == 0:
                raise NotFound(f"no such user: {address}")
            db.execute("DELETE FROM senders WHERE user = ?", (address,))

    def list_users(self, domain: str | None = None) -> list[UserRecord]:
        """Every user (of one domain if given), sorted by address."""
        db = self._db()
        if domain is None:
            rows = db.execute("SELECT address, quota_bytes, quota_messages FROM users ORDER BY address").fetchall()
        else:
            rows = db.execute("SELECT address, quota_bytes, quota_messages FROM users WHERE address LIKE ? ORDER BY address",
                              ("%@" + normalise_domain(domain),)).fetchall()
        return [UserRecord(address=r[0], quota_bytes=r[1], quota_messages=r[2]) for r in rows]

    def _existing_user(self, user: str) -> str:
        row = self._user_row(normalise_address(user))
        if row is None:
            raise NotFound(f"no such user: {user}")
        return str(row[0])

    def add_senders(self, user: str, addresses: Iterable[str]) -> list[str]:
        """Let ``user`` also send as each address (``@domain``: any address of it); returns the new ones."""
        owner = self._existing_user(user)
        normalised = list(dict.fromkeys(parse_sender_address(a) for a in addresses))
        if not normalised:
            raise DirectoryError("name at least one address the user may send as")
        existing = {a.lower() for a in self._extra_senders(owner)}
        new = [a for a in normalised if a.lower() not in existing and a.lower() != owner.lower()]
        if not new:
            raise AlreadyExists(f"{owner} may already send as {', '.join(normalised)}")
        db = self._db()
        with _transaction(db):
            db.executemany("INSERT INTO senders (user, address) VALUES (?, ?)", [(owner, a) for a in new])
        return new

    def remove_senders(self, user: str, addresses: Iterable[str] = ()) -> int:
        """Take back some extra sender addresses of ``user``, or all of them when none are named; returns rows removed."""
        owner = self._existing_user(user)
        db = self._db()
        named = list({parse_sender_address(a).lower(): None for a in addresses})
        if not named:
            return db.execute("DELETE FROM senders WHERE user = ?", (owner,)).rowcount
        removed = 0
        with _transaction(db):
            missing = [a for a in named if db.execute("DELETE FROM senders WHERE user = ? AND address = ?", (owner, a)).rowcount == 0]
            if missing:
                # Nothing is removed unless every named address was there.
                raise NotFound(f"{owner} has no extra sender address {', '.join(missing)} (see `mailsuite user senders list {owner}`)")
            removed = len(named)
        return removed

    def list_senders(self, user: str | None = None) -> list[tuple[str, list[str]]]:
        """(user, extra sender addresses) pairs sorted by user: every user with extras, or just ``user``."""
        if user is not None:
            owner = self._existing_user(user)
            return [(owner, self._extra_senders(owner))]
        grouped: dict[str, list[str]] = {}
        for owner, address in self._db().execute("SELECT user, address FROM senders ORDER BY user, address").fetchall():
            grouped.setdefault(owner, []).append(address)
        return list(grouped.items())

    def own_sender_addresses(self, user: str) -> list[tuple[str, str]]:
        """Every address ``user`` may send as, with why: ``own``, ``alias`` or ``extra`` (for the admin)."""
        owner = self._existing_user(user)
        extras = self._extra_senders(owner)
        aliases = sorted(self._sender_addresses(owner) - {owner} - set(extras), key=str.lower)
        return [(owner, "own")] + [(a, "alias") for a in aliases] + [(a, "extra") for a in extras]

    def add_alias(self, source: str, targets: Iterable[str]) -> list[str]:
        """Forward ``source`` (an address or ``@domain`` catch-all) to targets; returns the new targets."""
        source = parse_alias_source(source)
        self.require_local(source)  # also right for "@domain": the domain is after the @
        normalised = list(dict.fromkeys(normalise_address(t) for t in targets))
        if not normalised:
            raise DirectoryError("an alias needs at least one target address")
        if any(t.lower() == source.lower() for t in normalised):
            raise DirectoryError(f"alias {source} cannot point to itself")
        db = self._db()
        existing = {t.lower() for t in self._targets(source)}
        new = [t for t in normalised if t.lower() not in existing]
        if not new:
            raise AlreadyExists(f"alias {source} already forwards to {', '.join(normalised)}")
        with _transaction(db):
            db.executemany("INSERT INTO aliases (source, target) VALUES (?, ?)", [(source, t) for t in new])
        return new

    def remove_alias(self, source: str, targets: Iterable[str] = ()) -> int:
        """Remove some targets of an alias, or the whole alias when none are named; returns rows removed."""
        source = parse_alias_source(source)
        db = self._db()
        targets = [normalise_address(t) for t in targets]
        if targets:
            removed = 0
            with _transaction(db):
                for target in targets:
                    removed += db.execute("DELETE FROM aliases WHERE source = ? AND target = ?", (source, target)).rowcount
                if removed < len(targets):
                    # Nothing is removed unless every named target was there.
                    raise NotFound(f"alias {source} does not forward to all of: {', '.join(targets)}")
            return removed
        removed = db.execute("DELETE FROM aliases WHERE source = ?", (source,)).rowcount
        if removed == 0:
            raise NotFound(f"no such alias: {source}")
        return removed

    def list_aliases(self, domain: str | None = None) -> list[tuple[str, list[str]]]:
        """(source, targets) pairs sorted by source; catch-alls appear as ``@domain``."""
        db = self._db()
        rows = db.execute("SELECT source, target FROM aliases ORDER BY source, target").fetchall()
        grouped: dict[str, list[str]] = {}
        want = normalise_domain(domain) if domain else None
        for source, target in rows:
            if want is not None and domain_of(source) != want:
                continue
            grouped.setdefault(source, []).append(target)
        return list(grouped.items())


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (rollback on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
