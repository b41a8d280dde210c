"""Login benchmark: argon2id logins per second, and that a burst does not stall other clients.

Run:  /work/venv/bin/python bench/auth.py [--burst 32]

Starts a real server (`twistd -n mailsuite`, loopback, temporary data root),
adds a user through the CLI, then over IMAPS (plaintext IMAP on 143 with
allow_plaintext_auth, to leave TLS cost out):

- the latency of one login (median of 10),
- a burst of N simultaneous logins (threads) of N different users, total
  time and logins/s (one user's simultaneous logins with one password would
  share one check: mailsuite.auth.login),
- meanwhile, the latency of NOOP on another, already logged-in connection,
  sampled continuously: if hashing ran on the reactor thread this would grow
  to the whole burst's duration.
"""

from __future__ import annotations

import argparse
import imaplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import ServerProcess  # noqa: E402
from report import record  # noqa: E402  (bench/ is sys.path[0] when run as a script)

USER, PASSWORD = "bench@example.test", "bench-password-1"


def login(port: int, user: str = USER, password: str = PASSWORD) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login(user, password)
    return imap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=32, help="simultaneous logins (default 32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), {"tls.allow_plaintext_auth": True, "limits.connections_per_ip": args.burst + 10})
        server.add_user(USER, PASSWORD)
        for n in range(args.burst):
            server.add_user(f"burst{n}@example.test", f"{PASSWORD}-{n}")
        server.start()
        try:
            port = server.ports["imap"]
            single = []
            for _ in range(10):
                start = time.perf_counter()
                login(port).logout()
                single.append(time.perf_counter() - start)
            print(f"single login (argon2id verify + IMAP): median {statistics.median(single) * 1000:.0f} ms")
            record("auth", "one IMAP login (argon2id), median", statistics.median(single) * 1000, "ms", higher_is_better=False)

            watcher = login(port)
            samples: list[float] = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    start = time.perf_counter()
                    watcher.noop()
                    samples.append(time.perf_counter() - start)
                    time.sleep(0.005)

            baseline_thread = threading.Thread(target=watch)
            baseline_thread.start()
            time.sleep(0.5)
            stop.set()
            baseline_thread.join()
            idle = list(samples)
            samples.clear()
            stop.clear()

            watch_thread = threading.Thread(target=watch)
            watch_thread.start()
            barrier = threading.Barrier(args.burst)
            errors: list[Exception] = []

            def one(n: int) -> None:
                barrier.wait()
                try:
                    login(port, f"burst{n}@example.test", f"{PASSWORD}-{n}").logout()
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            threads = [threading.Thread(target=one, args=(n,)) for n in range(args.burst)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            stop.set()
            watch_thread.join()
            watcher.logout()
            print(f"burst of {args.burst} simultaneous logins: {elapsed:.2f} s, {args.burst / elapsed:.1f} logins/s, {len(errors)} errors")
            print(f"NOOP on another connection, idle:        median {statistics.median(idle) * 1000:.1f} ms, max {max(idle) * 1000:.1f} ms ({len(idle)} samples)")
            print(f"NOOP on another connection, during burst: median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms ({len(samples)} samples)")
            record("auth", f"burst of {args.burst} logins", args.burst / elapsed, "logins/s")
            record("auth", "NOOP latency during the burst, max", max(samples) * 1000, "ms", higher_is_better=False)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
