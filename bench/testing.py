"""How fast the test fixture is ready: ``MailServer()`` start to every listener bound.

    python bench/testing.py [--runs 10]

Issue 22's target is a median under 500 ms on this machine (2 cores).  Prints
the median and worst of ``--runs`` starts as a test run sees them (each server
is forked from the test process's fork server, which imported the server once,
see ``mailsuite.testing.server._fork_server``), the same for cold starts
(``MAILSUITE_FIXTURE_FORK=0``: a new Python process each time), the time for a
send + read back, and for a stop.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import statistics
import sys
import time
from pathlib import Path

# Run as a script, bench/ would come first on the path and bench/queue.py would shadow the
# standard library's queue module: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.report import record  # noqa: E402
from mailsuite.testing import MailServer  # noqa: E402
from mailsuite.testing import server as server_module  # noqa: E402


def measure(runs: int) -> tuple[list[float], list[float], list[float]]:
    """Start, send one message and read it back, stop; ``runs`` times."""
    starts, round_trips, stops = [], [], []
    for _ in range(runs):
        began = time.monotonic()
        server = MailServer().start()
        starts.append(time.monotonic() - began)
        try:
            began = time.monotonic()
            with smtplib.SMTP(server.host, server.smtp_port) as client:
                client.sendmail("bench@sender.example", ["bench@example.test"], b"Subject: bench\r\n\r\nbody\r\n")
            server.wait_for_messages(1, timeout=10)
            round_trips.append(time.monotonic() - began)
        finally:
            began = time.monotonic()
            server.stop()
            stops.append(time.monotonic() - began)
    return starts, round_trips, stops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="starts to time (default 10)")
    args = parser.parse_args()
    starts, round_trips, stops = measure(args.runs)
    server_module._close_fork_server()
    os.environ[server_module.FORK_ENV] = "0"
    cold, _, _ = measure(max(3, args.runs // 2))
    median, worst = statistics.median(starts), max(starts)
    print(f"MailServer start to ready over {args.runs} runs: median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms (target < 500 ms)")
    print(f"cold starts (a new interpreter each) over {len(cold)} runs: median {statistics.median(cold) * 1000:.0f} ms, worst {max(cold) * 1000:.0f} ms")
    print(f"send with smtplib + wait_for_messages: median {statistics.median(round_trips) * 1000:.0f} ms")
    print(f"stop: median {statistics.median(stops) * 1000:.0f} ms")
    record("testing", "fixture start to ready (median)", median * 1000, "ms", higher_is_better=False)
    record("testing", "fixture cold start to ready (median)", statistics.median(cold) * 1000, "ms", higher_is_better=False)
    record("testing", "send + wait_for_messages (median)", statistics.median(round_trips) * 1000, "ms", higher_is_better=False)
    record("testing", "fixture stop (median)", statistics.median(stops) * 1000, "ms", higher_is_better=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
