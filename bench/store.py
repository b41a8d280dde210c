"""Benchmark of the Maildir store (issue #3): one command, prints figures.

    /work/venv/bin/python bench/store.py [--messages 2000] [--folder-size 100000] [--dir PATH]

1. Raw disk rate: N times (create in tmp/, write 10 KiB, fsync, rename into
   new/, fsync new/) in one thread -- the Maildir rules done by hand.
2. Store delivery: the same N 10 KiB messages through ``MaildirStore.deliver``
   on a real reactor with the store's thread pool, as concurrent SMTP sessions
   would (``--concurrency`` in flight), and one at a time; ratio to (1).
3. A folder of ``--folder-size`` messages (files written directly into cur/):
   first open (assigns every UID), warm open (same process, state cached),
   open in a fresh process with a hot page cache, cold open (fresh process
   after dropping the page cache, when the kernel lets us), and listing
   every UID with its flags.
4. Quota: the time of one delivery (store thread work, inline) into a
   mailbox that already holds ``--unread`` unread messages, with a quota set
   and without one; usage counting must not make it grow with the unread mail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as "python bench/store.py", Python puts bench/ first on the path, where other benchmark
# scripts (bench/queue.py...) would shadow standard modules: use the checkout root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, task  # noqa: E402

from bench.report import record  # noqa: E402
from mailsuite.interfaces import Delivery  # noqa: E402
from mailsuite.store import IncomingMessage, InlineRunner, MaildirStore  # noqa: E402
from mailsuite.store.durable import fsync_dir, unique_name  # noqa: E402

MESSAGE = b"Subject: bench\r\nFrom: a@example.test\r\nTo: b@example.test\r\n\r\n" + (b"y" * 78 + b"\r\n") * 128
MESSAGE = MESSAGE[: 10 * 1024 - 2] + b"\r\n"  # exactly 10 KiB


def raw_rate(root: Path, n: int) -> float:
    """Messages per second doing tmp-write-fsync-rename-fsync(dir) by hand, sequentially."""
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    tmp, new = str(root / "tmp"), str(root / "new")
    start = time.perf_counter()
    for i in range(n):
        name = f"raw{i}"
        path = os.path.join(tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, MESSAGE)
        os.fsync(fd)
        os.close(fd)
        os.rename(path, os.path.join(new, name))
        fsync_dir(new)
    return n / (time.perf_counter() - start)


def delivery_rates(root: Path, n: int, concurrency: int) -> tuple[float, float]:
    """(concurrent rate, one-at-a-time rate) of MaildirStore.deliver on a real reactor and thread pool."""
    from twisted.internet import reactor
    from twisted.python.threadpool import ThreadPool

    from mailsuite.threads import Runner
    from mailsuite.store.service import STORE_THREADS

    pool = ThreadPool(minthreads=STORE_THREADS, maxthreads=STORE_THREADS, name="bench-store")
    pool.start()
    store = MaildirStore(root, runner=Runner(reactor, pool), clock=reactor)
    out: dict[str, float] = {}

    async def one_by_one(count: int, address: str) -> float:
        start = time.perf_counter()
        for _ in range(count):
            message = IncomingMessage.from_bytes(MESSAGE)
            (res,) = await store.deliver(message, [Delivery(address)])
            assert res.error is None, res.error
        return count / (time.perf_counter() - start)

    async def concurrent(count: int, address: str) -> float:
        start = time.perf_counter()
        remaining = iter(range(count))

        async def session() -> None:
            for _ in remaining:
                message = IncomingMessage.from_bytes(MESSAGE)
                (res,) = await store.deliver(message, [Delivery(address)])
                assert res.error is None, res.error

        await defer.gatherResults([defer.Deferred.fromCoroutine(session()) for _ in range(concurrency)])
        return count / (time.perf_counter() - start)

    async def main() -> None:
        await one_by_one(20, "warmup@example.test")
        out["concurrent"] = await concurrent(n, "bench@example.test")
        out["sequential"] = await one_by_one(max(n // 4, 50), "seq@example.test")

    def run() -> None:
        d = defer.Deferred.fromCoroutine(main())
        d.addErrback(lambda f: (f.printTraceback(), out.setdefault("failed", 1)))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    pool.stop()
    if "failed" in out:
        raise SystemExit("delivery benchmark failed")
    return out["concurrent"], out["sequential"]


def build_folder(root: Path, address: str, count: int) -> None:
    """``count`` 10 KiB messages written straight into cur/ (no fsync: setup, not measured)."""
    local, _, domain = address.rpartition("@")
    store = MaildirStore(root, runner=InlineRunner(), clock=task.Clock())
    store.ensure_user(store.user_root(address))
    cur = Path(store.user_root(address)) / "cur"
    flags = ["", "S", "RS", "FS", "S", "Sa", "T", ""]
    for i in range(count):
        with open(cur / f"{unique_name(len(MESSAGE))}:2,{flags[i % len(flags)]}", "wb") as f:
            f.write(MESSAGE)


def open_folder(root: Path, address: str, store: MaildirStore | None = None) -> tuple[float, object]:
    store = store or MaildirStore(root, runner=InlineRunner(), clock=task.Clock())
    start = time.perf_counter()
    out: list[object] = []
    store.user_mailbox(address).open_folder("INBOX", read_only=True).addBoth(out.append)
    elapsed = time.perf_counter() - start
    if not hasattr(out[0], "messages"):
        raise SystemExit(f"open failed: {out[0]}")
    return elapsed, out[0]


def drop_caches() -> bool:
    """Ask the kernel to drop the page cache (needs privileges); True when it did."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def child_open(root: str, address: str) -> None:
    """Run in a fresh process: print the open time and the count as JSON."""
    elapsed, folder = open_folder(Path(root), address)
    print(json.dumps({"seconds": elapsed, "messages": len(folder.messages())}))  # type: ignore[attr-defined]


def fresh_process_open(root: Path, address: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child-open", str(root), address], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def quota_delivery_ms(root: Path, unread: int) -> tuple[float, float]:
    """(ms per delivery with a quota, without) into a mailbox holding ``unread`` messages in new/."""
    from mailsuite.store.quota import QuotaLimits

    figures = []
    for quota in (QuotaLimits(10**12, 10**8), QuotaLimits()):
        where = root / ("quota" if not quota.unlimited else "none")
        store = MaildirStore(where, runner=InlineRunner(), clock=task.Clock(), default_quota=quota)
        message = IncomingMessage.from_bytes(MESSAGE)
        for _ in range(unread):
            store.deliver(message, [Delivery("reader@example.test")])
        start = time.perf_counter()
        for _ in range(200):
            store.deliver(message, [Delivery("reader@example.test")])
        figures.append((time.perf_counter() - start) / 200 * 1000)
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="10 KiB messages to deliver (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="deliveries in flight (default 16)")
    parser.add_argument("--folder-size", type=int, default=100_000, help="messages in the big folder (default 100000)")
    parser.add_argument("--unread", type=int, default=6000, help="unread messages for the quota figure (default 6000)")
    parser.add_argument("--dir", default=None, help="where to work (default: a temporary directory under the system temp dir)")
    parser.add_argument("--child-open", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_open:
        child_open(*args.child_open)
        return
    base = Path(tempfile.mkdtemp(prefix="mailsuite-bench-", dir=args.dir))
    try:
        print(f"mailsuite store benchmark in {base}")
        raw = raw_rate(base / "raw", args.messages)
        concurrent, sequential = delivery_rates(base / "deliver", args.messages, args.concurrency)
        print(f"raw write+fsync+rename+fsync(dir), 1 thread : {raw:8.0f} msg/s  ({args.messages} x 10 KiB)")
        print(f"store.deliver, {args.concurrency} in flight             : {concurrent:8.0f} msg/s  ratio {concurrent / raw:5.2f}  (target >= 0.80)")
        print(f"store.deliver, one at a time             : {sequential:8.0f} msg/s  ratio {sequential / raw:5.2f}")
        record("store", "raw write+fsync+rename+fsync(dir), 1 thread", raw, "msg/s")
        record("store", f"deliver 10 KiB, {args.concurrency} in flight (peer: raw disk)", concurrent, "msg/s", peer="raw disk", peer_value=raw)
        record("store", "deliver 10 KiB, one at a time (peer: raw disk)", sequential, "msg/s", peer="raw disk", peer_value=raw)
        with_quota, without = quota_delivery_ms(base / "quota", args.unread)
        print(f"deliver with a quota, {args.unread} unread    : {with_quota:6.2f} ms  (without a quota {without:.2f} ms, ratio {with_quota / without:.2f})")
        record("store", f"deliver with a quota, {args.unread} unread (peer: no quota)", with_quota, "ms", higher_is_better=False, peer="no quota", peer_value=without)

        address = "big@example.test"
        root = base / "big"
        t0 = time.perf_counter()
        build_folder(root, address, args.folder_size)
        print(f"built a {args.folder_size}-message folder in {time.perf_counter() - t0:.1f} s (setup)")
        store = MaildirStore(root, runner=InlineRunner(), clock=task.Clock())
        first, _ = open_folder(root, address, store)
        print(f"first open (assigns {args.folder_size} UIDs, writes state): {first:6.3f} s")
        warm, folder = open_folder(root, address, store)
        print(f"warm open (same process)                 : {warm:6.3f} s  (target < 0.5 s)")
        record("store", f"warm open of {args.folder_size} messages", warm * 1000, "ms", higher_is_better=False)
        time.sleep(2.1)  # let new/ and cur/ settle: an idle folder needs no listing at all
        open_folder(root, address, store)
        idle, _ = open_folder(root, address, store)
        print(f"warm open, folder idle for 2 s           : {idle:6.3f} s")
        from mailsuite.interfaces import Delivery as _Delivery

        store.deliver(IncomingMessage.from_bytes(MESSAGE), [_Delivery(address)])
        start = time.perf_counter()
        changes: list[object] = []
        folder.refresh().addBoth(changes.append)  # type: ignore[attr-defined]
        print(f"refresh after one new delivery           : {time.perf_counter() - start:6.3f} s  ({len(changes[0].added)} added)")  # type: ignore[attr-defined]
        fresh = fresh_process_open(root, address)
        print(f"open in a fresh process, hot page cache  : {fresh['seconds']:6.3f} s")
        record("store", f"open of {args.folder_size} messages in a fresh process", fresh["seconds"] * 1000, "ms", higher_is_better=False)
        if drop_caches():
            cold = fresh_process_open(root, address)
            print(f"cold open (fresh process, caches dropped): {cold['seconds']:6.3f} s  (target < 3 s)")
            record("store", f"cold open of {args.folder_size} messages", cold["seconds"] * 1000, "ms", higher_is_better=False)
        else:
            print("cold open: cannot drop the page cache here (needs root); the fresh-process figure is the closest")
        start = time.perf_counter()
        listing = [(m.uid, m.flags) for m in folder.messages()]  # type: ignore[attr-defined]
        listed = time.perf_counter() - start
        print(f"list UIDs and flags of {len(listing)} messages  : {listed:6.3f} s")
        record("store", f"list UIDs and flags of {len(listing)} messages", listed * 1000, "ms", higher_is_better=False)
        start = time.perf_counter()
        status_out: list[object] = []
        store.user_mailbox(address).status("INBOX").addBoth(status_out.append)
        print(f"STATUS of the folder                     : {time.perf_counter() - start:6.3f} s  ({status_out[0]})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
