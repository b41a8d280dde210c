"""Run every benchmark in bench/ and print one table of figures.

    python bench/run_all.py            # everything, default sizes
    python bench/run_all.py --quick    # smaller sizes, for a first look (minutes, not tens of minutes)
    python bench/run_all.py smtp imap  # only some areas

Each benchmark runs in its own process, against a real mailsuite server on
loopback; where Debian's postfix (SMTP) or dovecot-imapd / dovecot-pop3d are
installed, the SMTP, POP3 and IMAP benchmarks also run the same load against
them in the same run, and the table shows the ratio.  Ratios are the figures
to compare across machines: absolute rates move with the disk and the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: area -> (script, arguments for --quick)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "store": ("store.py", ["--messages", "500", "--folder-size", "20000"]),
    "smtp": ("smtp.py", ["--seconds", "3"]),
    "queue": ("queue.py", ["--messages", "200", "--enqueue", "200"]),
    "pop3": ("pop3.py", ["--messages", "10000", "--retr", "16", "--big-mb", "20"]),
    "imap": ("imap.py", ["--messages", "20000", "--small", "2000", "--idle", "200"]),
    "auth": ("auth.py", ["--burst", "16"]),
    "mailauth": ("mailauth.py", ["--messages", "100"]),
    "testing": ("testing.py", ["--runs", "3"]),
}


def format_value(value: float) -> str:
    """Short, readable numbers: 3 significant figures."""
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(rows: list[dict]) -> str:
    """The figures as a fixed-width table, with the ratio to the peer where there is one."""
    header = ("area", "operation", "mailsuite", "peer", "peer figure", "ratio")
    lines = [header]
    for row in rows:
        unit = row["unit"]
        peer_value = row.get("peer_value")
        ratio = ""
        if peer_value:
            ratio_value = row["value"] / peer_value if row.get("higher_is_better", True) else peer_value / row["value"] if row["value"] else float("inf")
            ratio = f"{ratio_value:.2f}x"
        lines.append((
            row["area"], row["operation"], f"{format_value(row['value'])} {unit}",
            row.get("peer") or "-", f"{format_value(peer_value)} {unit}" if peer_value else "-", ratio or "-",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("areas", nargs="*", metavar="AREA", help=f"areas to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    areas = args.areas or list(BENCHMARKS)
    unknown = [a for a in areas if a not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    results = Path(tempfile.mkstemp(prefix="mailsuite-bench-", suffix=".jsonl")[1])
    env = dict(os.environ, MAILSUITE_BENCH_JSON=str(results), PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = []
    for area in areas:
        script, quick_args = BENCHMARKS[area]
        command = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        if area == "smtp" and (shutil.which("postfix") or os.path.exists("/usr/sbin/postfix")):
            command.append("--postfix")  # the same load against a private Postfix instance
        print(f"\n=== {area}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, env=env)
        print(f"=== {area}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(area)
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    results.unlink()
    print("\n" + table(rows))
    print("\nratio: mailsuite's speed over the peer's (rate / rate, or peer time / mailsuite time): above 1.00x mailsuite is faster")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
