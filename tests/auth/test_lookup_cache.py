"""Remembered directory answers (mailsuite.auth.lookup_cache): reused only while the database is unchanged.

The promise users depend on: a user, alias or domain changed with the admin
CLI applies to the very next SMTP command, cache or not.
"""

from __future__ import annotations

import smtplib
import sqlite3
from typing import Any

from twisted.internet import defer

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.lookup_cache import DataVersion, LookupCache
from mailsuite.errors import NoSuchUser, TemporaryFailure


class Counter:
    """A stand-in for PRAGMA data_version that the test moves by hand."""

    def __init__(self) -> None:
        self.value = 1

    def __call__(self) -> int:
        return self.value


def result(d: defer.Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred should have fired"
    return box[0]


def test_answer_reused_until_the_version_moves() -> None:
    version = Counter()
    cache = LookupCache(version)
    calls: list[int] = []

    def query() -> defer.Deferred[int]:
        calls.append(1)
        return defer.succeed(len(calls))

    assert result(cache.lookup("k", query)) == 1
    assert result(cache.lookup("k", query)) == 1
    assert len(calls) == 1 and cache.hits == 1
    version.value += 1
    assert result(cache.lookup("k", query)) == 2
    assert len(calls) == 2


def test_a_commit_during_the_query_is_never_hidden() -> None:
    """The answer is tagged with the version read before the query ran, so a change meanwhile forces a new query."""
    version = Counter()
    cache = LookupCache(version)
    pending: defer.Deferred[str] = defer.Deferred()
    first = cache.lookup("k", lambda: pending)
    version.value += 1  # the CLI commits while the worker thread is querying
    pending.callback("old answer")
    assert result(first) == "old answer"
    assert result(cache.lookup("k", lambda: defer.succeed("new answer"))) == "new answer"


def test_only_answer_errors_are_remembered() -> None:
    version = Counter()
    cache = LookupCache(version, remember_errors=(NoSuchUser,))
    calls: list[str] = []

    def unknown() -> defer.Deferred[Any]:
        calls.append("unknown")
        return defer.fail(NoSuchUser())

    assert isinstance(result(cache.lookup("u", unknown)).value, NoSuchUser)
    assert isinstance(result(cache.lookup("u", unknown)).value, NoSuchUser)
    assert calls == ["unknown"]

    def broken() -> defer.Deferred[Any]:
        calls.append("broken")
        return defer.fail(TemporaryFailure("database locked"))

    for _ in range(2):
        failure = result(cache.lookup("b", broken))
        assert isinstance(failure.value, TemporaryFailure)
    assert calls.count("broken") == 2


def test_table_is_bounded() -> None:
    cache = LookupCache(Counter(), max_entries=3)
    for i in range(10):
        result(cache.lookup(i, lambda i=i: defer.succeed(i)))
    assert len(cache._answers) <= 3


def test_data_version_moves_when_another_connection_commits(tmp_path: Any) -> None:
    path = tmp_path / "users.sqlite3"
    admin = SQLiteDirectory(path, extra_domains=["example.test"])  # the CLI's kind: no pool, no cache
    version = DataVersion(str(path))
    try:
        assert version.uses_shared_memory, "the directory is in WAL mode: the version comes from the WAL index, no system call"
        before = version()
        assert version() == before
        admin.find_user("nobody@example.test")  # reads change nothing
        assert version() == before
        admin.add_user("new@example.test", "a long password here")
        after_add = version()
        assert after_add != before
        admin.set_quota("new@example.test", 1000, None)
        assert version() != after_add
    finally:
        version.close()
        admin.close()


def test_data_version_without_a_wal_index_asks_sqlite(tmp_path: Any) -> None:
    """A database in another journal mode has no -shm file: PRAGMA data_version still tells changes."""
    path = tmp_path / "plain.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    version = DataVersion(str(path))
    try:
        assert not version.uses_shared_memory
        before = version()
        writer.execute("INSERT INTO t VALUES (1)")
        assert version() != before
    finally:
        version.close()
        writer.close()


def test_cli_changes_apply_to_the_next_rcpt(mailsuite_server: Any) -> None:
    """RCPT answers come from the cache while nothing changes, yet every CLI change is seen at once."""
    server = mailsuite_server(users={"known@example.test": "a long password here"})
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.ehlo("client.test")

        def rcpt(address: str) -> int:
            client.rset()
            client.mail("sender@remote.test")
            return client.rcpt(address)[0]

        assert rcpt("later@example.test") == 550
        assert rcpt("later@example.test") == 550  # remembered answer
        server.add_user("later@example.test", "another long password")
        assert rcpt("later@example.test") == 250
        assert rcpt("known@example.test") == 250
        assert rcpt("known@example.test") == 250
        server.cli("user", "remove", "known@example.test")
        assert rcpt("known@example.test") == 550
        server.cli("alias", "add", "team@example.test", "later@example.test")
        assert rcpt("team@example.test") == 250
        server.cli("alias", "remove", "team@example.test")
        assert rcpt("team@example.test") == 550


def test_password_rehash_by_the_server_is_a_change_too(tmp_path: Any) -> None:
    """Our own worker connections' commits move data_version as well (a separate connection each)."""
    path = tmp_path / "users.sqlite3"
    admin = SQLiteDirectory(path, extra_domains=["example.test"])
    version = DataVersion(str(path))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        before = version()
        other.execute("UPDATE users SET quota_bytes = 1 WHERE 0")  # a no-op write transaction
        other.execute("INSERT INTO domains(name) VALUES ('other.test')")
        assert version() != before
    finally:
        other.close()
        version.close()
        admin.close()
