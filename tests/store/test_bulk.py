"""A big first SELECT (many files in new/, as a delivery program leaves them) takes the bulk path:
no per-message log records, one snapshot.  It must give the same UIDs, flags and \\Recent as the
record-per-message path, and a crash at any point must leave a usable state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailsuite.store import IncomingMessage
from mailsuite.store import state as state_module

from .conftest import make_store, result

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.test"
COUNT = 12


def _fill(mail: Path) -> Path:
    """A user whose INBOX holds COUNT files dropped into new/ by hand (with and without S=,
    CRLF and bare LF, one already flagged) and one in cur/; returns the INBOX directory."""
    store = make_store(mail)
    store.ensure_user(store.user_root(ALICE))
    inbox = Path(store.user_root(ALICE))
    for i in range(COUNT):
        body = b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i) if i % 3 else b"Subject: m%d\n\nbare LF %d\n" % (i, i)
        name = f"17000000{i:02d}.M{i}P1.host" + (f",S={len(body)}" if i % 3 else "")
        if i == 5:
            name += ":2,F"  # another program already flagged it (still in new/)
        (inbox / "tmp" / name).write_bytes(body)
        os.utime(inbox / "tmp" / name, (1700000000 + i, 1700000000 + i))
        os.rename(inbox / "tmp" / name, inbox / "new" / name)
    seen = b"Subject: read\r\n\r\nx\r\n"
    (inbox / "cur" / f"1699999999.M0P1.host,S={len(seen)}:2,S").write_bytes(seen)
    os.utime(inbox / "cur" / f"1699999999.M0P1.host,S={len(seen)}:2,S", (1699999999, 1699999999))
    return inbox


def _view(mail: Path) -> tuple[int, int, list[tuple[int, str, frozenset[str], int]], frozenset[int]]:
    """What a freshly started process sees read-only: (uidvalidity, uidnext, messages, unclaimed \\Recent)."""
    folder = result(make_store(mail).user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    return folder.uidvalidity, folder.uidnext, [(m.uid, m.key, m.flags, m.size) for m in folder.messages()], folder.recent


def _first_select(mail: Path) -> tuple[list[tuple[int, str, frozenset[str], int]], frozenset[int]]:
    folder = result(make_store(mail).user_mailbox(ALICE).open_folder("INBOX"))
    return [(m.uid, m.key, m.flags, m.size) for m in folder.messages()], folder.recent


def test_bulk_first_select_equals_the_per_record_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Same UIDs, keys, flags, sizes and \\Recent either way; everything lands in cur/; a fresh process
    reads the same state (same UIDVALIDITY) with nothing left \\Recent, and the next UID is fresh."""
    small, bulk = tmp_path / "small", tmp_path / "bulk"
    inbox = _fill(small)
    shutil.copytree(small, bulk)
    assert len(os.listdir(inbox / "new")) == COUNT

    small_seen = _first_select(small)
    monkeypatch.setattr(state_module, "BULK_RECORDS", 2)
    bulk_seen = _first_select(bulk)
    assert bulk_seen == small_seen
    messages, recent = bulk_seen
    assert [m[0] for m in messages] == list(range(1, COUNT + 2))
    assert recent == frozenset(range(1, COUNT + 2))  # RFC 3501 2.3.2: the first session gets them all
    assert dict((m[0], m[2]) for m in messages)[1] == {"\\Seen"}  # the cur/ file is oldest: UID 1
    assert dict((m[0], m[2]) for m in messages)[7] == {"\\Flagged"}
    bulk_inbox = bulk / "example.test" / "alice"
    assert os.listdir(bulk_inbox / "new") == [] and len(os.listdir(bulk_inbox / "cur")) == COUNT + 1
    assert all(size == len((bulk_inbox / "cur" / f"{key}{':2,F' if uid == 7 else ':2,S' if uid == 1 else ':2,'}").read_bytes())
               for uid, key, _, size in messages)  # bare-LF files were rewritten with CRLF; sizes match

    validity, uidnext, fresh, unclaimed = _view(bulk)
    assert uidnext == COUNT + 2
    assert fresh == messages and unclaimed == frozenset()
    again, again_recent = _first_select(bulk)
    assert again == messages and again_recent == frozenset()
    uid = result(make_store(bulk).user_mailbox(ALICE).append("INBOX", IncomingMessage.from_bytes(b"Subject: new\r\n\r\nx\r\n")))
    assert uid == COUNT + 2
    assert _view(bulk)[0] == validity


CHILD = textwrap.dedent(
    """
    import os, sys
    from twisted.internet import task
    from mailsuite.store import MaildirStore, InlineRunner, state

    mode = sys.argv[2]
    state.BULK_RECORDS = 2
    if mode.endswith("renames"):  # die half-way through the new/ -> cur/ renames
        real, done = os.rename, []
        def rename(src, dst, **kw):
            if "/new/" in str(src) and "/cur/" in str(dst):
                if len(done) == 5:
                    os._exit(9)
                done.append(src)
            return real(src, dst, **kw)
        os.rename = rename
    else:  # die writing the snapshot that records the bulk changes (not the empty state's first one)
        real_write = state.FolderState._write_snapshot
        def die(self):
            if self._compact_next:
                os._exit(9)
            return real_write(self)
        state.FolderState._write_snapshot = die
    store = MaildirStore(sys.argv[1], runner=InlineRunner(), clock=task.Clock())
    store.ensure_user(store.user_root("alice@example.test"))
    out = []
    store.user_mailbox("alice@example.test").open_folder("INBOX").addBoth(out.append)
    print("not reached", out, file=sys.stderr)
    sys.exit(1)
    """
)


@pytest.mark.parametrize("mode", ["renames", "snapshot", "fresh-renames", "fresh-snapshot"])
def test_a_crash_during_a_bulk_first_select_leaves_a_usable_state(tmp_path: Path, mode: str):
    """Killed in the middle of the claim's renames or before its snapshot is written (UIDs already
    known from an EXAMINE, or being assigned by the same SELECT, which moves files as it goes): every message is still there, UIDVALIDITY
    is unchanged, and the next read-write session gets them all as \\Recent."""
    mail = tmp_path / "mail"
    inbox = _fill(mail)
    validity = None
    if not mode.startswith("fresh"):
        validity = _view(mail)[0]  # UIDs assigned (read-only: nothing claimed, nothing moved)
        assert len(os.listdir(inbox / "new")) == COUNT
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(mail), mode], env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    if mode.endswith("renames"):
        assert 0 < len(os.listdir(inbox / "new")) < COUNT

    after_validity, _, messages, unclaimed = _view(mail)
    assert validity is None or after_validity == validity
    assert len(messages) == COUNT + 1 and unclaimed == frozenset(m[0] for m in messages)
    seen, recent = _first_select(mail)
    assert recent == frozenset(m[0] for m in seen) and len(seen) == COUNT + 1
    assert os.listdir(inbox / "new") == []
    assert _first_select(mail)[1] == frozenset()
    assert _view(mail)[0] == after_validity
    uid = result(make_store(mail).user_mailbox(ALICE).append("INBOX", IncomingMessage.from_bytes(b"Subject: new\r\n\r\nx\r\n")))
    assert uid > max(m[0] for m in seen)


@pytest.mark.parametrize("bulk", [False, True])
def test_new_files_get_uids_by_mtime_then_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk: bool):
    """Arrival order: older files first; files with the same mtime (coarse clocks) in name order."""
    if bulk:
        monkeypatch.setattr(state_module, "BULK_RECORDS", 2)
    store = make_store(tmp_path / "mail")
    store.ensure_user(store.user_root(ALICE))
    inbox = Path(store.user_root(ALICE))
    stamps = {"c": 1700000005, "a": 1700000005, "e": 1700000001, "b": 1700000005, "d": 1700000009}
    for name, stamp in stamps.items():
        body = b"Subject: %s\r\n\r\nx\r\n" % name.encode()
        path = inbox / "new" / f"{name}.host,S={len(body)}"
        path.write_bytes(body)
        os.utime(path, (stamp, stamp))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    assert [m.key.split(".")[0] for m in folder.messages()] == ["e", "a", "b", "c", "d"]
    assert [m.uid for m in folder.messages()] == [1, 2, 3, 4, 5]
