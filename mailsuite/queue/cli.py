"""``mailsuite queue list|show ID|flush [ID]|delete ID``: look at and steer the relay queue.

How it reaches a running server: the server holds an flock on
``<data_root>/queue/lock``.  ``list`` and ``show`` only read envelope files
(replaced atomically, so always whole).  ``flush`` and ``delete`` first try
to take that lock: if they get it, no server runs and they edit the spool
themselves; if not, they drop a request file in ``queue/control/``, which
the running server polls twice a second and removes once it has acted, and
they wait (up to ``--wait`` seconds) for that to happen.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mailsuite.queue.spool import PENDING, QueueEntry, Spool, valid_id


def register(subparsers: Any) -> None:
    """Add the ``queue`` command and its sub-commands to the top-level parser."""
    parser = subparsers.add_parser("queue", help="look at and steer the outbound relay queue",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="one line per queued message: id, age, sender, recipients, state, next attempt, last error")
    p.add_argument("--json", action="store_true", help="print a JSON array of the envelopes instead")
    p.set_defaults(func=_list)
    p = sub.add_parser("show", help="everything known about one queued message, and its header")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the envelope as JSON")
    p.set_defaults(func=_show)
    p = sub.add_parser("flush", help="attempt delivery now (one message, or all), also in a running server")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a running server to take the request")
    p.set_defaults(func=_flush)
    p = sub.add_parser("delete", help="remove a message from the queue without bouncing it")
    p.add_argument("id", metavar="ID")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a running server to take the request")
    p.set_defaults(func=_delete)


def _spool(args: argparse.Namespace) -> Spool:
    from mailsuite.cli import load_config

    return Spool(load_config(args).data_path / "queue")


def _fail(message: str, status: int = 1) -> Exception:
    from mailsuite.cli import CommandError

    return CommandError(message, status)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _state(entry: QueueEntry) -> str:
    return "deferred" if entry.attempts else "queued"


def _next(entry: QueueEntry, now: float) -> str:
    delta = entry.next_attempt - now
    return "now" if delta <= 0 else f"in {_age(delta)}"


def _list(args: argparse.Namespace) -> int:
    spool = _spool(args)
    entries = list(spool.entries())
    if args.json:
        print(json.dumps([json.loads(e.to_json()) for e in entries], ensure_ascii=False, indent=1))
        return 0
    now = time.time()
    if not entries:
        print("queue is empty")
        return 0
    print(f"{'ID':21} {'AGE':>5} {'STATE':8} {'NEXT':8} SENDER -> RECIPIENTS | LAST ERROR")
    for e in entries:
        pending = [r.address for r in e.recipients if r.status == PENDING]
        rcpts = ", ".join(pending) + (f" (+{len(e.recipients) - len(pending)} done)" if len(pending) < len(e.recipients) else "")
        line = f"{e.id:21} {_age(now - e.arrival):>5} {_state(e):8} {_next(e, now):8} <{e.sender}> -> {rcpts}"
        if e.last_error:
            line += f" | {e.last_error}"
        print(line)
    print(f"{len(entries)} message(s)")
    return 0


def _load(spool: Spool, queue_id: str) -> QueueEntry:
    if not valid_id(queue_id):
        raise _fail(f"{queue_id!r} is not a queue id (see `mailsuite queue list`)", 2)
    entry = spool.load(queue_id)
    if entry is None:
        raise _fail(f"no message {queue_id} in the queue")
    return entry


def _show(args: argparse.Namespace) -> int:
    spool = _spool(args)
    entry = _load(spool, args.id)
    if args.json:
        print(entry.to_json())
        return 0
    now = time.time()
    print(f"id:           {entry.id}")
    print(f"sender:       <{entry.sender}>")
    print(f"size:         {entry.size} bytes")
    print(f"arrived:      {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.arrival))} UTC ({_age(now - entry.arrival)} ago)")
    print(f"attempts:     {entry.attempts}")
    print(f"next attempt: {_next(entry, now)}")
    print(f"state:        {_state(entry)}")
    for r in entry.recipients:
        detail = f" ({r.diagnostic}{' from ' + r.remote_mta if r.remote_mta else ''})" if r.code is not None else ""
        print(f"recipient:    <{r.address}> {r.status}{detail}")
    try:
        header = spool.read_header(entry.id)
    except FileNotFoundError:
        header = b""
    print("\n" + header.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n"))
    return 0


def _request(spool: Spool, action: str, queue_id: str | None, wait: float) -> bool:
    """Ask a running server; True once it took the request (its control file is gone)."""
    path = spool.request(action, queue_id)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.05)
    return False


def _flush(args: argparse.Namespace) -> int:
    spool = _spool(args)
    if args.id:
        _load(spool, args.id)
    if spool.try_lock():
        try:
            ids = [args.id] if args.id else spool.ids()
            count = 0
            for queue_id in ids:
                entry = spool.load(queue_id)
                if entry is not None:
                    entry.next_attempt = time.time()
                    spool.save(entry)
                    count += 1
        finally:
            spool.unlock()
        print(f"no server is running: {count} message(s) marked due; they are attempted as soon as the server starts")
        return 0
    if not _request(spool, "flush", args.id, args.wait):
        raise _fail("the running server did not take the flush request in time (it stays queued in queue/control)")
    print(f"flush of {args.id or 'all messages'} handed to the running server")
    return 0


def _delete(args: argparse.Namespace) -> int:
    spool = _spool(args)
    _load(spool, args.id)
    if spool.try_lock():
        try:
            removed = spool.remove(args.id)
        finally:
            spool.unlock()
    else:
        if not _request(spool, "delete", args.id, args.wait):
            raise _fail("the running server did not take the delete request in time (it stays queued in queue/control)")
        deadline = time.monotonic() + args.wait
        while spool.load(args.id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        removed = spool.load(args.id) is None
    if not removed:
        raise _fail(f"message {args.id} could not be removed")
    print(f"deleted {args.id}")
    return 0
