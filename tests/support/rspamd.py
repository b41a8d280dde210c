"""Debian's rspamd on loopback with its milter proxy worker, for tests of the milter client.

Why a real rspamd: the milter protocol has no formal specification beyond
libmilter's headers; the client is only proven by a real milter.  The proxy
worker scans in-process (``self_scan``), so one process type is enough.

Start-up is kept short: rspamd compiles the public suffix list (about
10,000 names) into a matcher at every start with an empty cache, which took
40 s on a loaded 2-core machine; a five-name list is enough for tests.  DNS
goes to the test's loopback DNS server (nothing leaves the machine), and
``milter_headers`` adds X-Spamd-Result and X-Spam-Status to every message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.daemon import TempDaemon

CONFIG = """
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    url_tld = "{dir}/tld.dat";
    dns {{ nameserver = ["{dns}"]; timeout = 0.5s; retransmits = 1; }}
    tempdir = "{dir}";
    control_socket = "$DBDIR/rspamd.sock mode=0600";
    hs_cache_dir = "$DBDIR/";
    task_timeout = 8s;
    local_addrs = [];
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "rspamd_proxy" {{
    bind_socket = "{host}:{port}";
    milter = yes;
    timeout = 30s;
    upstream "local" {{ default = yes; self_scan = yes; }}
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
milter_headers {{
    use = ["x-spamd-result", "x-spam-status"];
    skip_local = false;
    skip_authenticated = false;
}}
"""


def available() -> bool:
    """True when the rspamd binary is installed."""
    return shutil.which("rspamd") is not None


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Rspamd(TempDaemon):
    """An rspamd process (milter on ``host:port``), stopped by PID."""

    def __init__(self, dns_address: str, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-rspamd-"))
        for sub in ("db", "run", "log"):
            (self.dir / sub).mkdir()
        (self.dir / "tld.dat").write_text("com\norg\nnet\ntest\nexample\n")
        self.config = self.dir / "rspamd.conf"
        self.config.write_text(CONFIG.format(dir=self.dir, dns=dns_address, host=host, port=self.port))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The milter address for ``antispam.milters``."""
        return f"inet:{self.host}:{self.port}"

    def log(self) -> str:
        path = self.dir / "log" / "rspamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 120.0) -> "Rspamd":
        d = self.dir
        self.process = subprocess.Popen(
            ["rspamd", "-f", "-i", *(["-u", "root", "-g", "root"] if os.geteuid() == 0 else []), "-c", str(self.config),
             "--var", f"DBDIR={d / 'db'}", "--var", f"RUNDIR={d / 'run'}", "--var", f"LOGDIR={d / 'log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if "starting rspamd_proxy process" in self.log():
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rspamd did not start:\n{self.log()[-3000:]}")
