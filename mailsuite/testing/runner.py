"""``python -m mailsuite.testing.runner CONFIG [--lifeline FD] [--orphan-remove DIR]``: a fixture's server process.

A lighter start than twistd (no plugin scan, no pid file): load the config,
build the same service twistd would, run the reactor until SIGTERM.  Exits 2
with one line on a configuration error, like twistd does.

``--lifeline FD`` is the read end of a pipe whose write end only the parent
(the test process) holds: when the parent dies, even by SIGKILL, the kernel
closes it, the read sees end-of-file, and the server stops and removes
``--orphan-remove DIR`` (the fixture's temporary directory) instead of
living on with it.  A pipe works on every POSIX system and, unlike
prctl(PR_SET_PDEATHSIG), does not fire when merely the parent's thread that
started the child ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from typing import Any


def watch_lifeline(fd: int, reactor: Any, on_orphaned: Any) -> threading.Thread:
    """Block on ``fd`` in a daemon thread; call ``on_orphaned`` in the reactor at end-of-file."""

    def wait() -> None:
        try:
            while os.read(fd, 64):
                pass
        except OSError:
            pass
        reactor.callFromThread(on_orphaned)

    thread = threading.Thread(target=wait, name="mailsuite-lifeline", daemon=True)
    thread.start()
    return thread


def _parse(args: list[str]) -> tuple[str, int | None, str | None] | None:
    config, lifeline, remove = None, None, None
    it = iter(args)
    for arg in it:
        if arg == "--lifeline":
            lifeline = int(next(it))
        elif arg == "--orphan-remove":
            remove = next(it)
        elif config is None and not arg.startswith("--"):
            config = arg
        else:
            return None
    return (config, lifeline, remove) if config is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or the parent's death); the ready signal is <data_root>/run/ports.json."""
    try:
        parsed = _parse(sys.argv[1:] if argv is None else argv)
    except (StopIteration, ValueError):
        parsed = None
    if parsed is None:
        sys.stderr.write("usage: python -m mailsuite.testing.runner CONFIG [--lifeline FD] [--orphan-remove DIR]\n")
        return 2
    config_path, lifeline, remove = parsed
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from mailsuite.config import load
    from mailsuite.errors import ConfigError
    from mailsuite.logs import LineObserver
    from mailsuite.service import build

    try:
        config = load(config_path)
    except ConfigError as e:
        sys.stderr.write(f"mailsuite: configuration error: {e}\n")
        return 2
    globalLogBeginner.beginLoggingTo([LineObserver(sys.stdout)], redirectStandardIO=False)
    root = build(config, reactor)
    orphaned: list[bool] = []
    if lifeline is not None:

        def on_orphaned() -> None:
            orphaned.append(True)
            if reactor.running:
                reactor.stop()

        watch_lifeline(lifeline, reactor, on_orphaned)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    if orphaned and remove:
        shutil.rmtree(remove, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
