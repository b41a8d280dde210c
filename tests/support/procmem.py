"""A server process's resident memory, read from /proc, for the memory-bound tests."""

from __future__ import annotations

import threading


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (VmRSS); LookupError for a process that has none (a zombie)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


class PeakRSS:
    """Samples a process's RSS in a thread while the ``with`` block runs: ``before``, ``peak`` (KiB), ``growth_mb``."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.before = rss_kib(pid)
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, LookupError):  # the process is gone
                return
            self._done.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 1024
