"""Several processes on one Maildir: UIDs stay unique, stable and never lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mailsuite.store import IncomingMessage

from .conftest import make_store, result

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker_process.py")
ADDRESS = "shared@example.test"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_two_processes_delivering_and_expunging(tmp_path: Path):
    """Two processes deliver, drop external files, open, flag and expunge concurrently on one INBOX.

    Afterwards every message that was delivered and not expunged is there
    exactly once, no UID was ever seen for two different messages (in either
    process), and UIDNEXT is above every UID ever handed out.
    """
    root = tmp_path / "mail"
    store = make_store(root)
    result(store.user_mailbox(ADDRESS).status("INBOX"))  # create the mailbox once
    procs = []
    for tag in ("p1", "p2"):
        out = tmp_path / f"{tag}.json"
        procs.append((out, subprocess.Popen([sys.executable, str(WORKER), str(root), ADDRESS, tag, "60", str(out)], env=_env())))
    (root / "go").touch()
    for _, proc in procs:
        assert proc.wait(timeout=120) == 0
    reports = [json.loads(out.read_text()) for out, _ in procs]

    check = make_store(root)  # a fresh process's view
    folder = result(check.user_mailbox(ADDRESS).open_folder("INBOX"))
    final = folder.messages()
    uids = [m.uid for m in final]
    assert uids == sorted(set(uids))
    subjects = []
    heads = result(folder.read_headers([info.uid for info in final]))
    for info in final:
        subjects.append(heads[info.uid].splitlines()[0].decode().split(": ", 1)[1].strip())
    delivered = [s for r in reports for s in r["delivered"]]
    expunged = [s for r in reports for s in r["expunged"]]
    assert len(expunged) > 10
    assert sorted(subjects) == sorted(set(delivered) - set(expunged))  # nothing lost, nothing duplicated

    by_uid: dict[int, str] = {}
    for report in reports + [{"seen": {m.key: m.uid for m in final}}]:
        for key, uid in report["seen"].items():
            assert by_uid.setdefault(uid, key) == key, f"UID {uid} given to two messages"
    assert folder.uidnext > max(by_uid)
    for info in final:
        if info.key in by_uid.values():
            assert by_uid[info.uid] == info.key


def test_second_process_sees_the_same_state(tmp_path: Path):
    """UIDVALIDITY, UIDs, flags and keywords written by one process are what another reads."""
    root = tmp_path / "mail"
    store = make_store(root)
    mailbox = store.user_mailbox(ADDRESS)
    for i in range(3):
        result(mailbox.append("INBOX", IncomingMessage.from_bytes(f"Subject: {i}\r\n\r\n".encode()), ["\\Seen", f"kw{i}"]))
    status = result(mailbox.status("INBOX"))
    code = (
        "import sys, json; from twisted.internet import task;"
        "from mailsuite.store import MaildirStore, InlineRunner;"
        f"s = MaildirStore({str(root)!r}, runner=InlineRunner(), clock=task.Clock());"
        "out = [];"
        f"s.user_mailbox({ADDRESS!r}).open_folder('INBOX', read_only=True).addCallback(out.append);"
        "f = out[0];"
        "print(json.dumps([f.uidvalidity, f.uidnext, [[m.uid, sorted(m.flags), m.modseq] for m in f.messages()]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True).stdout
    uidvalidity, uidnext, messages = json.loads(out)
    assert (uidvalidity, uidnext) == (status.uidvalidity, status.uidnext)
    folder = result(mailbox.open_folder("INBOX", read_only=True))
    assert messages == [[m.uid, sorted(m.flags), m.modseq] for m in folder.messages()]
    assert [m[1] for m in messages] == [["\\Seen", f"kw{i}"] for i in range(3)]
