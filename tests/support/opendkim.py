"""Debian's opendkim in milter mode on loopback, signing for one domain, for tests of the milter client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.daemon import TempDaemon

CONFIG = """Syslog no
Background no
Mode s
Domain {domain}
Selector {selector}
KeyFile {key}
Socket inet:{port}@{host}
PidFile {dir}/opendkim.pid
Canonicalization relaxed/simple
InternalHosts 127.0.0.0/8
UMask 007
RequireSafeKeys false
"""


def available() -> bool:
    """True when the opendkim binary is installed."""
    return shutil.which("opendkim") is not None or Path("/usr/sbin/opendkim").exists()


class OpenDKIM(TempDaemon):
    """An opendkim process signing mail of ``domain`` with the PEM key at ``key``, stopped by PID."""

    def __init__(self, domain: str, selector: str, key: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = int(s.getsockname()[1])
        self.dir = Path(tempfile.mkdtemp(prefix="mailsuite-opendkim-"))
        self.config = self.dir / "opendkim.conf"
        self.config.write_text(CONFIG.format(domain=domain, selector=selector, key=key, port=self.port, host=host, dir=self.dir))
        self.output = self.dir / "output.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"inet:{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "OpenDKIM":
        binary = shutil.which("opendkim") or "/usr/sbin/opendkim"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen([binary, "-f", "-x", str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"opendkim exited with {self.process.returncode}: {self.output.read_text(errors='replace')}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("opendkim did not start")
