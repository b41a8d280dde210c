"""Small measuring aids shared by the benchmarks: a server's memory, and mail put in place fast.

Benchmarks fill Maildirs directly (as another delivery program would) so that
setting up 100,000 messages takes seconds, and watch the server's resident
memory from /proc while a load runs.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB (0 if it is gone)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RSSSampler(threading.Thread):
    """Samples a process's RSS every 5 ms until ``running`` is set False; ``peak`` holds the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.005)


def drop_message(maildir: Path, index: int, prefix: str, body: bytes) -> None:
    """Put one message into a Maildir's new/ the Maildir way (tmp/ then rename), with an S= size."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"1700000000.M{index}P{prefix}.bench,S={len(body)}"
    tmp = maildir / "tmp" / name
    with open(tmp, "wb") as f:
        f.write(body)
    os.rename(tmp, maildir / "new" / name)
