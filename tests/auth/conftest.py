"""Fixtures for the auth tests: a real SQLite directory in tmp_path, cheap argon2 parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import argon2
import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from mailsuite.auth import hashing
from mailsuite.auth.directory import SQLiteDirectory


def result(d: Any) -> Any:
    """The result of an already-fired Deferred (raises its exception on failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure(d: defer.Deferred[Any]) -> Failure:
    """The Failure of an already-failed Deferred."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and isinstance(out[0], Failure), f"expected a failure, got {out!r}"
    return out[0]


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with tiny cost so unit tests stay fast (the algorithm is the same)."""
    monkeypatch.setattr(hashing, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
    monkeypatch.setattr(hashing, "_dummy_hash", None)


@pytest.fixture
def directory(tmp_path: Path) -> SQLiteDirectory:
    """A directory with example.test local from the config and lookups run inline."""
    d = SQLiteDirectory(tmp_path / "users.sqlite3", extra_domains=["Example.TEST"])
    yield d
    d.close()
