"""File modes: mail is readable by the server's user alone, whatever the umask it was started with.

Under a permissive umask (0002, as many login shells and some service
managers set), real deliveries over SMTP, an IMAP folder and APPEND, and a
relay message waiting in the queue leave every file under ``mail/`` and
``queue/`` at 0600 and every directory at 0700.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import stat
import time
from pathlib import Path
from typing import Any

USERS = {"alice@example.test": "alice-password-1", "bob@example.test": "bob-password-22"}


def _modes(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Path (relative to root's parent) -> octal mode, for the files and the directories under root (root included)."""
    files, dirs = {}, {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        name = str(path.relative_to(root.parent))
        if stat.S_ISDIR(st.st_mode):
            dirs[name] = oct(stat.S_IMODE(st.st_mode))
        elif stat.S_ISREG(st.st_mode):
            files[name] = oct(stat.S_IMODE(st.st_mode))
    return files, dirs


def test_mail_and_queue_are_private_under_a_permissive_umask(mailsuite_server: Any) -> None:
    """Maildir and queue files 0600, their directories (per-user roots, cur/new/tmp, folders, queue) 0700."""
    old = os.umask(0o002)
    try:
        server = mailsuite_server({"tls.allow_plaintext_auth": True,
                                   # relay through a closed port: the message waits in the queue for its retry
                                   "queue.smarthost.enabled": True, "queue.smarthost.host": "127.0.0.1",
                                   "queue.smarthost.port": 9, "queue.smarthost.tls": "none"}, users=USERS)
    finally:
        os.umask(old)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.sendmail("someone@remote.example", ["alice@example.test", "bob@example.test"], b"Subject: in\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
        client.login("alice@example.test", USERS["alice@example.test"])
        client.sendmail("alice@example.test", ["friend@remote.example"], b"From: alice@example.test\r\nSubject: out\r\n\r\nbye\r\n")
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    imap.login("bob@example.test", USERS["bob@example.test"])
    assert imap.create("Projects/2026")[0] == "OK"
    assert imap.append("Projects/2026", "", None, b"Subject: kept\r\n\r\nnote\r\n")[0] == "OK"
    assert imap.select("INBOX")[0] == "OK"  # the folder state files are written too
    imap.logout()
    deadline = time.monotonic() + 10
    while not json.loads(server.cli("queue", "list", "--json").stdout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(server.cli("queue", "list", "--json").stdout), "the relay message is queued"
    files, dirs = {}, {}
    for top in ("mail", "queue"):
        top_files, top_dirs = _modes(server.data_root / top)
        files.update(top_files)
        dirs.update(top_dirs)
    assert any(name.startswith("queue/messages/") for name in files) and any(name.startswith("queue/envelopes/") for name in files)
    assert any("/cur/" in name or "/new/" in name for name in files if name.startswith("mail/"))
    assert {name for name in dirs if name.endswith("/cur")} >= {"mail/example.test/alice/cur", "mail/example.test/bob/.Projects.2026/cur"}
    assert {name: mode for name, mode in files.items() if mode != "0o600"} == {}
    assert {name: mode for name, mode in dirs.items() if mode != "0o700"} == {}
