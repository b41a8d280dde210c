"""The spool's files: atomic commit by envelope, recovery after crashes at any point."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailsuite.queue.spool import QueueEntry, RecipientState, Spool, new_id

ROOT = Path(__file__).resolve().parents[2]


def _entry(rcpts=("bob@remote.test",)) -> QueueEntry:
    now = time.time()
    return QueueEntry(id=new_id(now), sender="a@example.test", recipients=[RecipientState(r) for r in rcpts], arrival=now, next_attempt=now)


def test_add_load_save_remove(tmp_path):
    """An entry round-trips through its JSON file; header prefix precedes the body; removal takes both files."""
    spool = Spool(tmp_path / "queue")
    e = spool.add(_entry(), io.BytesIO(b"Subject: s\r\n\r\nbody\r\n"), b"Received: by us\r\n")
    assert spool.message_path(e.id).read_bytes() == b"Received: by us\r\nSubject: s\r\n\r\nbody\r\n"
    assert e.size == len(spool.message_path(e.id).read_bytes())
    loaded = spool.load(e.id)
    assert loaded == e
    loaded.attempts = 3
    loaded.recipients[0].status = "delivered"
    spool.save(loaded)
    assert spool.load(e.id).recipients[0].status == "delivered"
    assert spool.read_header(e.id) == b"Received: by us\r\nSubject: s\r\n\r\n"
    assert spool.remove(e.id) and spool.ids() == [] and not spool.message_path(e.id).exists()


def test_recover_removes_uncommitted_and_sets_damaged_aside(tmp_path):
    """A message without envelope (crash before commit) and tmp debris vanish; a damaged envelope is kept aside."""
    spool = Spool(tmp_path / "queue")
    good = spool.add(_entry(), io.BytesIO(b"x\r\n"))
    spool.message_path("0000orphan").write_bytes(b"half")
    (spool.tmp / "something.msg").write_bytes(b"partial")
    bad = spool.add(_entry(), io.BytesIO(b"y\r\n"))
    spool.envelope_path(bad.id).write_text("{not json")
    entries, damaged = spool.recover()
    assert [e.id for e in entries] == [good.id]
    assert damaged == [bad.id]
    assert not spool.message_path("0000orphan").exists() and os.listdir(spool.tmp) == []
    assert (spool.envelopes / f"{bad.id}.json.damaged").exists()


WRITER = r"""
import io, sys, time
from mailsuite.queue.spool import Spool, QueueEntry, RecipientState, new_id
spool = Spool(sys.argv[1])
i = 0
while True:
    now = time.time()
    e = QueueEntry(id=new_id(now), sender="a@x.test", recipients=[RecipientState("b@y.test")], arrival=now, next_attempt=now)
    spool.add(e, io.BytesIO(b"Subject: %d\r\n\r\n" % i + b"x" * 20000))
    print(e.id, flush=True)
    i += 1
"""


def test_killed_writer_never_leaves_a_half_entry(tmp_path):
    """SIGKILL a process that enqueues in a loop: every id it reported is intact after recovery, nothing half-written survives."""
    root = tmp_path / "queue"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True, env=env)
        # kill it mid-stream: after its first entry (start-up time varies with the machine's load), then a little more
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        first = proc.stdout.readline() if ready else ""
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        out = first + out
        reported = [line for line in out.split() if line]
        assert reported, "the writer made no progress"
        entries, damaged = Spool(root).recover()
        ids = {e.id for e in entries}
        assert damaged == []
        assert set(reported) <= ids
        for e in entries:
            data = Spool(root).message_path(e.id).read_bytes()
            assert len(data) == e.size and data.endswith(b"x" * 20000)
        assert sorted(os.listdir(root / "messages")) == sorted(ids)
