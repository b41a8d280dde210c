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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    """Serve the same Maildirs with Dovecot on a loopback port (static passdb, any password 'bench')."""
    conf_dir = base / "dovecot"
    conf_dir.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import grp
    import pwd

    if os.getuid() == 0:
        # Dovecot refuses mail processes as root: serve the Maildirs as "nobody" (a copy of the tree's owner).
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(mail)], check=True)
        for parent in (base, base / "data", base / "data" / "mail"):
            parent.chmod(0o755)
        internal_user, login_user = "dovecot", "dovenull"
    else:
        uid, gid = os.getuid(), os.getgid()
        internal_user = login_user = pwd.getpwuid(uid).pw_name
    group = grp.getgrgid(os.getgid() if os.getuid() != 0 else 0).gr_name
    (conf_dir / "dovecot.conf").write_text(
        f"""
base_dir = {conf_dir}/run
state_dir = {conf_dir}/state
log_path = {conf_dir}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal_user}
default_login_user = {login_user}
default_internal_group = {group}
first_valid_uid = {uid}
mail_location = maildir:{mail}/%n:INDEX={conf_dir}/index/%n
pop3_uidl_format = %f
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
passdb {{
  driver = static
  args = password=bench
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={conf_dir}/home/%n
}}
"""
    )
    for sub in ("run", "state", "index", "home"):
        (conf_dir / sub).mkdir()
    if os.getuid() == 0:
        for sub in ("index", "home"):
            os.chown(conf_dir / sub, uid, gid)
    # The daemon keeps inherited descriptors open: give it a file, not a pipe we would wait on.
    with open(conf_dir / "start.log", "w") as errors:
        started = subprocess.run([binary, "-c", str(conf_dir / "dovecot.conf")], stdin=subprocess.DEVNULL, stdout=errors, stderr=errors)
    if started.returncode != 0:
        print(f"Dovecot did not start: {(conf_dir / 'start.log').read_text().strip()}")
        return None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        return run_load(port, None, "big", "many", "retr", retr_count, "dovecot")
    finally:
        subprocess.run([binary, "-c", str(conf_dir / "dovecot.conf"), "stop"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
