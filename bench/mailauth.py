"""Mail authentication benchmark: DKIM signing rate and inbound check latency over loopback DNS.

Run from the checkout:  /work/venv/bin/python bench/mailauth.py [--messages 300] [--concurrency 20]

What it measures:
1. ``sign`` (synchronous) of a 10 KB message: signatures/s with an RSA-2048
   key, an Ed25519 key, and both at once (the default dual signature).
2. ``sign_message`` of a 10 MB message (worker thread): seconds per message.
3. ``check_inbound`` of signed messages (SPF + two DKIM signatures + DMARC,
   all pass) against a real loopback DNS server (twisted.names): latency of
   the first (cold cache) check, then p50/p99 latency and messages/s with
   ``--concurrency`` checks in flight, warm cache.
4. Reactor stalls during (3): the worst lateness of a 10 ms LoopingCall
   (DNS waits and hashing happen in worker threads; this should stay small),
   next to the same probe over one idle second (the machine's own noise).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/queue.py
# would shadow the standard library's `queue` module (Twisted's threads need it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from bench.report import record  # noqa: E402
from mailsuite import config as config_module  # noqa: E402
from mailsuite.mailauth.keys import KeyStore, generate_key  # noqa: E402
from mailsuite.mailauth.service import MailAuth, key_dir  # noqa: E402
from mailsuite.mailauth.signing import sign_with  # noqa: E402
from tests.support.dnsserver import DNSServer  # noqa: E402


def message(size: int) -> bytes:
    head = (b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: bench\r\n"
            b"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <bench@a.test>\r\n\r\n")
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + line * max(1, size // len(line))


def rate(label: str, f, seconds: float = 2.0) -> None:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        f()
        n += 1
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n / elapsed:10.1f} /s")
    record("mailauth", label, n / elapsed, "/s")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


async def run_checks(reactor, args, auth: MailAuth, signed: bytes) -> None:
    t = time.perf_counter()
    verdict = await auth.check_inbound("127.0.0.1", "mx.a.test", "alice@a.test", signed)
    assert verdict.action == "accept" and b"dmarc=pass" in verdict.header, verdict.header
    print(f"{'check_inbound, cold cache (first message)':<44} {(time.perf_counter() - t) * 1000:10.1f} ms")

    worst = [0.0]
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last[0] - 0.010)
        last[0] = now

    probe = task.LoopingCall(tick)
    probe.clock = reactor
    probe.start(0.010)
    idle: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(1.0, idle.callback, None)
    await idle  # one quiet second first: the stall the machine itself causes (other processes, scheduling)
    print(f"{'  reactor stall with nothing to do (1 s)':<44} {worst[0] * 1000:10.1f} ms")
    worst[0] = 0.0
    latencies: list[float] = []
    semaphore = defer.DeferredSemaphore(args.concurrency)

    async def one() -> None:
        t0 = time.perf_counter()
        v = await auth.check_inbound("127.0.0.1", "mx.a.test", "alice@a.test", signed)
        assert v.action == "accept"
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await defer.gatherResults([semaphore.run(lambda: defer.Deferred.fromCoroutine(one())) for _ in range(args.messages)])
    elapsed = time.perf_counter() - start
    probe.stop()
    print(f"{'check_inbound, warm, %d in flight' % args.concurrency:<44} {args.messages / elapsed:10.1f} msg/s")
    print(f"{'  latency p50 / p99':<44} {percentile(latencies, 50) * 1000:7.1f} / {percentile(latencies, 99) * 1000:.1f} ms")
    print(f"{'  worst reactor stall (10 ms probe)':<44} {worst[0] * 1000:10.1f} ms")
    record("mailauth", f"check_inbound, {args.concurrency} in flight", args.messages / elapsed, "msg/s")
    record("mailauth", "check_inbound p99 latency", percentile(latencies, 99) * 1000, "ms", higher_is_better=False)
    record("mailauth", "worst reactor stall during checks", worst[0] * 1000, "ms", higher_is_better=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mailsuite-bench-mailauth-"))
    dns = DNSServer().start()
    try:
        config = config_module.parse(
            f'hostname = "mail.b.test"\ndata_root = "{work}"\n[queue]\nresolver = "{dns.address}"\n')
        rsa_key, _ = generate_key(key_dir(config), "a.test", "rsa1", "rsa")
        ed_key, _ = generate_key(key_dir(config), "a.test", "ed1", "ed25519")
        dns.set_records({
            "a.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
            "_dmarc.a.test": {"TXT": ["v=DMARC1; p=reject"]},
            rsa_key.dns_name: {"TXT": [rsa_key.txt_strings()]},
            ed_key.dns_name: {"TXT": [ed_key.txt_strings()]},
        })
        small = message(10_000)
        rate("sign 10 KB, rsa-sha256 (2048)", lambda: sign_with(small, [rsa_key]))
        rate("sign 10 KB, ed25519-sha256", lambda: sign_with(small, [ed_key]))
        rate("sign 10 KB, both keys", lambda: sign_with(small, [rsa_key, ed_key]))
        big = message(10_000_000)
        store = KeyStore(key_dir(config))
        t = time.perf_counter()
        sign_with(big, store.keys_for("a.test"))
        print(f"{'sign 10 MB, both keys':<44} {time.perf_counter() - t:10.2f} s")

        from twisted.internet import reactor

        from mailsuite.resolver import CachingResolver

        auth = MailAuth(config, reactor, CachingResolver(reactor, dns.address, config.mailauth.dns_timeout))
        auth.start()
        signed = auth.sign(small, "a.test") + small

        async def go() -> None:
            try:
                await run_checks(reactor, args, auth, signed)
            finally:
                await auth.stop()

        def done(result):
            reactor.stop()
            return result

        reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(go()).addBoth(done))
        reactor.run()
    finally:
        dns.stop()


if __name__ == "__main__":
    main()
