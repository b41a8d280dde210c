"""Postfix as the SMTP benchmark's peer: a private instance on a loopback port, delivering into Maildirs.

Issue 4's target is "mailsuite at least as many messages per second as Postfix
on the same machine in the same run".  mailsuite answers 250 only once the
message is fsynced in the recipient's final mailbox; Postfix answers 250 once
its queue file is fsynced and delivers afterwards.  So the fair bar is the rate
at which Postfix gets messages into the same kind of final mailbox (a Maildir,
written by virtual(8)), and this module reports both: accepted (250s per
second) and delivered (messages in the Maildirs per second).

API, for ``bench/smtp.py``::

    from bench.peers.postfix import PostfixPeer, postfix_available

    why_not = postfix_available()              # None, or a sentence saying why not
    with PostfixPeer(workdir, port, "example.test", USERS) as peer:
        peer.port                              # SMTP on 127.0.0.1:peer.port, MX for the domain
        before = peer.delivered()              # messages now in the recipients' Maildirs
        ...                                    # the same load as against mailsuite
        done_at = peer.wait_delivered(before + accepted)   # time.monotonic() when all are in
        # or, in one call, timing included:
        figures = peer.measure(lambda port: asyncio.run(run_level(port, clients, seconds, size)))
        figures.accepted_per_s, figures.delivered_per_s, figures.result  # result: run_level's (count, latencies)
    # stopped here: `postfix stop`, then the master's process group killed by PID if it lingers

The instance is private: its own config_directory, queue_directory,
data_directory and mailboxes under ``workdir``, listening only on
127.0.0.1:port, relaying nothing (``reject_unauth_destination``), unknown
recipients refused at RCPT (as mailsuite does).  Everything else stays at
Postfix's defaults, including the fsync of each queue file before 250 and of
each Maildir file before its rename into new/.  No chroot (the private queue
directory has no copy of /etc files), no TLS (the benchmark is plain SMTP on
port 25 for both servers), log to a file (no syslog in this environment).

Postfix's master must start as root; it then drops to the ``postfix`` user,
and virtual(8) writes the Maildirs as ``nobody``, so ``workdir`` and every
directory above it must be traversable by other users (``start`` adds o+x to
a parent it owns under the temporary directory, such as the benchmark's own
``mkdtemp``; anywhere else it refuses with a clear message).

Self-test and figure:  ``/work/venv/bin/python -m bench.peers.postfix``
(options: ``--messages 2000 --clients 20 --size 10240``, or ``--seconds 10``
to drive it with bench/smtp.py's own pipelined client for a timed run).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable

POSTFIX_USER = "postfix"
SETGID_GROUP = "postdrop"
MAILBOX_USER = "nobody"  # virtual(8) refuses uid 0 (virtual_minimum_uid); nobody owns nothing else here

#: master.cf services an inbound-only instance needs; chroot "n" everywhere (see module docstring).
#: service, type, private, unpriv, chroot, wakeup, maxproc, command
SERVICES = [
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("local", "unix", "-", "n", "n", "-", "-", "local"),
    ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    ("lmtp", "unix", "-", "-", "n", "-", "-", "lmtp"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
]


def _postfix_binary() -> str | None:
    return shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)


def postfix_available() -> str | None:
    """None when a private Postfix can run here, else why not (printed by the benchmark instead of a figure)."""
    if _postfix_binary() is None:
        return "postfix not installed (apt-get install postfix, 'No configuration', for the comparison)"
    if os.geteuid() != 0:
        return "postfix's master daemon must be started as root; run the benchmark as root for the comparison"
    for lookup, name in ((pwd.getpwnam, POSTFIX_USER), (grp.getgrnam, SETGID_GROUP), (pwd.getpwnam, MAILBOX_USER)):
        try:
            lookup(name)
        except KeyError:
            return f"no {name!r} user/group on this system (the postfix package creates it)"
    daemon_dir = _postconf_default("daemon_directory")
    if daemon_dir is None or not os.access(os.path.join(daemon_dir, "master"), os.X_OK):
        return "postfix's master daemon not found (postconf -d daemon_directory)"
    return None


def _postconf_default(name: str) -> str | None:
    binary = shutil.which("postconf") or "/usr/sbin/postconf"
    try:
        out = subprocess.run([binary, "-d", "-h", name], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def free_port() -> int:
    """A loopback port nobody listens on now (Postfix cannot report an ephemeral port back to us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PeerFigures:
    """One load's figures on the peer: what :meth:`PostfixPeer.measure` returns."""

    count: int  #: messages accepted (250) during the load
    accepted_per_s: float  #: 250s per second over the load
    delivered_per_s: float  #: messages per second from the load's start until all were in the Maildirs
    drain_s: float  #: seconds from the load's end until the last of them was delivered
    result: Any  #: what the load function returned (e.g. bench/smtp.py's (count, latencies))


class PostfixError(RuntimeError):
    """The private Postfix could not be set up, started, or did not deliver in time; the message carries its log."""


class PostfixPeer:
    """A private Postfix instance under ``workdir`` accepting mail for ``domain`` on 127.0.0.1:``port``.

    Why a class with ``with``: the benchmark must never leave a mail server
    running or listening behind it, whatever fails in between.
    """

    def __init__(self, workdir: Path, port: int | None, domain: str, recipients: list[str], hostname: str = "postfix-peer.bench.test") -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port()
        self.domain = domain.lower()
        self.recipients = list(recipients)
        for address in self.recipients:
            if address.rpartition("@")[2].lower() != self.domain:
                raise ValueError(f"recipient {address!r} is not in {domain!r}")
        self.hostname = hostname
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.mail_dir = self.workdir / "mail"
        self.log_dir = self.workdir / "log"
        self.log_file = self.log_dir / "postfix.log"
        self.command_log = self.log_dir / "commands.log"
        self.master_pid: int | None = None
        self._binary = _postfix_binary() or "postfix"

    # -- life cycle -------------------------------------------------------------------------------

    def __enter__(self) -> "PostfixPeer":
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration, let ``postfix check`` fix ownership, start the master and wait for the greeting."""
        why_not = postfix_available()
        if why_not:
            raise PostfixError(why_not)
        self._prepare()
        self._postfix("check")
        try:
            self._postfix("start")
            self.master_pid = self._read_master_pid()
            self._wait_for_greeting(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """``postfix stop``; if the master (or any process of this instance) lingers, SIGKILL it by PID."""
        pid = self.master_pid or self._read_master_pid(missing_ok=True)
        if pid is None and not self.queue_dir.exists():
            return
        try:
            self._postfix("stop", check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and _alive(pid):
            try:
                # master runs setsid(): its PID is its process group, which holds its children
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Children (smtpd, virtual...) leave once the master is gone; any that do not are ours by MAIL_CONFIG.
        for _ in range(50):
            stragglers = self._instance_pids()
            if not stragglers:
                break
            time.sleep(0.1)
        for straggler in self._instance_pids():
            try:
                os.kill(straggler, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.master_pid = None

    # -- what the benchmark reads -----------------------------------------------------------------

    def delivered(self) -> int:
        """Messages now in the recipients' Maildirs (new/ and cur/): in their final mailbox, fsynced by virtual(8)."""
        total = 0
        for address in self.recipients:
            maildir = self._maildir(address)
            for sub in ("new", "cur"):
                try:
                    with os.scandir(maildir / sub) as entries:
                        total += sum(1 for _ in entries)
                except FileNotFoundError:
                    pass
        return total

    def wait_delivered(self, count: int, timeout: float = 300.0, poll: float = 0.05) -> float:
        """Block until ``delivered() >= count``; return the ``time.monotonic()`` at which that was seen.

        Polls every ``poll`` seconds (the resolution of the delivered rate);
        raises :class:`PostfixError` with the log's tail when it takes longer
        than ``timeout`` (a deferral, a permission problem).
        """
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.delivered() >= count:
                return now
            if now > deadline:
                raise PostfixError(f"only {self.delivered()} of {count} messages delivered after {timeout:.0f}s; log tail:\n{self.log_tail()}")
            time.sleep(poll)

    def measure(self, load: Callable[[int], Any], timeout: float = 300.0) -> PeerFigures:
        """Run ``load(self.port)`` (returns the number of 250s, or a tuple starting with it) and time both rates.

        The delivered rate counts from the load's start until every accepted
        message of this load is in a Maildir, so it is the figure to put next
        to mailsuite's (whose 250 comes only after the final mailbox's fsync).
        """
        before = self.delivered()
        started = time.monotonic()
        result = load(self.port)
        accepted_at = time.monotonic()
        count = result[0] if isinstance(result, tuple) else int(result)
        delivered_at = self.wait_delivered(before + count, timeout) if count else accepted_at
        return PeerFigures(count, count / (accepted_at - started), count / (delivered_at - started), delivered_at - accepted_at, result)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Postfix's own log and of the commands this class ran (for error messages)."""
        out = []
        for path in (self.command_log, self.log_file):
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                pass
        return "\n".join(out)

    # -- internals --------------------------------------------------------------------------------

    def _maildir(self, address: str) -> Path:
        return self.mail_dir / self.domain / address.rpartition("@")[0].lower()

    def _prepare(self) -> None:
        postfix_user = pwd.getpwnam(POSTFIX_USER)
        mailbox_user = pwd.getpwnam(MAILBOX_USER)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        _make_traversable(self.workdir.parent)
        for path in (self.config_dir, self.queue_dir, self.data_dir, self.mail_dir, self.log_dir):
            path.mkdir(exist_ok=True)
            path.chmod(0o755)
        os.chown(self.data_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.log_dir, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.mail_dir, mailbox_user.pw_uid, mailbox_user.pw_gid)
        self.command_log.touch()
        # texthash: read as text at start-up, no postmap step; "dir/" as the result means Maildir.
        (self.config_dir / "vmailbox").write_text(
            "".join(f"{a.lower()} {self.domain}/{a.rpartition('@')[0].lower()}/\n" for a in self.recipients))
        (self.config_dir / "main.cf").write_text(self._main_cf(mailbox_user))
        lines = [f"127.0.0.1:{self.port} inet n - n - - smtpd"]
        lines += ["{:<11}{:<11}{:<3}{:<3}{:<3}{:<6}{:<3}{}".format(*service) for service in SERVICES]
        (self.config_dir / "master.cf").write_text("\n".join(lines) + "\n")

    def _main_cf(self, mailbox_user: pwd.struct_passwd) -> str:
        return f"""\
# Private Postfix for mailsuite's SMTP benchmark (bench/peers/postfix.py); defaults unless noted.
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = {POSTFIX_USER}
setgid_group = {SETGID_GROUP}
myhostname = {self.hostname}
mydomain = bench.test
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP
# loopback only, IPv4 only
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# no local(8) domain, no aliases, nothing relayed for anyone
mydestination =
relay_domains =
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled in this benchmark instance
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
# the benchmark's users: virtual mailboxes, Maildir, owned by {MAILBOX_USER}
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = texthash:{self.config_dir}/vmailbox
virtual_uid_maps = static:{mailbox_user.pw_uid}
virtual_gid_maps = static:{mailbox_user.pw_gid}
# log to a file: no syslog here
maillog_file = {self.log_file}
maillog_file_prefixes = {self.log_dir}
biff = no
"""

    def _postfix(self, action: str, check: bool = True, timeout: float = 120.0) -> int:
        # The master daemonises and keeps inherited descriptors: a log file, never a pipe we would wait on.
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        with open(self.command_log, "ab") as log:
            log.write(f"$ postfix -c {self.config_dir} {action}\n".encode())
            log.flush()
            code = subprocess.run([self._binary, "-c", str(self.config_dir), action], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, env=env, timeout=timeout).returncode
        if check and code != 0:
            raise PostfixError(f"postfix {action} failed (exit {code}):\n{self.log_tail()}")
        return code

    def _read_master_pid(self, missing_ok: bool = False) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            if missing_ok:
                return None
            raise PostfixError(f"no master.pid after postfix start:\n{self.log_tail()}") from None

    def _wait_for_greeting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    greeting = sock.makefile("rb").readline()
                    if greeting.startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
                    last = RuntimeError(f"greeting {greeting!r}")
            except OSError as error:
                last = error
            time.sleep(0.1)
        raise PostfixError(f"postfix did not greet on 127.0.0.1:{self.port} ({last}):\n{self.log_tail()}")

    def _instance_pids(self) -> list[int]:
        """Processes of THIS instance: postfix(1) exports MAIL_CONFIG=<our config dir> to the master and its children."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and _alive(int(entry)):
                found.append(int(entry))
        return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for an init that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _make_traversable(directory: Path) -> None:
    """Postfix's unprivileged users must reach ``workdir``: add o+x where we own a temporary parent, else refuse."""
    temp_root = Path(tempfile.gettempdir()).resolve()
    for parent in [directory, *directory.parents]:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if parent.stat().st_uid == os.geteuid() and parent != temp_root and temp_root in parent.parents:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            continue
        raise PostfixError(f"{parent} is not traversable by other users; postfix (uid {POSTFIX_USER}) and virtual(8) (uid {MAILBOX_USER}) "
                           f"cannot reach the working directory below it: choose a workdir under {temp_root}")


# -- self-test: python -m bench.peers.postfix ---------------------------------------------------------

def message(size: int, n: int) -> bytes:
    """A ``size``-byte message (headers, then lines of text), as bench/smtp.py sends."""
    head = (f"From: bench@remote.test\r\nTo: someone@example.test\r\nSubject: bench {n}\r\n"
            f"Message-ID: <{n}.{time.time_ns()}@remote.test>\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"
    return head + (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)] + b"\r\n"


def smtplib_load(port: int, recipients: list[str], messages: int, clients: int, size: int) -> tuple[float, float, list[float]]:
    """``messages`` sent by ``clients`` smtplib sessions in threads: (start, time of the last 250, per-message seconds)."""
    import smtplib

    lock = threading.Lock()
    next_number = [0]
    latencies: list[float] = []
    errors: list[BaseException] = []
    body = [message(size, n) for n in range(min(messages, 64))]

    def worker() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=120) as smtp:
                while True:
                    with lock:
                        n = next_number[0]
                        if n >= messages:
                            return
                        next_number[0] += 1
                    t = time.perf_counter()
                    smtp.sendmail("bench@remote.test", [recipients[n % len(recipients)]], body[n % len(body)])
                    with lock:
                        latencies.append(time.perf_counter() - t)
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished = time.monotonic()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed, first: {errors[0]!r}")
    return started, finished, latencies


def check_policy(port: int, known: str) -> str:
    """The peer is an MX like mailsuite's port 25: known user accepted, unknown user and relaying refused at RCPT."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=30) as smtp:
        smtp.ehlo()
        answers = {}
        for rcpt in (known, "nobody-here@" + known.rpartition("@")[2], "someone@elsewhere.test"):
            smtp.mail("bench@remote.test")
            answers[rcpt] = smtp.rcpt(rcpt)[0]
            smtp.rset()
    codes = list(answers.values())
    if codes[0] != 250 or codes[1] // 100 != 5 or codes[2] // 100 != 5:
        raise PostfixError(f"unexpected RCPT answers {answers}")
    return f"RCPT known user {codes[0]}, unknown user {codes[1]}, other domain (relay) {codes[2]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a private Postfix, send it mail, print msg/s accepted and delivered, stop it.")
    parser.add_argument("--messages", type=int, default=2000, help="messages to send with smtplib (default 2000)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes (default 10 KiB)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="instead of --messages with smtplib: a timed run with bench/smtp.py's own pipelined client")
    parser.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (queue, Maildirs, log)")
    args = parser.parse_args(argv)

    why_not = postfix_available()
    if why_not:
        print(f"postfix: {why_not}")
        return 2
    recipients = [f"user{i}@example.test" for i in range(10)]
    base = Path(tempfile.mkdtemp(prefix="mailsuite-bench-postfix-"))
    try:
        with PostfixPeer(base / "postfix", args.port or None, "example.test", recipients) as peer:
            print(f"private postfix on 127.0.0.1:{peer.port} (master pid {peer.master_pid}), work dir {peer.workdir}", flush=True)
            print(f"  policy: {check_policy(peer.port, recipients[0])}", flush=True)
            if args.seconds:
                sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
                import asyncio

                from bench.smtp import pct, run_level

                figures = peer.measure(lambda port: asyncio.run(run_level(port, args.clients, args.seconds, args.size)))
                count, latencies = figures.result
                how = f"{args.clients} pipelining clients (bench/smtp.py's client) for {args.seconds:.0f}s"
            else:
                started, accepted_at, latencies = smtplib_load(peer.port, recipients, args.messages, args.clients, args.size)
                count = args.messages
                how = f"{args.clients} smtplib clients"
                delivered_at = peer.wait_delivered(count)
                figures = PeerFigures(count, count / (accepted_at - started), count / (delivered_at - started), delivered_at - accepted_at, None)

                def pct(values: list[float], p: float) -> float:
                    values = sorted(values)
                    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")
            extra = peer.delivered() - count
            print(f"postfix {postfix_version()}: {count} x {args.size} byte messages, {how}")
            print(f"  accepted : {figures.accepted_per_s:8.1f} msg/s  (250 after the queue file's fsync; "
                  f"transaction p50 {pct(latencies, 0.5) * 1000:.1f} ms, p99 {pct(latencies, 0.99) * 1000:.1f} ms)")
            print(f"  delivered: {figures.delivered_per_s:8.1f} msg/s  (all {count} in the Maildirs "
                  f"{figures.drain_s:.2f}s after the last 250){'; ' + str(extra) + ' unexpected extra' if extra else ''}")
            print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def postfix_version() -> str:
    return _postconf_default("mail_version") or "?"


if __name__ == "__main__":
    sys.exit(main())
