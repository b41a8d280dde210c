"""Random operation sequences: the Maildir store and the in-memory store must agree at every step.

The two implementations share no code beyond names.py, so agreement on UIDs,
flags, \\Recent, expunges and COPY/MOVE results after arbitrary interleavings
of sessions is strong evidence that both follow the contract.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet import task

from mailsuite.interfaces import Delivery
from mailsuite.store import IncomingMessage
from mailsuite.store.memory import MemoryStore

from .conftest import make_store, result

USER = "model@example.test"
FOLDERS = ["INBOX", "Archive", "A", "A/B"]
TREE = ["A", "A/B", "C", "Archive", "D/E"]
FLAGS = ["\\Seen", "\\Deleted", "\\Flagged", "\\Answered", "Work", "$Junk"]


def _view(infos):  # type: ignore[no-untyped-def]
    return [(m.uid, m.flags, m.size) for m in infos]


class StoresAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.stores = [make_store(self.tmp / "mail", task.Clock()), MemoryStore(task.Clock())]
        self.sessions: list[tuple[object, object]] = []
        self.counter = 0

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def both(self, call):  # type: ignore[no-untyped-def]
        outcomes = []
        for store in self.stores:
            try:
                outcomes.append(("ok", result(call(store))))
            except Exception as e:  # both must fail the same way
                outcomes.append(("error", type(e).__name__))
        return outcomes

    @rule(folder=st.sampled_from(FOLDERS), count=st.integers(1, 3))
    def deliver(self, folder: str, count: int) -> None:
        for _ in range(count):
            self.counter += 1
            data = f"Subject: {self.counter}\r\n\r\n{'x' * self.counter}\r\n".encode()
            a, b = self.both(lambda s: s.deliver(IncomingMessage.from_bytes(data), [Delivery(USER, folder)]))  # noqa: B023 - called at once
            assert [type(r.error).__name__ for r in a[1]] == [type(r.error).__name__ for r in b[1]]

    @rule(folder=st.sampled_from(FOLDERS), flags=st.sets(st.sampled_from(FLAGS), max_size=2))
    def append(self, folder: str, flags: set[str]) -> None:
        self.counter += 1
        data = f"Subject: appended {self.counter}\r\n\r\n".encode()
        a, b = self.both(lambda s: s.user_mailbox(USER).append(folder, IncomingMessage.from_bytes(data), flags))
        assert a == b

    @rule(folder=st.sampled_from([*FOLDERS, *TREE, "inbox", "Nope"]))
    def folder_exists(self, folder: str) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).folder_exists(folder))
        assert a == b

    @rule(folder=st.sampled_from(FOLDERS), read_only=st.booleans())
    def open_session(self, folder: str, read_only: bool) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).open_folder(folder, read_only=read_only))
        assert a[0] == b[0]
        if a[0] == "error":
            assert a == b
            return
        assert _view(a[1].messages()) == _view(b[1].messages())
        assert a[1].recent == b[1].recent
        assert (a[1].uidnext, a[1].keywords) == (b[1].uidnext, b[1].keywords)
        self.sessions.append((a[1], b[1]))

    def pick(self, index: int) -> tuple[object, object]:
        return self.sessions[index % len(self.sessions)]

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 10))
    def refresh(self, index: int) -> None:
        x, y = self.pick(index)
        (ka, cx), (kb, cy) = self.both(lambda s: (x if s is self.stores[0] else y).refresh())
        assert ka == kb
        if ka == "error":
            assert cx == cy
            return
        assert _view(cx.added) == _view(cy.added)
        assert _view(cx.changed) == _view(cy.changed)
        assert cx.expunged == cy.expunged
        assert x.recent == y.recent

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 10), picks=st.lists(st.integers(0, 20), max_size=4), flags=st.sets(st.sampled_from(FLAGS), max_size=3), mode=st.sampled_from(["set", "add", "remove"]))
    def store_flags(self, index: int, picks: list[int], flags: set[str], mode: str) -> None:
        x, y = self.pick(index)
        uids = [m.uid for m in x.messages()]
        chosen = [uids[p % len(uids)] for p in picks] if uids else []
        (ka, a), (kb, b) = self.both(lambda s: (x if s is self.stores[0] else y).store_flags(chosen, flags, mode))
        assert ka == kb
        if ka == "ok":
            assert _view(a) == _view(b)
            assert _view(x.messages()) == _view(y.messages())
        else:
            assert a == b

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 10))
    def expunge(self, index: int) -> None:
        x, y = self.pick(index)
        a, b = self.both(lambda s: (x if s is self.stores[0] else y).expunge())
        assert a == b

    @precondition(lambda self: self.sessions)
    @rule(index=st.integers(0, 10), picks=st.lists(st.integers(0, 20), max_size=3), dest=st.sampled_from(FOLDERS), move=st.booleans())
    def copy_or_move(self, index: int, picks: list[int], dest: str, move: bool) -> None:
        x, y = self.pick(index)
        uids = [m.uid for m in x.messages()]
        chosen = [uids[p % len(uids)] for p in picks] if uids else []
        op = "move" if move else "copy"
        a, b = self.both(lambda s: getattr(x if s is self.stores[0] else y, op)(chosen, dest))
        assert a == b
        assert _view(x.messages()) == _view(y.messages())

    @rule(folder=st.sampled_from(FOLDERS))
    def status(self, folder: str) -> None:
        (ka, a), (kb, b) = self.both(lambda s: s.user_mailbox(USER).status(folder))
        assert ka == kb
        if ka == "error":
            assert a == b
            return
        assert (a.messages, a.recent, a.unseen, a.uidnext, a.size) == (b.messages, b.recent, b.unseen, b.uidnext, b.size)

    @rule(name=st.sampled_from(TREE))
    def create_folder(self, name: str) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).create_folder(name))
        assert a == b

    @rule(name=st.sampled_from(TREE))
    def delete_folder(self, name: str) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).delete_folder(name))
        assert a == b

    @rule(old=st.sampled_from(TREE + ["INBOX"]), new=st.sampled_from(TREE))
    def rename_folder(self, old: str, new: str) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).rename_folder(old, new))
        assert a == b

    @rule(name=st.sampled_from(TREE), on=st.booleans())
    def subscribe(self, name: str, on: bool) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).set_subscribed(name, on))
        assert a == b

    @rule()
    def list_folders(self) -> None:
        a, b = self.both(lambda s: s.user_mailbox(USER).list_folders())
        assert a == b

    @invariant()
    def sessions_agree(self) -> None:
        for x, y in self.sessions:
            assert _view(x.messages()) == _view(y.messages())


StoresAgree.TestCase.settings = settings(max_examples=20, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
test_stores_agree = StoresAgree.TestCase

