"""A second (third...) process working on the same Maildir, for the cross-process tests.

Usage: python worker_process.py <mail root> <address> <tag> <count> <out.json>

Delivers ``count`` messages through its own MaildirStore, and every few
deliveries opens INBOX read-write, marks some of its own messages \\Deleted
and expunges them, drops one message into new/ as an outside program would,
and records every (uid, key) pair it ever saw so the test can check that no
UID was given to two messages, none was lost and none reused.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from twisted.internet import defer, task

from mailsuite.interfaces import Delivery
from mailsuite.store import IncomingMessage, InlineRunner, MaildirStore


def _result(d: defer.Deferred) -> object:
    out: list[object] = []
    d.addBoth(out.append)
    value = out[0]
    if hasattr(value, "raiseException"):
        value.raiseException()  # type: ignore[union-attr]
    return value


def main() -> None:
    root, address, tag, count, out_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    store = MaildirStore(root, runner=InlineRunner(), clock=task.Clock())
    mailbox = store.user_mailbox(address)
    seen: dict[str, int] = {}
    delivered: list[str] = []
    expunged: list[str] = []
    go = Path(root) / "go"
    while not go.exists():  # start together with the other workers
        pass
    for i in range(count):
        subject = f"{tag}-{i}"
        message = IncomingMessage.from_bytes(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        (res,) = _result(store.deliver(message, [Delivery(address)]))
        assert res.error is None, res.error
        delivered.append(subject)
        if i % 7 == 3:
            local, _, domain = address.rpartition("@")
            new = os.path.join(root, domain.lower(), local, "new")
            name = f"1700000000.X{os.getpid()}_{i}.{tag}"
            with open(os.path.join(new, "." + name), "wb") as f:
                f.write(f"Subject: {tag}-ext-{i}\n\nexternal\n".encode())
            os.rename(os.path.join(new, "." + name), os.path.join(new, name))
            delivered.append(f"{tag}-ext-{i}")
        if i % 5 == 4:
            folder = _result(mailbox.open_folder("INBOX"))
            for info in folder.messages():
                if info.key in seen and seen[info.key] != info.uid:
                    raise SystemExit(f"key {info.key} changed uid {seen[info.key]} -> {info.uid}")
                seen[info.key] = info.uid
            mine = []
            heads = _result(folder.read_headers([info.uid for info in folder.messages()]))
            for info in folder.messages():
                if info.uid not in heads:
                    continue  # expunged by the other process since our snapshot: expected
                head = heads[info.uid].split(b"\n", 1)[0].decode() + "\n"
                if head.startswith(f"Subject: {tag}-") and len(mine) < 2:
                    mine.append((info.uid, head.split(": ", 1)[1].strip()))
            if mine:
                _result(folder.store_flags([u for u, _ in mine], ["\\Deleted"], "add"))
                removed = _result(folder.expunge([u for u, _ in mine]))
                expunged.extend(s for u, s in mine if u in removed)
            folder.close()
    Path(out_path).write_text(json.dumps({"seen": seen, "delivered": delivered, "expunged": expunged}))


if __name__ == "__main__":
    main()
