"""Relay queue benchmark: spool enqueue rate (fsync) and relay rate to a local sink over 10 domains.

Run from the checkout:  /work/venv/bin/python bench/queue.py [--messages 1000] [--enqueue 500]

What it measures:
1. ``spool.add`` one after another (message + envelope, each fsynced, plus
   two directory fsyncs): messages/s a single SMTP session could hand over.
2. ``RelayQueue.enqueue`` with 32 in flight through the queue's thread pool
   (what several SMTP sessions together get).
3. Relay: N messages, one recipient each, round-robin over 10 destination
   domains whose MX records (real loopback DNS server, twisted.names) point
   at a local sink SMTP server running in its own process; from the moment
   the queue service starts until the spool is empty.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the standard library's `queue` module (Twisted's threads need it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from bench.report import record  # noqa: E402
from mailsuite import config as config_module  # noqa: E402
from mailsuite.interfaces import Envelope  # noqa: E402
from mailsuite.resolver import CachingResolver  # noqa: E402
from mailsuite.queue.runner import RelayQueue  # noqa: E402
from mailsuite.queue.service import QUEUE_THREADS, tls_options_factory  # noqa: E402
from mailsuite.queue.spool import QueueEntry, RecipientState, Spool, new_id  # noqa: E402
from mailsuite.service import ServerContext  # noqa: E402
from mailsuite.store.incoming import IncomingMessage  # noqa: E402
from mailsuite.threads import LeanThreadPool  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402

DOMAINS = [f"d{i}.bench.test" for i in range(10)]
BODY = b"From: <a@example.test>\r\nTo: <b@d0.bench.test>\r\nSubject: bench\r\n\r\n" + b"Lorem ipsum dolor sit amet, consectetur adipiscing.\r\n" * 40


def bench_spool_add(root: Path, count: int) -> float:
    spool = Spool(root)
    start = time.perf_counter()
    for _ in range(count):
        now = time.time()
        entry = QueueEntry(id=new_id(now), sender="a@example.test", recipients=[RecipientState("b@d0.bench.test")], arrival=now, next_attempt=now)
        spool.add(entry, io.BytesIO(BODY), b"Received: by bench\r\n")
    return count / (time.perf_counter() - start)


def make_queue(reactor, data_root: Path, dns: DNSServer, sink_port: int) -> RelayQueue:
    text = f'hostname = "bench.example.test"\ndomains = ["example.test"]\ndata_root = "{data_root}"\n[queue]\nresolver = "{dns.address}"\noutbound_port = {sink_port}\n' \
           f"retry_schedule = [1.0]\ndelay_warning = 0.0\nmax_connections = 50\nmax_connections_per_domain = 5\n"
    config = config_module.parse(text)
    context = ServerContext(config=config, reactor=reactor)
    pool = LeanThreadPool(QUEUE_THREADS, name="bench-queue")
    resolver = CachingResolver(reactor, dns.address)
    queue = RelayQueue(context, Spool(config.data_path / "queue"), resolver, pool, tls_options_factory(context))
    context.queue = queue
    return queue


async def bench_enqueue(reactor, queue: RelayQueue, count: int, parallel: int = 32) -> float:
    queue.pool.start()
    sem = defer.DeferredSemaphore(parallel)
    start = time.perf_counter()

    def one(i: int) -> defer.Deferred:
        return queue.enqueue(Envelope("a@example.test", (f"user{i}@{DOMAINS[i % 10]}",)), IncomingMessage.from_bytes(BODY))

    await defer.gatherResults([sem.run(one, i) for i in range(count)])
    rate = count / (time.perf_counter() - start)
    queue.pool.stop()
    return rate


async def bench_relay(reactor, queue: RelayQueue, count: int) -> tuple[float, int]:
    queue.pool.start()
    for i in range(count):
        await queue.enqueue(Envelope("a@example.test", (f"user{i}@{DOMAINS[i % 10]}",)), IncomingMessage.from_bytes(BODY))
    queue.pool.stop()
    queue.pool = LeanThreadPool(QUEUE_THREADS, name="bench-queue")
    start = time.perf_counter()
    queue.startService()
    while queue._entries or queue._active:
        await task.deferLater(reactor, 0.01, lambda: None)
    elapsed = time.perf_counter() - start
    queue.stopService()
    return count / elapsed, count


def main() -> None:
    if os.environ.get("BENCH_LOG"):
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages relayed in the relay run")
    parser.add_argument("--enqueue", type=int, default=500, help="messages in each enqueue run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailsuite-bench-queue-", dir=os.environ.get("BENCH_TMP")))
    sink = subprocess.Popen([sys.executable, "-m", "tests.support.smtpsink"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert sink.stdout is not None
    sink_port = int(sink.stdout.readline().split()[1])
    records = {d: {"MX": [[10, f"mx.{d}"]]} for d in DOMAINS}
    records.update({f"mx.{d}": {"A": ["127.0.0.1"]} for d in DOMAINS})
    dns = DNSServer(records).start()
    results: dict[str, float] = {}
    try:
        results["spool.add sequential (msg/s)"] = bench_spool_add(work / "seq" / "queue", args.enqueue)

        async def run(reactor) -> None:
            q1 = make_queue(reactor, work / "enq", dns, sink_port)
            results["enqueue, 32 in flight (msg/s)"] = await bench_enqueue(reactor, q1, args.enqueue)
            q2 = make_queue(reactor, work / "relay", dns, sink_port)
            rate, _ = await bench_relay(reactor, q2, args.messages)
            results[f"relay {args.messages} msgs to sink, 10 domains (msg/s)"] = rate

        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)), [])
    except SystemExit as e:
        if e.code:
            raise
    finally:
        dns.stop()
        sink.terminate()
        out, _ = sink.communicate(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    received = [line for line in out.splitlines() if line.startswith("COUNT")]
    print(f"message size: {len(BODY)} bytes; cores: {os.cpu_count()}; data under {work.parent}")
    for name, value in results.items():
        print(f"{name:55} {value:10.1f}")
        record("queue", name.replace(" (msg/s)", ""), value, "msg/s")
    if received:
        print(f"sink received: {received[0].split()[1]} messages (expected {args.messages})")


if __name__ == "__main__":
    main()
