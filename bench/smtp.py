"""SMTP benchmark: messages accepted and stored per second, latency, reactor stalls.

Run:  /work/venv/bin/python bench/smtp.py [--seconds 10] [--clients 1,10,50] [--size 10240] [--dnsbl] [--rspamd]

Starts a real mailsuite server (real SQLite directory with 10 users, real
Maildir store, fsync on as always) on loopback in a temporary data root, and
for each concurrency level runs that many clients over port 25 for the given
time.  Each client pipelines MAIL/RCPT/DATA, sends a 10 KiB message and
waits for the 250 (sent only after the copy is fsynced), round-robin over the
users.  Inbound SPF/DKIM/DMARC checks (mailsuite.mailauth) are off unless
``--mailauth`` is given: they would measure DNS lookups, not SMTP.  Printed per level: messages/s, p50/p99 time from the end of DATA
(".") to the 250, the longest and p99 NOOP round trip a separate probe
process saw meanwhile (what another client feels), and the reactor's own lag:
how late a 10 ms LoopingCall inside the server ran (a stall of the reactor
thread shows up there directly, without the client side's scheduling).  ``cpu ms/msg`` is the
server process's user+system CPU time per accepted message: a figure that the
machine's other load disturbs far less than the rate.

``--postfix`` runs the same load against a private Postfix instance
(bench/peers/postfix.py), alternating with mailsuite level by level (and
round by round with ``--rounds N``, swapping who goes first each round) so
that both see the same machine, and
prints mailsuite's ratio to Postfix's delivered rate, then the median ratio
per level.  ``--compare-port PORT`` runs the same load (no probe, no lag figure)
against another SMTP server already listening on 127.0.0.1:PORT that accepts
mail for user0..user9@example.test, e.g. a private Postfix instance
(``postfix -c DIR start`` with ``inet_interfaces = 127.0.0.1``, an smtpd line
for the port in master.cf, ``virtual_mailbox_domains = example.test``,
``virtual_mailbox_maps = static:box/``).  Note the different meaning of 250:
Postfix answers once the message is fsynced in its queue; mailsuite once it is
fsynced in the recipient's Maildir.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Running as a script puts bench/ first on sys.path, where bench/queue.py would
# shadow the standard library's queue module (used by asyncio and multiprocessing).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import record  # noqa: E402
from mailsuite.testing.process import render_toml, wait_for_ports  # noqa: E402

USERS = [f"user{i}@example.test" for i in range(10)]


def message(size: int, n: int) -> bytes:
    head = f"From: bench@remote.test\r\nTo: someone@example.test\r\nSubject: bench {n}\r\nMessage-ID: <{n}.{time.time_ns()}@remote.test>\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2] + b"\r\n"
    return head + body + b".\r\n"


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != b"-":
            return line


async def client(port: int, deadline: float, size: int, index: int, latencies: list[float], counter: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await read_reply(reader)
    writer.write(b"EHLO bench.test\r\n")
    await read_reply(reader)
    n = 0
    while time.monotonic() < deadline:
        rcpt = USERS[(index + n) % len(USERS)]
        writer.write(f"MAIL FROM:<bench@remote.test> SIZE={size}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for expected in (b"250", b"250", b"354"):
            reply = await read_reply(reader)
            if not reply.startswith(expected):
                raise RuntimeError(f"unexpected reply {reply!r}")
        writer.write(message(size, n))
        start = time.perf_counter()
        reply = await read_reply(reader)
        latencies.append(time.perf_counter() - start)
        if not reply.startswith(b"250"):
            raise RuntimeError(f"message refused: {reply!r}")
        counter[0] += 1
        n += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


def probe(port: int, stop: Any, result: Any) -> None:
    """In its own process: NOOP round trips every 10 ms; the longest is the worst stall another client saw."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")
    f.readline()
    worst, rtts = 0.0, []
    while not stop.is_set():
        t = time.perf_counter()
        sock.sendall(b"NOOP\r\n")
        f.readline()
        rtt = time.perf_counter() - t
        rtts.append(rtt)
        worst = max(worst, rtt)
        time.sleep(0.01)
    sock.close()
    rtts.sort()
    result["max"] = worst
    result["p99"] = rtts[int(len(rtts) * 0.99)] if rtts else 0.0
    result["count"] = len(rtts)


async def run_level(port: int, clients: int, seconds: float, size: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    counter = [0]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(port, deadline, size, i, latencies, counter) for i in range(clients)))
    return counter[0], latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def serve(config_path: str, stats_path: str) -> None:
    """Child process: the real server (service.build) plus a 10 ms LoopingCall measuring how late the reactor runs it.

    SIGUSR1 writes the lateness seen since the previous SIGUSR1 to ``stats_path``
    (JSON: max, p99, samples) and starts a new window; SIGTERM stops the server.
    """
    import json
    import signal

    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner

    from mailsuite.config import load
    from mailsuite.service import build

    # log to the child's stdout (server.log) as the systemd unit's twistd does (--logger mailsuite.logs.observer),
    # so logging costs are in the figures
    from mailsuite.logs import LineObserver

    globalLogBeginner.beginLoggingTo([LineObserver(sys.stdout)], redirectStandardIO=False)
    root = build(load(config_path), reactor)
    lags: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        lags.append(now - last[0] - 0.01)
        last[0] = now

    def report(*_: Any) -> None:
        window = sorted(lags)
        lags.clear()
        stats = {"max": window[-1] if window else 0.0, "p99": window[int(len(window) * 0.99)] if window else 0.0, "samples": len(window)}
        Path(stats_path).write_text(json.dumps(stats))

    signal.signal(signal.SIGUSR1, report)
    task.LoopingCall(tick).start(0.01)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()


def postfix_peer(base: Path) -> Any:
    """A started private Postfix (bench/peers/postfix.py) as a context manager, or None (reason printed) when unavailable."""
    from bench.peers.postfix import PostfixPeer, postfix_available

    why_not = postfix_available()
    if why_not is not None:
        print(f"postfix: {why_not}")
        return None
    return PostfixPeer(base / "postfix", None, "example.test", USERS)


def measure_postfix(peer: Any, level: int, args: Any) -> tuple[float, float, list[float]]:
    """The same load against Postfix: (accepted/s, delivered/s, latencies).

    mailsuite's 250 comes after the Maildir fsync, Postfix's after its queue
    fsync; the fair comparison is with Postfix's delivered rate (until the
    messages are in the Maildirs), the accepted rate is printed too.
    """
    figures = peer.measure(lambda port: asyncio.run(run_level(port, level, args.seconds, args.size)))
    _, latencies = figures.result
    return figures.accepted_per_s, figures.delivered_per_s, latencies


def antispam_settings(args: Any, settings: dict[str, Any]) -> list[Any]:
    """Turn on [antispam] for --dnsbl / --rspamd in ``settings``; the started helpers (DNS server, rspamd) to stop at the end.

    The benchmark's clients keep one connection each, so the DNSBL and FCrDNS
    lookups (once per connection, then from the resolver's cache) cost little
    per message; what remains per message is the RCPT and end-of-message
    policy work, and with --rspamd the milter round trips and rspamd's scan.
    """
    if not (args.dnsbl or args.rspamd):
        return []
    from tests.support.dnsserver import DNSServer

    dns = DNSServer({}).start()
    helpers: list[Any] = [dns]
    settings.update({"queue.resolver": dns.address, "antispam.enabled": True, "antispam.pregreet.enabled": False,
                     "antispam.ratelimit.ip_connections_per_minute": 0, "antispam.ratelimit.ip_messages_per_minute": 0,
                     "antispam.ratelimit.ip_recipients_per_minute": 0})
    if args.dnsbl:
        settings["antispam.dnsbl.zones"] = [{"zone": "bl.bench.test", "action": "reject"}, {"zone": "score.bench.test", "weight": 2.0}]
    else:
        settings.update({"antispam.dnsbl.enabled": False, "antispam.fcrdns.enabled": False, "antispam.helo.enabled": False})
    if args.rspamd:
        from tests.support.rspamd import Rspamd

        rspamd = Rspamd(dns.address).start()
        helpers.append(rspamd)
        settings["antispam.milters"] = [{"address": rspamd.address, "timeout": 30.0}]
    return helpers


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each concurrency level")
    parser.add_argument("--clients", default="1,10,50", help="comma-separated concurrency levels")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=1, help="measure each level this many times (alternating with Postfix)")
    parser.add_argument("--postfix", action="store_true", help="also run the same load against a private Postfix instance (bench/peers/postfix.py)")
    parser.add_argument("--compare-port", type=int, default=0, help="also load another SMTP server on 127.0.0.1:PORT (e.g. Postfix)")
    parser.add_argument("--mailauth", action="store_true", help="keep inbound SPF/DKIM/DMARC checks on (they query DNS for the sender's domain)")
    parser.add_argument("--dnsbl", action="store_true", help="[antispam] on with a DNSBL zone, FCrDNS and HELO checks, asked of a loopback DNS server")
    parser.add_argument("--rspamd", action="store_true", help="[antispam] on with Debian's rspamd (milter proxy worker, started on loopback) as a milter")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mailsuite-bench-smtp-"))
    data = base / "data"
    settings: dict[str, Any] = {"hostname": "mail.example.test", "domains": ["example.test"], "data_root": str(data),
                                "limits.connections_per_ip": 200, "mailauth.verify_inbound": args.mailauth}
    for name in ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps"):
        settings[f"{name}.address"] = "127.0.0.1"
        settings[f"{name}.port"] = 0
    helpers = antispam_settings(args, settings)
    config = base / "mailsuite.toml"
    config.write_text(render_toml(settings))

    from mailsuite.auth.hashing import hash_password
    from mailsuite.auth.service import open_directory
    from mailsuite.config import load

    directory = open_directory(load(config))
    hashed = hash_password("bench-password")
    for user in USERS:
        directory.add_user(user, password_hash=hashed)
    directory.close()

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    stats_file = base / "lag.json"
    log = open(base / "server.log", "ab")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(config), str(stats_file)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    try:
        port = wait_for_ports(child, data, 30, lambda: (base / "server.log").read_text(), poll=0.05)["smtp"]
        print(f"mailsuite SMTP benchmark: {args.size} byte messages, fsync on, {args.seconds:.0f}s per level, "
              f"inbound mail checks {'on' if args.mailauth else 'off'}, DNSBL {'on' if args.dnsbl else 'off'}, "
              f"rspamd milter {'on' if args.rspamd else 'off'}, data in {data}")
        print(f"{'clients':>7} {'server':>9} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'probe max ms':>13} {'probe p99 ms':>13} "
              f"{'lag max ms':>11} {'lag p99 ms':>11} {'cpu ms/msg':>10}")
        levels = [int(x) for x in args.clients.split(",")]
        rates: dict[int, list[float]] = {level: [] for level in levels}
        lag_max: dict[int, float] = {level: 0.0 for level in levels}
        postfix: dict[int, list[float]] = {level: [] for level in levels}
        peer_manager = postfix_peer(base) if args.postfix else None
        peer = peer_manager.__enter__() if peer_manager is not None else None
        try:
            # mailsuite and Postfix alternate, level by level and round by round, so both see the same machine
            def run_ours(level: int) -> float:
                stop = multiprocessing.Event()
                result = multiprocessing.Manager().dict()
                prober = multiprocessing.Process(target=probe, args=(port, stop, result))
                prober.start()
                time.sleep(0.2)
                child.send_signal(signal.SIGUSR1)  # start a fresh lag window
                started, cpu_before = time.monotonic(), cpu_seconds(child.pid)
                count, latencies = asyncio.run(run_level(port, level, args.seconds, args.size))
                elapsed, cpu_used = time.monotonic() - started, cpu_seconds(child.pid) - cpu_before
                stats_file.unlink(missing_ok=True)
                child.send_signal(signal.SIGUSR1)
                stop.set()
                prober.join()
                while not stats_file.exists():
                    time.sleep(0.01)
                time.sleep(0.05)
                lag = json.loads(stats_file.read_text())
                rate = count / elapsed
                rates[level].append(rate)
                lag_max[level] = max(lag_max[level], lag["max"] * 1000)
                print(f"{level:>7} {'mailsuite':>9} {rate:>8.1f} {pct(latencies, 0.5) * 1000:>8.1f} {pct(latencies, 0.99) * 1000:>8.1f} "
                      f"{result.get('max', float('nan')) * 1000:>13.1f} {result.get('p99', float('nan')) * 1000:>13.1f} "
                      f"{lag['max'] * 1000:>11.1f} {lag['p99'] * 1000:>11.1f} {cpu_used * 1000 / max(count, 1):>10.2f}", flush=True)
                return rate

            def run_theirs(level: int) -> float:
                accepted, delivered, their_latencies = measure_postfix(peer, level, args)
                postfix[level].append(delivered)
                print(f"{level:>7} {'postfix':>9} {delivered:>8.1f} {pct(their_latencies, 0.5) * 1000:>8.1f} {pct(their_latencies, 0.99) * 1000:>8.1f} "
                      f"{'':>13} {'':>13} {'':>11} {'':>11} {'':>10}   (accepted {accepted:.1f}/s)", flush=True)
                return delivered

            # mailsuite and Postfix alternate, level by level and round by round, so both see the same
            # machine; who goes first swaps every round, so neither always runs after the other's load
            for level in levels:
                for round_index in range(args.rounds):
                    if peer is None:
                        run_ours(level)
                    elif round_index % 2 == 0:
                        ours = run_ours(level)
                        theirs = run_theirs(level)
                        print(f"{'':>7} {'ratio':>9} {ours / theirs:>8.2f}", flush=True)
                    else:
                        theirs = run_theirs(level)
                        ours = run_ours(level)
                        print(f"{'':>7} {'ratio':>9} {ours / theirs:>8.2f}", flush=True)
        finally:
            if peer_manager is not None:
                peer_manager.__exit__(None, None, None)
        if peer is not None:
            print("median ratio mailsuite / postfix (delivered), per level:")
            for level in levels:
                ratios = sorted(ours / theirs for ours, theirs in zip(rates[level], postfix[level]))
                print(f"{level:>7} clients: {statistics.median(ratios):.2f}  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        elif shutil.which("postfix") or os.path.exists("/usr/sbin/postfix"):
            print("postfix is installed: --postfix runs the same load against a private instance")
        stored = sum(len(os.listdir(data / "mail" / "example.test" / u.split("@")[0] / "new")) for u in USERS)
        print(f"messages on disk: {stored}")
        if args.compare_port:
            print(f"same load against 127.0.0.1:{args.compare_port}:")
            print(f"{'clients':>7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}")
            for level in levels:
                ours = statistics.median(rates[level])
                started = time.monotonic()
                count, latencies = asyncio.run(run_level(args.compare_port, level, args.seconds, args.size))
                rate = count / (time.monotonic() - started)
                print(f"{level:>7} {rate:>8.1f} {pct(latencies, 0.5) * 1000:>8.1f} {pct(latencies, 0.99) * 1000:>8.1f} {ours / rate:>7.2f}", flush=True)
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for level in levels:
            record("smtp", f"{level} clients, {args.size // 1024} KiB, in Maildir before 250", statistics.median(rates[level]), "msg/s",
                   peer="postfix (delivered)" if postfix[level] else None,
                   peer_value=statistics.median(postfix[level]) if postfix[level] else None)
            record("smtp", f"{level} clients, worst reactor lag", lag_max[level], "ms", higher_is_better=False)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for helper in reversed(helpers):
            helper.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
