"""The SQLite directory: admin round trips and the IUserDirectory lookups."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.python.threadpool import ThreadPool
from zope.interface.verify import verifyObject

from mailsuite.auth import hashing
from mailsuite.auth.directory import AlreadyExists, DirectoryError, NotFound, NotLocal, SQLiteDirectory
from mailsuite.errors import InvalidName, NoSuchUser
from mailsuite.interfaces import IUserDirectory, RecipientResolution, UserRecord

from .conftest import failure, result
from .test_hashing import DOVECOT_HASHES


def test_implements_the_interface(directory: SQLiteDirectory) -> None:
    """Protocols can rely on every IUserDirectory method being there."""
    assert verifyObject(IUserDirectory, directory)


def test_database_file_is_private(directory: SQLiteDirectory) -> None:
    """The file holds password hashes: only the owner may read it."""
    assert stat.S_IMODE(directory.path.stat().st_mode) == 0o600


def test_user_round_trip(directory: SQLiteDirectory) -> None:
    """Add, look up, change password, set quota, list and remove a user."""
    assert directory.add_user("Alice@EXAMPLE.test", "pw1") == "Alice@example.test"
    assert result(directory.get_user("alice@example.test")) == UserRecord("Alice@example.test")
    assert result(directory.verify_password("alice@Example.Test", "pw1")) is True
    assert result(directory.verify_password("alice@example.test", "pw2")) is False
    directory.set_password("alice@example.test", "pw2")
    assert result(directory.verify_password("alice@example.test", "pw1")) is False
    assert result(directory.verify_password("alice@example.test", "pw2")) is True
    directory.set_quota("alice@example.test", 1000, 5)
    assert result(directory.get_user("alice@example.test")) == UserRecord("Alice@example.test", 1000, 5)
    directory.add_user("bob@example.test", "x", quota_bytes=0)
    assert [u.address for u in directory.list_users()] == ["Alice@example.test", "bob@example.test"]
    assert directory.list_users()[1].quota_bytes == 0
    directory.remove_user("ALICE@example.test")
    assert result(directory.get_user("alice@example.test")) is None
    assert result(directory.verify_password("alice@example.test", "pw2")) is False


def test_stored_password_is_a_hash(directory: SQLiteDirectory) -> None:
    """The database never holds the password itself."""
    directory.add_user("alice@example.test", "plain-text-password")
    raw = sqlite3.connect(directory.path).execute("SELECT password FROM users").fetchone()[0]
    assert raw.startswith("$argon2id$") and "plain-text-password" not in raw


def test_admin_errors(directory: SQLiteDirectory) -> None:
    """Duplicates, unknown users, foreign domains and bad addresses give clear errors."""
    directory.add_user("alice@example.test", "pw")
    with pytest.raises(AlreadyExists, match="exists already"):
        directory.add_user("ALICE@example.test", "pw")
    with pytest.raises(NotFound, match="no such user"):
        directory.remove_user("nobody@example.test")
    with pytest.raises(NotFound, match="no such user"):
        directory.set_password("nobody@example.test", "x")
    with pytest.raises(NotLocal, match="not a local domain"):
        directory.add_user("bob@elsewhere.test", "pw")
    with pytest.raises(InvalidName):
        directory.add_user("bad address@example.test", "pw")
    with pytest.raises(DirectoryError, match="empty"):
        directory.add_user("carol@example.test", "")
    with pytest.raises(DirectoryError, match="unsupported"):
        directory.add_user("carol@example.test", password_hash="{PLAIN}secret")


def test_domains(directory: SQLiteDirectory) -> None:
    """Config domains plus directory domains are local; removal is refused while in use."""
    assert directory.list_domains() == ["example.test"]
    assert directory.add_domain("Other.TEST") == "other.test"
    with pytest.raises(AlreadyExists):
        directory.add_domain("other.test")
    with pytest.raises(AlreadyExists, match="configuration"):
        directory.add_domain("example.test")
    assert result(directory.is_local_domain("OTHER.test")) is True
    assert result(directory.is_local_domain("example.TEST")) is True
    assert result(directory.is_local_domain("remote.test")) is False
    directory.add_user("u@other.test", "pw")
    with pytest.raises(DirectoryError, match="1 user"):
        directory.remove_domain("other.test")
    directory.remove_domain("other.test", force=True)
    assert result(directory.get_user("u@other.test")) is None
    assert result(directory.is_local_domain("other.test")) is False
    with pytest.raises(NotFound):
        directory.remove_domain("other.test")
    with pytest.raises(DirectoryError, match="configuration"):
        directory.remove_domain("example.test")


def test_resolve_users_aliases_and_remote(directory: SQLiteDirectory) -> None:
    """Aliases fan out to local users and remote addresses; users resolve to themselves."""
    directory.add_user("alice@example.test", "pw")
    directory.add_user("bob@example.test", "pw")
    directory.add_alias("team@example.test", ["alice@example.test", "Bob@Example.test", "ext@remote.test"])
    assert result(directory.resolve("ALICE@example.test")) == RecipientResolution(local=("alice@example.test",))
    team = result(directory.resolve("team@example.test"))
    assert set(team.local) == {"alice@example.test", "bob@example.test"}
    assert team.remote == ("ext@remote.test",)
    assert result(directory.resolve("someone@remote.test")) == RecipientResolution(remote=("someone@remote.test",))
    assert isinstance(failure(directory.resolve("nobody@example.test")).value, NoSuchUser)


def test_nested_aliases_and_loops(directory: SQLiteDirectory) -> None:
    """Alias chains are followed; a loop ends without hanging and without duplicates."""
    directory.add_user("alice@example.test", "pw")
    directory.add_alias("a@example.test", ["b@example.test"])
    directory.add_alias("b@example.test", ["alice@example.test", "a@example.test"])
    assert result(directory.resolve("a@example.test")) == RecipientResolution(local=("alice@example.test",))
    directory.add_alias("x@example.test", ["y@example.test"])
    directory.add_alias("y@example.test", ["x@example.test"])
    assert isinstance(failure(directory.resolve("x@example.test")).value, NoSuchUser)


def test_user_with_forwarding_alias_keeps_a_copy(directory: SQLiteDirectory) -> None:
    """An alias on a user address forwards a copy and the user still gets theirs."""
    directory.add_user("alice@example.test", "pw")
    directory.add_alias("alice@example.test", ["alice@remote.test"])
    assert result(directory.resolve("alice@example.test")) == RecipientResolution(local=("alice@example.test",), remote=("alice@remote.test",))


def test_catch_all(directory: SQLiteDirectory) -> None:
    """The catch-all takes unknown addresses of its domain only; users and aliases win."""
    directory.add_domain("other.test")
    directory.add_user("alice@example.test", "pw")
    directory.add_user("bob@example.test", "pw")
    directory.add_alias("*@example.test", ["alice@example.test"])
    directory.add_alias("sales@example.test", ["bob@example.test"])
    assert result(directory.resolve("anything@example.test")).local == ("alice@example.test",)
    assert result(directory.resolve("bob@example.test")).local == ("bob@example.test",)
    assert result(directory.resolve("sales@example.test")).local == ("bob@example.test",)
    assert isinstance(failure(directory.resolve("anything@other.test")).value, NoSuchUser)
    assert ("@example.test", ["alice@example.test"]) in directory.list_aliases()
    directory.remove_alias("@example.test")
    assert isinstance(failure(directory.resolve("anything@example.test")).value, NoSuchUser)


def test_alias_admin(directory: SQLiteDirectory) -> None:
    """Adding targets, removing some or all, and the errors for duplicates and unknowns."""
    directory.add_alias("info@example.test", ["a@remote.test"])
    assert directory.add_alias("info@example.test", ["a@remote.test", "b@remote.test"]) == ["b@remote.test"]
    with pytest.raises(AlreadyExists):
        directory.add_alias("info@example.test", ["b@remote.test"])
    with pytest.raises(DirectoryError, match="itself"):
        directory.add_alias("info@example.test", ["info@example.test"])
    with pytest.raises(NotLocal):
        directory.add_alias("info@remote.test", ["a@example.test"])
    with pytest.raises(InvalidName):
        directory.add_alias("info@example.test", ["not an address"])
    assert directory.list_aliases() == [("info@example.test", ["a@remote.test", "b@remote.test"])]
    with pytest.raises(NotFound):
        directory.remove_alias("info@example.test", ["a@remote.test", "missing@remote.test"])
    assert directory.list_aliases() == [("info@example.test", ["a@remote.test", "b@remote.test"])], "partial removal rolled back"
    directory.remove_alias("info@example.test", ["a@remote.test"])
    assert directory.list_aliases() == [("info@example.test", ["b@remote.test"])]
    with pytest.raises(NotFound):
        directory.remove_alias("info@example.test", ["a@remote.test"])
    directory.remove_alias("info@example.test")
    assert directory.list_aliases() == []
    with pytest.raises(NotFound):
        directory.remove_alias("info@example.test")


def test_sender_addresses(directory: SQLiteDirectory) -> None:
    """A user may send as themselves and as aliases that lead only to them."""
    directory.add_user("alice@example.test", "pw")
    directory.add_user("bob@example.test", "pw")
    directory.add_alias("alice.smith@example.test", ["alice@example.test"])
    directory.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
    directory.add_alias("@example.test", ["alice@example.test"])
    assert result(directory.sender_addresses("ALICE@example.test")) == {"alice@example.test", "alice.smith@example.test"}
    assert result(directory.sender_addresses("bob@example.test")) == {"bob@example.test"}
    assert result(directory.sender_addresses("nobody@example.test")) == frozenset()


@pytest.mark.parametrize("scheme", sorted(DOVECOT_HASHES))
def test_imported_dovecot_hash_logs_in_and_is_upgraded(directory: SQLiteDirectory, scheme: str) -> None:
    """A migrated user logs in with their old password; the hash becomes argon2id."""
    directory.add_user("old@example.test", password_hash=DOVECOT_HASHES[scheme])
    assert result(directory.authenticate("old@example.test", "wrong")) is None
    assert result(directory.authenticate("OLD@example.test", "correct horse")) == "old@example.test"
    raw = sqlite3.connect(directory.path).execute("SELECT password FROM users").fetchone()[0]
    assert raw.startswith("$argon2id$")
    assert result(directory.verify_password("old@example.test", "correct horse")) is True


def test_changes_from_another_process_are_seen(directory: SQLiteDirectory, tmp_path: Path) -> None:
    """A second process (like the CLI) adds a user; the open directory sees it at once."""
    assert result(directory.get_user("late@example.test")) is None
    code = (
        "import sys; from mailsuite.auth.directory import SQLiteDirectory;"
        f"SQLiteDirectory({str(directory.path)!r}, extra_domains=['example.test']).add_user('late@example.test', 'pw')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert result(directory.get_user("late@example.test")) == UserRecord("late@example.test")
    assert result(directory.resolve("late@example.test")).local == ("late@example.test",)


class _ThreadReactor:
    """Just enough reactor for deferToThreadPool: results are queued back to the test thread."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.ready = threading.Event()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self.calls.append((f, args, kw))
        self.ready.set()

    def seconds(self) -> float:
        """The clock the login throttle reads."""
        return time.time()


def test_verification_runs_off_the_calling_thread(tmp_path: Path) -> None:
    """Hashing happens on the pool: the call returns at once with an unfired Deferred."""
    reactor = _ThreadReactor()
    pool = ThreadPool(minthreads=1, maxthreads=1)
    directory = SQLiteDirectory(tmp_path / "u.sqlite3", extra_domains=["example.test"], reactor=reactor, pool=pool)
    directory.add_user("alice@example.test", "pw")
    seen: list[str] = []
    original = hashing.verify

    def spy(stored: str, password: str) -> bool:
        seen.append(threading.current_thread().name)
        return original(stored, password)

    pool.start()
    try:
        import mailsuite.auth.hashing as module

        module.verify = spy
        d = directory.verify_password("alice@example.test", "pw")
        assert not d.called
        assert reactor.ready.wait(10)
        f, args, kw = reactor.calls.pop()
        f(*args, **kw)
        assert result(d) is True
        assert seen and seen[0] != threading.current_thread().name
    finally:
        module.verify = original
        pool.stop()


def test_extra_senders(directory: SQLiteDirectory) -> None:
    """Extra sender addresses (any domain, or @domain) add to the user's own; errors for unknowns; they go with the user."""
    directory.add_user("alice@example.test", "pw")
    directory.add_alias("alice.smith@example.test", ["alice@example.test"])
    assert directory.add_senders("ALICE@example.test", ["office@example.test", "*@Partner.test", "me@remote.test"]) == [
        "office@example.test", "@partner.test", "me@remote.test"]
    assert result(directory.sender_addresses("alice@example.test")) == {
        "alice@example.test", "alice.smith@example.test", "office@example.test", "@partner.test", "me@remote.test"}
    assert directory.own_sender_addresses("alice@example.test") == [
        ("alice@example.test", "own"), ("alice.smith@example.test", "alias"),
        ("@partner.test", "extra"), ("me@remote.test", "extra"), ("office@example.test", "extra")]
    with pytest.raises(AlreadyExists):
        directory.add_senders("alice@example.test", ["OFFICE@example.test"])
    with pytest.raises(NotFound):
        directory.add_senders("nobody@example.test", ["office@example.test"])
    with pytest.raises(InvalidName):
        directory.add_senders("alice@example.test", ["not an address"])
    with pytest.raises(NotFound, match="x@example.test"):
        directory.remove_senders("alice@example.test", ["office@example.test", "x@example.test"])
    assert directory.list_senders() == [("alice@example.test", ["@partner.test", "me@remote.test", "office@example.test"])], "nothing removed"
    assert directory.remove_senders("alice@example.test", ["Office@example.test"]) == 1
    assert directory.list_senders("alice@example.test") == [("alice@example.test", ["@partner.test", "me@remote.test"])]
    directory.remove_user("alice@example.test")
    directory.add_user("alice@example.test", "pw")
    assert directory.list_senders() == []
    assert result(directory.sender_addresses("alice@example.test")) == {"alice@example.test", "alice.smith@example.test"}
