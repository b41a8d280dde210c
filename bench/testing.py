"""How fast the test fixture is ready: ``MailServer()`` start to every listener bound.

    python bench/testing.py [--runs 10]

Issue 8's target is under one second on this machine (2 cores).  Prints the
median and worst of ``--runs`` starts, and the time for a send + read back.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="starts to time (default 10)")
    args = parser.parse_args()
    starts, round_trips = [], []
    for _ in range(args.runs):
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
            server.stop()
    median, worst = statistics.median(starts), max(starts)
    print(f"MailServer start to ready over {args.runs} runs: median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms (target < 1000 ms)")
    print(f"send with smtplib + wait_for_messages: median {statistics.median(round_trips) * 1000:.0f} ms")
    record("testing", "fixture start to ready (median)", median * 1000, "ms", higher_is_better=False)
    record("testing", "send + wait_for_messages (median)", statistics.median(round_trips) * 1000, "ms", higher_is_better=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
