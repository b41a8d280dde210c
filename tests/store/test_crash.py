"""Crash safety of the state files: a torn or interrupted write leaves the previous state usable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mailsuite.store import IncomingMessage
from mailsuite.store.state_records import LOG_FILE, STATE_FILE

from .conftest import deliver_bytes, make_store, msg, result

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.test"


def _inbox(tmp_path: Path) -> Path:
    return tmp_path / "mail" / "example.test" / "alice"


def _view(root: Path) -> tuple[int, list[tuple[int, str, frozenset[str]]]]:
    """What a freshly started process sees: (uidvalidity, [(uid, key, flags)])."""
    folder = result(make_store(root).user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    return folder.uidvalidity, [(m.uid, m.key, m.flags) for m in folder.messages()]


def _setup(tmp_path: Path, n: int = 4) -> tuple[int, list[tuple[int, str, frozenset[str]]]]:
    store = make_store(tmp_path / "mail")
    for i in range(n):
        deliver_bytes(store, ALICE, msg(i))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    result(folder.store_flags([1], ["\\Seen"], "add"))
    return _view(tmp_path / "mail")


def test_torn_log_tail_is_ignored_and_then_truncated(tmp_path: Path):
    """A partial last record (no newline) or garbage from a crash does not change the state."""
    _, before = _setup(tmp_path)
    log = _inbox(tmp_path) / LOG_FILE
    with open(log, "ab") as f:
        f.write(b"deadbeef - 1")  # torn: no newline
    assert _view(tmp_path / "mail")[1] == before
    with open(log, "ab") as f:
        f.write(b"\n00000000 - 2\n\x00\x00\x00\x00")  # complete line, wrong CRC, then zeros
    assert _view(tmp_path / "mail")[1] == before
    # the next writer truncates the garbage and appends; every process agrees afterwards
    store = make_store(tmp_path / "mail")
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    result(folder.store_flags([2], ["\\Flagged"], "add"))
    _, after = _view(tmp_path / "mail")
    assert [(u, k) for u, k, _ in after] == [(u, k) for u, k, _ in before]
    assert dict((u, f) for u, _, f in after)[2] == {"\\Flagged"}
    assert b"deadbeef" not in log.read_bytes()


def test_truncated_snapshot_is_rebuilt_with_a_new_uidvalidity(tmp_path: Path):
    """A snapshot that lost its end is never trusted: the folder restarts with a new UIDVALIDITY, no mail lost."""
    uidvalidity, before = _setup(tmp_path)
    state = _inbox(tmp_path) / STATE_FILE
    store = make_store(tmp_path / "mail")
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    # force a compaction so the snapshot holds the messages, then cut it in half
    from mailsuite.store import state_log as state_module

    old = state_module.LOG_COMPACT_BYTES
    state_module.LOG_COMPACT_BYTES = 0
    try:
        result(folder.store_flags([2], ["\\Seen"], "add"))
        result(folder.store_flags([3], ["\\Seen"], "add"))
    finally:
        state_module.LOG_COMPACT_BYTES = old
    data = state.read_bytes()
    assert data.count(b"\n") > 4
    state.write_bytes(data[: len(data) // 2])
    new_validity, after = _view(tmp_path / "mail")
    assert new_validity > uidvalidity
    assert sorted(k for _, k, _ in after) == sorted(k for _, k, _ in before)
    assert any(p.name.startswith(STATE_FILE + ".broken-") for p in _inbox(tmp_path).iterdir())


CHILD = textwrap.dedent(
    """
    import os, sys
    from twisted.internet import task
    from mailsuite.store import MaildirStore, InlineRunner, state_log as state, durable

    def half_then_die(fd, data):
        os.write(fd, bytes(data[: len(data) // 2]))
        os._exit(9)

    def half_snapshot_then_die(path, data, sync_dir=True):
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".crash.tmp")
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
        os._exit(9)

    mode = sys.argv[2]
    store = MaildirStore(sys.argv[1], runner=InlineRunner(), clock=task.Clock())
    out = []
    store.user_mailbox("alice@example.test").open_folder("INBOX").addBoth(out.append)
    folder = out[0]
    # die in the flag change's write (the open may have written too: a settled listing's L record)
    if mode == "log":
        state.write_all = half_then_die
    else:
        state.LOG_COMPACT_BYTES = 0
        state.write_atomic = half_snapshot_then_die
    folder.store_flags([2, 3], ["\\\\Flagged", "Crash"], "add").addBoth(out.append)
    print("not reached", out, file=sys.stderr)
    sys.exit(1)
    """
)


def _crash(tmp_path: Path, mode: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "mail"), mode], env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr


def test_process_killed_while_appending_to_the_log(tmp_path: Path):
    """A process dying in the middle of a log append leaves UIDs intact; the next sync notices the renamed files."""
    uidvalidity, before = _setup(tmp_path)
    _crash(tmp_path, "log")
    validity, after = _view(tmp_path / "mail")
    assert validity == uidvalidity
    assert [(u, k) for u, k, _ in after] == [(u, k) for u, k, _ in before]
    flags = {u: f for u, _, f in after}
    assert "\\Flagged" in flags[2]  # the rename happened before the crash; the flag is on disk
    store = make_store(tmp_path / "mail")
    assert result(store.user_mailbox(ALICE).append("INBOX", IncomingMessage.from_bytes(msg(9)))) == 5


def test_process_killed_while_writing_a_snapshot(tmp_path: Path):
    """A compaction cut short leaves the old snapshot and log in force."""
    uidvalidity, before = _setup(tmp_path)
    snapshot = (_inbox(tmp_path) / STATE_FILE).read_bytes()
    _crash(tmp_path, "snapshot")
    assert (_inbox(tmp_path) / STATE_FILE).read_bytes() == snapshot
    validity, after = _view(tmp_path / "mail")
    assert validity == uidvalidity
    assert [(u, k) for u, k, _ in after] == [(u, k) for u, k, _ in before]
    deliver_bytes(make_store(tmp_path / "mail"), ALICE, msg(10))
    assert [u for u, _, _ in _view(tmp_path / "mail")[1]] == [1, 2, 3, 4, 5]
