"""POP3 benchmark: LIST+UIDL on a 50,000-message INBOX, RETR throughput for 1 MB messages.

Run:  /work/venv/bin/python bench/pop3.py [--messages 50000] [--retr 64] [--big-mb 50]

Starts a real mailsuite server (capture mode: any password logs in, plaintext
logins allowed, so no user database is needed) on loopback in a temporary
data root, fills Maildirs directly (files in new/, as any delivery program
would), and drives it with a raw socket client that does not parse lines, so
the figures are the server's.  Also prints the server's resident memory
while it sends one large message (it must stay flat), and, when Debian's
dovecot-pop3d is installed, the same LIST+UIDL and RETR load against Dovecot
on loopback with the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers.dovecot import DovecotUnavailable, dovecot_peer  # noqa: E402
from bench.procstats import RSSSampler, drop_message, rss_kb  # noqa: E402
from bench.report import record  # noqa: E402
from mailsuite.testing.process import ChildServer, render_toml  # noqa: E402

LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n"


class Client:
    """Minimal POP3 client: commands out, bytes counted in; multi-line ends on CRLF.CRLF."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: Any = tls.wrap_socket(sock) if tls else sock
        self.buffer = b""
        self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text!r}: {reply!r}")
        return reply

    def multiline(self, text: str) -> int:
        """Send a command with a multi-line answer; return the bytes received."""
        self.command(text)
        total, tail = len(self.buffer), self.buffer[-5:]
        data = self.buffer
        self.buffer = b""
        if b"\r\n.\r\n" in b"\r\n" + data:
            return total
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed during a multi-line response")
            total += len(data)
            tail = (tail + data)[-5:]
            if tail == b"\r\n.\r\n":
                return total

    def login(self, user: str, password: str = "bench") -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {password}")

    def quit(self) -> None:
        self.command("QUIT")
        self.sock.close()


def fill(maildir: Path, count: int, size: int, prefix: str) -> None:
    """Write ``count`` messages of about ``size`` bytes into new/ (tmp/ then rename)."""
    lines = max(1, size // len(LINE))
    for i in range(count):
        body = b"From: bench@example.test\r\nSubject: message %d\r\n\r\n" % i
        body += b"".join((b"." if j % 50 == 0 else b"") + LINE for j in range(lines))
        drop_message(maildir, i, prefix, body)


def timed(f: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = f()
    return time.perf_counter() - started, result


def run_load(port: int, tls: ssl.SSLContext | None, big_user: str, many_user: str, retr_user: str, retr_count: int, label: str) -> dict[str, float]:
    """The same load for any server: returns the figures."""
    figures: dict[str, float] = {}
    c = Client(port, tls)
    figures["first_login_s"], _ = timed(lambda: c.login(many_user))
    c.quit()
    c = Client(port, tls)
    figures["login_s"], _ = timed(lambda: c.login(many_user))
    figures["list_uidl_s"], _ = timed(lambda: (c.multiline("LIST"), c.multiline("UIDL")))
    c.quit()
    c = Client(port, tls)
    c.login(retr_user)
    c.multiline("RETR 1")  # warm the page cache path once
    elapsed, total = timed(lambda: sum(c.multiline(f"RETR {n}") for n in range(1, retr_count + 1)))
    figures["retr_mb_s"] = total / elapsed / 1e6
    figures["retr_msgs_s"] = retr_count / elapsed
    c.quit()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50000, help="messages in the LIST/UIDL INBOX")
    parser.add_argument("--retr", type=int, default=64, help="1 MB messages to RETR")
    parser.add_argument("--big-mb", type=int, default=50, help="size of the message for the memory check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mailsuite-bench-pop3-"))
    data = base / "data"
    settings = {
        "hostname": "mail.example.test",
        "domains": ["example.test"],
        "data_root": str(data),
        "tls.allow_plaintext_auth": True,
        "capture.enabled": True,
    }
    has_tls = importlib.util.find_spec("mailsuite.tls") is not None
    for name in ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps"):
        settings[f"{name}.address"] = "127.0.0.1"
        settings[f"{name}.port"] = 0
        if name in ("submissions", "pop3s", "imaps") and not has_tls:
            settings[f"{name}.enabled"] = False  # implicit TLS needs mailsuite.tls
    config = base / "mailsuite.toml"
    config.write_text(render_toml(settings))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    server = ChildServer(config, data, base / "server.log", env)
    try:
        ports = server.start()
        assert server.process is not None
        pid = server.process.pid
        many, retr, big = "many@example.test", "retr@example.test", "big@example.test"
        for user in (many, retr, big):  # first login creates the mailbox
            c = Client(ports["pop3"])
            c.login(user)
            c.quit()
        mail = data / "mail" / "example.test"
        t, _ = timed(lambda: fill(mail / "many", args.messages, 1024, "1"))
        print(f"setup: wrote {args.messages} x 1 KB messages in {t:.1f}s", flush=True)
        fill(mail / "retr", args.retr + 1, 1 << 20, "2")
        fill(mail / "big", 1, args.big_mb << 20, "3")

        figures = run_load(ports["pop3"], None, big, many, retr, args.retr, "mailsuite")
        print(f"mailsuite POP3 (plain TCP, loopback), INBOX of {args.messages} messages:")
        print(f"  first login (store assigns UIDs to {args.messages} new files): {figures['first_login_s']:.2f} s")
        print(f"  login: {figures['login_s'] * 1000:.0f} ms   LIST+UIDL: {figures['list_uidl_s'] * 1000:.0f} ms")
        print(f"  RETR of {args.retr} x 1 MB: {figures['retr_mb_s']:.1f} MB/s ({figures['retr_msgs_s']:.1f} messages/s)")

        if "pop3s" in ports and (data / "tls" / "cert.pem").exists():
            tls = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
            tls.check_hostname = False
            c = Client(ports["pop3s"], tls)
            c.login(retr)
            elapsed, total = timed(lambda: sum(c.multiline(f"RETR {n}") for n in range(1, args.retr + 1)))
            c.quit()
            print(f"  RETR over implicit TLS (995): {total / elapsed / 1e6:.1f} MB/s")

        c = Client(ports["pop3"])
        c.login(big)
        before = rss_kb(pid)
        sampler = RSSSampler(pid)
        sampler.start()
        elapsed, total = timed(lambda: c.multiline("RETR 1"))
        sampler.running = False
        sampler.join()
        c.quit()
        print(f"  RETR of one {args.big_mb} MB message: {elapsed:.2f} s; server RSS {before / 1024:.1f} MB before, peak {sampler.peak / 1024:.1f} MB during (+{(sampler.peak - before) / 1024:.1f} MB)")
        rss_growth_mb = (sampler.peak - before) / 1024

        other: dict[str, float] | None = None
        dovecot = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
        if dovecot and os.path.exists("/usr/lib/dovecot/pop3"):
            other = run_dovecot(dovecot, base, mail, args.retr)
            if other:
                print("Dovecot POP3 (same Maildirs, plain TCP, loopback):")
                print(f"  login: {other['login_s'] * 1000:.0f} ms   LIST+UIDL: {other['list_uidl_s'] * 1000:.0f} ms   (first login {other['first_login_s']:.2f} s)")
                print(f"  RETR of {args.retr} x 1 MB: {other['retr_mb_s']:.1f} MB/s")
                print(f"  ratio mailsuite/dovecot: LIST+UIDL time x{figures['list_uidl_s'] / other['list_uidl_s']:.2f}, RETR throughput x{figures['retr_mb_s'] / other['retr_mb_s']:.2f}")
        else:
            print("Dovecot: not installed (apt-get install dovecot-pop3d for the comparison)")
        peer = "dovecot" if other else None
        record("pop3", f"login, {args.messages}-message INBOX", figures["login_s"] * 1000, "ms", peer=peer, peer_value=other and other["login_s"] * 1000, higher_is_better=False)
        record("pop3", f"LIST+UIDL, {args.messages} messages", figures["list_uidl_s"] * 1000, "ms", peer=peer, peer_value=other and other["list_uidl_s"] * 1000, higher_is_better=False)
        record("pop3", "RETR of 1 MB messages", figures["retr_mb_s"], "MB/s", peer=peer, peer_value=other and other["retr_mb_s"])
        record("pop3", f"RSS growth during a {args.big_mb} MB RETR", rss_growth_mb, "MB", higher_is_better=False)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


def run_dovecot(binary: str, base: Path, mail: Path, retr_count: int) -> dict[str, float] | None:
    """The same load against a private Dovecot serving the same Maildirs (None when it cannot run)."""
    try:
        with dovecot_peer(binary, base, mail, "pop3", extra="pop3_uidl_format = %f") as port:
            return run_load(port, None, "big", "many", "retr", retr_count, "dovecot")
    except DovecotUnavailable as e:
        print(f"Dovecot: {e}")
        return None


if __name__ == "__main__":
    main()
