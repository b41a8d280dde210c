"""``python -m mailsuite.testing.runner CONFIG``: run a server process for a test fixture.

A lighter start than twistd (no plugin scan, no pid file): load the config,
build the same service twistd would, run the reactor until SIGTERM.  Exits 2
with one line on a configuration error, like twistd does.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; the ready signal is <data_root>/run/ports.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mailsuite.testing.runner CONFIG\n")
        return 2
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from mailsuite.config import load
    from mailsuite.errors import ConfigError
    from mailsuite.logs import LineObserver
    from mailsuite.service import build

    try:
        config = load(args[0])
    except ConfigError as e:
        sys.stderr.write(f"mailsuite: configuration error: {e}\n")
        return 2
    globalLogBeginner.beginLoggingTo([LineObserver(sys.stdout, config.log.level)], redirectStandardIO=False)
    root = build(config, reactor)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
