"""mbsync (Debian's isync) syncs a 500-message account both ways; a second run changes nothing."""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.imap.conftest import sample

USER = "mbsync@example.test"

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) is not installed")


def config(server, local: Path) -> str:
    return f"""
IMAPAccount test
Host 127.0.0.1
Port {server.ports['imap']}
User {USER}
Pass secret
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Remove Both
Expunge Both
SyncState *
"""


def run_mbsync(cfg: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["mbsync", "-c", str(cfg), "-a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    return result


def local_state(local: Path) -> dict[str, list[str]]:
    """Folder -> sorted message file names (flags are in the names)."""
    state = {}
    for root, _dirs, files in os.walk(local):
        if os.path.basename(root) in ("cur", "new"):
            folder = os.path.relpath(os.path.dirname(root), local)
            state.setdefault(folder, []).extend(f"{os.path.basename(root)}/{f}" for f in files)
    return {k: sorted(v) for k, v in state.items()}


def server_state(server) -> dict[str, bytes]:
    c = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    c.login(USER, "secret")
    out = {}
    for line in c.list()[1]:
        name = line.rsplit(b' "/" ', 1)[1].strip(b'"').decode()
        if b"\\Noselect" in line:
            continue
        out[name] = c.status(f'"{name}"', "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")[1][0]
    c.logout()
    return out


def test_mbsync_two_way(imap_server, tmp_path):
    for n in range(500):
        imap_server.writer.deliver(USER, sample(n, "mbsync"))
    local = tmp_path / "mail"
    local.mkdir()
    cfg = tmp_path / "mbsyncrc"
    cfg.write_text(config(imap_server, local))

    run_mbsync(cfg)
    state = local_state(local)
    assert len(state["INBOX"]) == 500
    assert {"Sent", "Trash", "Drafts", "Junk", "Archive"} <= set(state)

    # changes on the server: new mail, flags, deletions
    for n in range(500, 505):
        imap_server.writer.deliver(USER, sample(n, "mbsync"))
    c = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    c.login(USER, "secret")
    c.select("INBOX")
    c.store("1:10", "+FLAGS", "(\\Seen)")
    c.store("11:15", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()
    # changes on the near side: a new folder with a message, a flag, a deletion
    newdir = local / "LocalNew"
    for sub in ("cur", "new", "tmp"):
        (newdir / sub).mkdir(parents=True)
    (newdir / "new" / "1700000000.1.host").write_bytes(sample(1, "local").replace(b"\r\n", b"\n"))
    inbox = sorted((local / "INBOX" / "new").iterdir()) + sorted((local / "INBOX" / "cur").iterdir())
    flagged = inbox[100]
    flagged.rename(local / "INBOX" / "cur" / (flagged.name.split(":2,")[0] + ":2,F"))
    inbox[200].unlink()

    run_mbsync(cfg)
    after = server_state(imap_server)
    assert b"MESSAGES 1 " in after["LocalNew"]
    assert b"MESSAGES 499 " in after["INBOX"]  # 500 + 5 - 5 expunged - 1 deleted near
    c = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    c.login(USER, "secret")
    c.select("INBOX", readonly=True)
    flags = c.fetch("1:*", "(FLAGS)")[1]
    assert sum(b"\\Flagged" in f for f in flags) == 1
    assert sum(b"\\Seen" in f for f in flags) >= 10
    c.logout()
    local_after = local_state(local)
    assert len(local_after["INBOX"]) == 499

    # a third run finds nothing to do on either side
    run_mbsync(cfg)
    assert server_state(imap_server) == after
    assert local_state(local) == local_after
