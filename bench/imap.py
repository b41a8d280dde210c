"""IMAP benchmark: SELECT and FETCH on a 100,000-message folder, header FETCH and
SEARCH on 10,000 messages, and server memory per idle IDLE session.

Run:  /work/venv/bin/python bench/imap.py [--messages 100000] [--small 10000] [--idle 1000]

Starts a real mailsuite server (capture mode: any password logs in, plaintext
logins allowed) on loopback in a temporary data root, fills Maildirs
directly (files in new/, as any delivery program would; Dovecot gets its own
fresh copy, so both servers' first SELECT finds the same files in new/), and drives it with
a raw-socket client that only frames responses (literal-aware), so the
figures are the server's.  Prints, for each operation, the time to the first
response byte and to the tagged OK, plus the server's peak RSS during the
big FETCH (it must stay bounded) and RSS per IDLE session.  When Debian's
dovecot-imapd is installed the same load runs against Dovecot with ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers.dovecot import DovecotUnavailable, dovecot_peer  # noqa: E402
from bench.procstats import RSSSampler, drop_message, rss_kb  # noqa: E402
from bench.report import record  # noqa: E402
from mailsuite.testing.process import ChildServer, render_toml  # noqa: E402

_LITERAL = re.compile(rb"\{(\d+)\}$")


class Client:
    """Minimal IMAP client: sends a command, reads (and counts) until its tagged line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.pos = 0
        self.counter = 0
        self.first_byte: float | None = None
        self._line()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        if self.pos:
            # drop what was consumed before growing the buffer (no quadratic copying)
            self.buffer = self.buffer[self.pos :]
            self.pos = 0
        self.buffer += data

    def _line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.buffer[self.pos : end]
                self.pos = end + 2
                return line
            self._fill()

    def _skip(self, size: int) -> None:
        while len(self.buffer) - self.pos < size:
            self._fill()
        self.pos += size

    def command(self, text: str) -> tuple[int, float, bytes]:
        """Run one command: (response bytes, seconds to the first byte, tagged line)."""
        self.counter += 1
        tag = b"b%d" % self.counter
        started = time.perf_counter()
        self.first_byte = None
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        total = 0
        while True:
            line = self._line()
            total += len(line) + 2
            m = _LITERAL.search(line)
            if m:
                size = int(m.group(1))
                self._skip(size)
                total += size
                continue
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r}: {line!r}")
                first = (self.first_byte or time.perf_counter()) - started
                return total, first, line

    def close(self) -> None:
        self.sock.close()


class Prober(threading.Thread):
    """Another client sending NOOPs while a long command runs: is the server still answering?"""

    def __init__(self, port: int, user: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(port)
        self.client.command(f"LOGIN {user} bench")
        self.running = True
        self.latencies: list[float] = []

    def run(self) -> None:
        while self.running:
            t = time.perf_counter()
            self.client.command("NOOP")
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.01)

    def stop(self) -> tuple[int, float]:
        """(NOOPs answered, slowest answer in seconds)."""
        self.running = False
        self.join()
        self.client.close()
        return len(self.latencies), max(self.latencies, default=0.0)


def fill(maildir: Path, count: int, prefix: str) -> None:
    """Write ``count`` small messages into new/ (tmp/ then rename)."""
    for i in range(count):
        body = (
            b"From: Sender %d <sender%d@example.test>\r\nTo: bench@example.test\r\nSubject: message %d about %s\r\n"
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%d.%s@example.test>\r\n\r\n"
            % (i % 97, i % 97, i, b"apples" if i % 10 == 0 else b"pears", i, prefix.encode())
        ) + b"Hello, this is a benchmark message body line.\r\n" * 8
        drop_message(maildir, i, prefix, body)


def run_load(port: int, big_user: str, small_user: str, pid: int | None) -> dict[str, Any]:
    """The same operations against any server: returns the figures."""
    fig: dict[str, Any] = {}
    c = Client(port)
    c.command(f"LOGIN {big_user} bench")
    prober = Prober(port, small_user)
    prober.start()
    t = time.perf_counter()
    c.command("SELECT INBOX")
    fig["select_first_s"] = time.perf_counter() - t
    fig["probe_count"], fig["probe_max_s"] = prober.stop()
    c.command("CLOSE")
    t = time.perf_counter()
    c.command("SELECT INBOX")
    fig["select_s"] = time.perf_counter() - t
    c.command("FETCH 1:* (UID FLAGS RFC822.SIZE)")  # warm-up: both servers answer the timed run from their caches
    sampler = RSSSampler(pid) if pid else None
    before = rss_kb(pid) if pid else 0
    if sampler:
        sampler.start()
    t = time.perf_counter()
    size, first, _ = c.command("FETCH 1:* (UID FLAGS RFC822.SIZE)")
    fig["fetch_s"] = time.perf_counter() - t
    fig["fetch_first_s"] = first
    fig["fetch_bytes"] = size
    if sampler:
        sampler.running = False
        sampler.join()
        fig["fetch_rss_before_mb"] = before / 1024
        fig["fetch_rss_peak_mb"] = sampler.peak / 1024
    c.close()

    c = Client(port)
    c.command(f"LOGIN {small_user} bench")
    c.command("SELECT INBOX")
    t = time.perf_counter()
    size, first, _ = c.command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")
    fig["headers_s"] = time.perf_counter() - t
    fig["headers_first_s"] = first
    t = time.perf_counter()
    try:
        c.command("SEARCH FROM sender5 SUBJECT apples")
        fig["search_s"] = time.perf_counter() - t
        t = time.perf_counter()
        c.command("SEARCH BODY benchmark UNSEEN")
        fig["search_body_s"] = time.perf_counter() - t
    except RuntimeError as e:
        fig["search_error"] = str(e)
    c.close()
    return fig


def idle_sessions(port: int, count: int, pid: int, tls: Any = None) -> tuple[float, float]:
    """Open ``count`` sessions idling on INBOX; returns (RSS before, RSS after) in KiB."""
    before = rss_kb(pid)
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if tls is not None:
            s = tls.wrap_socket(s)
        s.sendall(b"a LOGIN idle%d@example.test x\r\nb SELECT INBOX\r\nc IDLE\r\n" % (i % 50))
        socks.append(s)
    for s in socks:
        buf = b""
        while b"+ idling" not in buf:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(buf)
            buf += data
    time.sleep(1.0)
    after = rss_kb(pid)
    for s in socks:
        s.close()
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000, help="messages in the big folder")
    parser.add_argument("--small", type=int, default=10000, help="messages for header FETCH and SEARCH")
    parser.add_argument("--idle", type=int, default=1000, help="concurrent IDLE sessions")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mailsuite-bench-imap-"))
    data = base / "data"
    settings: dict[str, Any] = {
        "hostname": "mail.example.test",
        "domains": ["example.test"],
        "data_root": str(data),
        "tls.allow_plaintext_auth": True,
        "capture.enabled": True,
        "limits.connections_total": args.idle + 100,
        "limits.connections_per_ip": args.idle + 100,
        "limits.imap_connections_per_user": args.idle + 100,
    }
    has_tls = importlib.util.find_spec("mailsuite.tls") is not None
    for name in ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps"):
        settings[f"{name}.address"] = "127.0.0.1"
        settings[f"{name}.port"] = 0
        if name in ("submissions", "pop3s", "imaps") and not has_tls:
            settings[f"{name}.enabled"] = False
    config = base / "mailsuite.toml"
    config.write_text(render_toml(settings))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    server = ChildServer(config, data, base / "server.log", env)
    try:
        ports = server.start()
        assert server.process is not None
        pid = server.process.pid
        big, small = "big@example.test", "small@example.test"
        for user in (big, small):
            c = Client(ports["imap"])
            c.command(f"LOGIN {user} bench")
            c.close()
        # memory per idle session first, on a fresh process (later loads leave freed memory to reuse)
        idle_before, idle_after = idle_sessions(ports["imap"], args.idle, pid)
        tls_idle = None
        if "imaps" in ports and (data / "tls" / "cert.pem").exists():
            import ssl

            context = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
            context.check_hostname = False
            tls_idle = idle_sessions(ports["imaps"], args.idle, pid, context)
        mail = data / "mail" / "example.test"
        # Dovecot gets its own copy (same names, same bytes, files in new/): serving ours after
        # our server has claimed \Recent would find everything in cur/ and rename nothing.
        dovecot_mail = base / "dovecot-mail" / "example.test"
        t = time.perf_counter()
        for tree in (mail, dovecot_mail):
            fill(tree / "big", args.messages, "1")
            fill(tree / "small", args.small, "2")
        print(f"setup: wrote {args.messages} + {args.small} messages twice (a fresh copy for each server) in {time.perf_counter() - t:.1f}s", flush=True)

        fig = run_load(ports["imap"], big, small, pid)
        print("mailsuite IMAP (plain TCP, loopback):")
        print(f"  SELECT of {args.messages} messages: first {fig['select_first_s']:.2f} s (store assigns UIDs to new files), again {fig['select_s']:.2f} s")
        print(f"    meanwhile another client's NOOPs: {fig['probe_count']} answered, slowest {fig['probe_max_s'] * 1000:.0f} ms")
        print(f"  FETCH 1:* (UID FLAGS RFC822.SIZE) on {args.messages}: first byte {fig['fetch_first_s'] * 1000:.0f} ms, "
              f"complete {fig['fetch_s']:.2f} s ({fig['fetch_bytes'] / 1e6:.1f} MB); server RSS {fig['fetch_rss_before_mb']:.0f} MB before, peak {fig['fetch_rss_peak_mb']:.0f} MB")
        print(f"  UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]) on {args.small}: first byte {fig['headers_first_s'] * 1000:.0f} ms, complete {fig['headers_s']:.2f} s")
        if "search_error" in fig:
            print(f"  SEARCH on {args.small}: not available ({fig['search_error']})")
        else:
            print(f"  SEARCH FROM/SUBJECT (headers) on {args.small}: {fig['search_s']:.2f} s; SEARCH BODY on {args.small}: {fig['search_body_s']:.2f} s")
        per = (idle_after - idle_before) / args.idle
        print(f"  {args.idle} concurrent IDLE sessions (logged in, INBOX selected): server RSS {idle_before / 1024:.0f} MB -> {idle_after / 1024:.0f} MB, {per:.1f} KiB per session")
        if tls_idle is not None:
            per = (tls_idle[1] - tls_idle[0]) / args.idle
            print(f"  {args.idle} concurrent IDLE sessions over TLS (993): server RSS {tls_idle[0] / 1024:.0f} MB -> {tls_idle[1] / 1024:.0f} MB, {per:.1f} KiB per session")
        other: dict[str, Any] | None = None
        dovecot = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
        if dovecot and os.path.exists("/usr/lib/dovecot/imap"):
            other = run_dovecot(dovecot, base, dovecot_mail)
            if other:
                print("Dovecot IMAP (its own fresh copy of the same Maildirs, plain TCP, loopback):")
                print(f"  SELECT: first {other['select_first_s']:.2f} s (builds its index), again {other['select_s']:.2f} s")
                print(f"    meanwhile another client's NOOPs: {other['probe_count']} answered, slowest {other['probe_max_s'] * 1000:.0f} ms")
                print(f"  FETCH 1:* (UID FLAGS RFC822.SIZE): first byte {other['fetch_first_s'] * 1000:.0f} ms, complete {other['fetch_s']:.2f} s")
                print(f"  UID FETCH headers: complete {other['headers_s']:.2f} s")
                if "search_s" in other:
                    print(f"  SEARCH FROM/SUBJECT: {other['search_s']:.2f} s; SEARCH BODY: {other['search_body_s']:.2f} s")
                print("  ratio mailsuite/dovecot (time, lower is better; target <= 2.0):")
                for key, label in (("select_first_s", "first SELECT (files in new/)"), ("select_s", "SELECT"), ("fetch_s", "FETCH 1:*"), ("headers_s", "UID FETCH headers"), ("search_s", "SEARCH headers"), ("search_body_s", "SEARCH BODY")):
                    if key in fig and key in other and other[key] > 0:
                        print(f"    {label}: x{fig[key] / other[key]:.2f}")
        else:
            print("Dovecot: not installed (apt-get install dovecot-imapd for the comparison)")
        peer = "dovecot" if other else None
        for key, label in (("select_first_s", f"first SELECT, {args.messages} messages in new/"), ("select_s", f"SELECT, {args.messages} messages"), ("fetch_s", f"FETCH 1:* (UID FLAGS RFC822.SIZE), {args.messages}"),
                           ("headers_s", f"UID FETCH header fields, {args.small}"), ("search_s", f"SEARCH FROM/SUBJECT, {args.small}"),
                           ("search_body_s", f"SEARCH BODY, {args.small}")):
            if key in fig:
                record("imap", label, fig[key] * 1000, "ms", peer=peer if other and key in other else None,
                       peer_value=other[key] * 1000 if other and key in other else None, higher_is_better=False)
        record("imap", f"memory per idle IDLE session ({args.idle})", (idle_after - idle_before) / args.idle, "KiB", higher_is_better=False)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


def run_dovecot(binary: str, base: Path, mail: Path) -> dict[str, Any] | None:
    """The same load against a private Dovecot serving ``mail``, its own copy of the Maildirs (None when it cannot run)."""
    try:
        with dovecot_peer(binary, base, mail, "imap") as port:
            return run_load(port, "big@example.test", "small@example.test", None)
    except DovecotUnavailable as e:
        print(f"Dovecot: {e}")
        return None


if __name__ == "__main__":
    main()
