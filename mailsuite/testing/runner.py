"""``python -m mailsuite.testing.runner (CONFIG | --spare) [--lifeline FD] [--orphan-remove DIR]``: a fixture's server process.

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
    config, lifeline, remove, spare = None, None, None, False
    it = iter(args)
    for arg in it:
        if arg == "--lifeline":
            lifeline = int(next(it))
        elif arg == "--orphan-remove":
            remove = next(it)
        elif arg == "--spare":
            spare = True
        elif config is None and not arg.startswith("--"):
            config = arg
        else:
            return None
    if spare and config is None:
        config = _wait_as_spare(remove)
    return (config, lifeline, remove) if config is not None else None


def _wait_as_spare(remove: str | None) -> str:
    """``--spare``: import the server now, then wait for the config path on stdin.

    The fixture keeps one such process ready, so that the next start pays
    only for building the service and binding its ports, not for importing
    Twisted, OpenSSL and every protocol (most of a cold start's CPU time).
    End-of-file on stdin means the test process is gone or needs no server:
    remove the prepared directory and exit.
    """
    import importlib

    from twisted.internet import reactor  # noqa: F401 - the import is the point

    import mailsuite.service as service

    # What a capture server (most fixtures) runs; a strict one imports the rest at start.
    for target in [*(p for p in service.PARTS if p not in service.CAPTURE_SKIPS), *service.LISTENER_BUILDERS.values()]:
        importlib.import_module(target.partition(":")[0])
    for name in ("mailsuite.imap.server", "mailsuite.logs", "mailsuite.config"):
        importlib.import_module(name)
    line = sys.stdin.readline().strip()
    if not line:
        if remove:
            shutil.rmtree(remove, ignore_errors=True)
        sys.exit(0)
    return line


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or the parent's death); the ready signal is <data_root>/run/ports.json."""
    try:
        parsed = _parse(sys.argv[1:] if argv is None else argv)
    except (StopIteration, ValueError):
        parsed = None
    if parsed is None:
        sys.stderr.write("usage: python -m mailsuite.testing.runner (CONFIG | --spare) [--lifeline FD] [--orphan-remove DIR]\n")
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


def run() -> None:
    """The process entry point: main(), then exit at once.

    Everything is stopped and written by then; skipping the interpreter's
    teardown (module and object clean-up, about a tenth of a second) makes
    the fixture's stop that much shorter.
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
