"""``python -m mailsuite.testing.runner CONFIG [--lifeline FD] [--orphan-remove DIR]``: a fixture's server process.

``python -m mailsuite.testing.runner --fork-server`` instead imports the
server once and forks one per request (:func:`fork_server`); the fixture
starts its servers that way.

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

import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

from mailsuite.compat import renew_forked_reactor


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


def _import_server() -> None:
    """Import what a capture server runs (most fixtures; a strict one imports the rest at start)."""
    import importlib

    import mailsuite.service as service

    for target in [*(p for p in service.PARTS if p not in service.CAPTURE_SKIPS), *service.LISTENER_BUILDERS.values()]:
        importlib.import_module(target.partition(":")[0])
    for name in ("mailsuite.imap.server", "mailsuite.logs", "mailsuite.config", "twisted.logger"):
        importlib.import_module(name)


#: Sent by the kernel to a forked server when the fork server dies (PR_SET_PDEATHSIG).
ORPHAN_SIGNAL = signal.SIGUSR2


def fork_server() -> None:
    """``--fork-server``: import the server once, then fork one server per request.

    Each line on stdin is a JSON object ``{"config", "log", "cwd", "remove"}``;
    the answer on stdout is the new server's process id.  A fork costs a few
    milliseconds where a new interpreter costs the imports of Twisted, OpenSSL
    and every protocol (about a third of a second of CPU), so every fixture
    start after the first is fast even on a busy machine.

    Lifelines: end-of-file on stdin (the test process is gone) ends this
    process; the kernel then sends each forked server :data:`ORPHAN_SIGNAL`
    (PR_SET_PDEATHSIG; this process has one thread, so the signal means what
    it says), and the server stops and removes its temporary directory.
    Children are reaped by the kernel (SIGCHLD ignored).
    """
    from twisted.internet import reactor  # installed here (twisted.mail imports it anyway); renewed per child

    _import_server()
    if type(reactor).__name__ != "EPollReactor":
        sys.exit(3)  # the renewal below knows this reactor only: the fixture falls back to new processes
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    me = os.getpid()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            os._exit(0)
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _forked(request, me, reactor)
            finally:
                os._exit(status)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _forked(request: dict[str, str], parent: int, reactor: Any) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, int(ORPHAN_SIGNAL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        return 0  # the fork server died meanwhile: nobody wants this server
    if not renew_forked_reactor(reactor):
        return 1  # this Twisted lacks the internals: the caller starts a new interpreter instead
    import mailsuite.smtp.headers as smtp_headers
    import secrets

    smtp_headers._ID_PROCESS = secrets.token_hex(3)  # queue ids tell this process from its siblings
    status = serve(request["config"], remove=request["remove"], orphan_signal=ORPHAN_SIGNAL)
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or the parent's death); the ready signal is <data_root>/run/ports.json."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--fork-server"]:
        fork_server()
    try:
        parsed = _parse(args)
    except (StopIteration, ValueError):
        parsed = None
    if parsed is None:
        sys.stderr.write("usage: python -m mailsuite.testing.runner CONFIG [--lifeline FD] [--orphan-remove DIR] | --fork-server\n")
        return 2
    config_path, lifeline, remove = parsed
    return serve(config_path, lifeline=lifeline, remove=remove)


def serve(config_path: str, *, lifeline: int | None = None, remove: str | None = None, orphan_signal: int | None = None) -> int:
    """Build and run the server of ``config_path`` until stopped.

    It stops as an orphan, removing ``remove``, when ``lifeline`` reads
    end-of-file or ``orphan_signal`` arrives (the parent-death signal of a
    forked server, see :func:`fork_server`).
    """
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
    globalLogBeginner.beginLoggingTo([LineObserver(sys.stdout, config.log.level)], redirectStandardIO=False)
    root = build(config, reactor)
    orphaned: list[bool] = []

    def on_orphaned() -> None:
        orphaned.append(True)
        if reactor.running:
            reactor.stop()

    if lifeline is not None:
        watch_lifeline(lifeline, reactor, on_orphaned)
    if orphan_signal is not None:
        signal.signal(orphan_signal, lambda *_: reactor.callFromThread(on_orphaned))
        if os.getppid() == 1:  # the parent died before the signal was asked for
            reactor.callWhenRunning(on_orphaned)
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
