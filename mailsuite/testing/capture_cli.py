"""``mailsuite capture``: a capture server for development, one command, no twistd.

Every address is a mailbox, any password logs in, nothing is relayed; the
HTTP listener serves the web UI at ``/`` and the JSON API under ``/api``.
It prints where each listener is, then runs until Ctrl-C or SIGTERM, and
removes its temporary data directory on the way out (``--data`` keeps mail
in a directory of your choice instead).

Implementation notes:
- The server runs in this process on the global reactor, built by the same
  ``service.build`` as every other way of running mailsuite; only the
  configuration differs (capture mode, loopback, the ports asked for).
- Listener addresses are printed only once every listener is bound
  (ephemeral ports are known then); ``--json`` prints one JSON object on
  stdout instead, for scripts and tests.
- The server's log goes to ``<data>/capture.log`` unless ``--log -`` (stderr):
  the terminal shows the addresses, not connection chatter.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Listener -> default port: Mailpit's SMTP and HTTP ports, ephemeral ports for the rest.
DEFAULT_PORTS = {"smtp": 1025, "http": 8025, "submission": 0, "submissions": 0, "pop3": 0, "pop3s": 0, "imap": 0, "imaps": 0}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``capture`` to the ``mailsuite`` command (see mailsuite.cli.COMMAND_MODULES)."""
    parser = subparsers.add_parser(
        "capture", help="run a capture server for development and tests",
        description="Start a capture server: any recipient is stored in a mailbox of its own, nothing is relayed, "
        "any address logs in over POP3/IMAP with any password, and the web UI and JSON API are served over HTTP. "
        "Prints the ports, then runs until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address every listener binds (default 127.0.0.1)")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}", type=int, metavar="PORT", dest=f"port_{name}", default=None,
                            help=f"{name} port (default {port or 'any free port'}; 0: any free port)")
    parser.add_argument("--ephemeral", action="store_true", help="every listener on a free port chosen by the system")
    parser.add_argument("--data", metavar="DIR", help="keep mail in DIR (default: a temporary directory removed at exit)")
    parser.add_argument("--domain", action="append", metavar="DOMAIN", help="default domain for bare user names (default example.test)")
    parser.add_argument("--hostname", default="mail.example.test", help="the name the server greets with")
    parser.add_argument("--log", metavar="PATH", help="server log file ('-': stderr; default <data>/capture.log)")
    parser.add_argument("--json", action="store_true", help="print the listeners as one JSON object on stdout")
    parser.set_defaults(func=run)


def settings(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """The dotted config settings of the capture server these options ask for."""
    from mailsuite.config import LISTENER_NAMES

    values: dict[str, Any] = {
        "hostname": args.hostname,
        "domains": [d.lower() for d in (args.domain or ["example.test"])],
        "data_root": str(data_root),
        "tls.allow_plaintext_auth": True,
        "capture.enabled": True,
        "capture.http_enabled": True,
        "capture.http_address": args.host,
        "mailauth.verify_inbound": False,
    }
    for name in [*LISTENER_NAMES, "http"]:
        port = getattr(args, f"port_{name}")
        port = 0 if args.ephemeral and port is None else port if port is not None else DEFAULT_PORTS[name]
        if name == "http":
            values["capture.http_port"] = port
        else:
            values[f"{name}.address"] = args.host
            values[f"{name}.port"] = port
    return values


def describe(host: str, ports: dict[str, int], data_root: Path) -> dict[str, Any]:
    """What the command prints: the listeners and where the UI and API are."""
    shown = f"[{host}]" if ":" in host else host
    http = f"http://{shown}:{ports['http']}" if "http" in ports else None
    return {
        "host": host,
        "ports": ports,
        "ui": f"{http}/" if http else None,
        "api": f"{http}/api" if http else None,
        "data": str(data_root),
    }


def run(args: argparse.Namespace) -> int:
    """Start, print the listeners, run until stopped; 0 on a clean stop."""
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from mailsuite.cli import CommandError
    from mailsuite.config import parse
    from mailsuite.errors import ConfigError
    from mailsuite.logs import LineObserver
    from mailsuite.service import build
    from mailsuite.testing.process import render_toml

    temporary = args.data is None
    data_root = Path(tempfile.mkdtemp(prefix="mailsuite-capture-")) if temporary else Path(args.data).resolve()
    try:
        data_root.mkdir(parents=True, exist_ok=True)
        config_path = data_root / "capture.toml"
        text = render_toml(settings(args, data_root / "data"))
        try:
            config = parse(text, str(config_path))
        except ConfigError as e:
            raise CommandError(str(e), 2) from None
        config_path.write_text(text)
        if args.log == "-":
            observer: Any = LineObserver(sys.stderr)
        else:
            log_file = open(args.log or data_root / "capture.log", "a", encoding="utf-8")  # noqa: SIM115 - open for the reactor's life
            observer = textFileLogObserver(log_file)
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        root = build(config, reactor)
        outcome: dict[str, Any] = {}

        def listening(_: Any) -> None:
            info = describe(args.host, root.bound_ports(), data_root if not temporary else data_root / "data")
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                print(_human(info, temporary), flush=True)

        listen_failed = root._listen_failed

        def failed(failure: Any) -> None:
            # Said and cleaned up at once: the service then ends the process with status 1.
            error = failure.value.subFailure.value if hasattr(failure.value, "subFailure") else failure.value
            outcome["error"] = f"cannot listen: {error}"
            print(f"mailsuite capture: error: {outcome['error']}", file=sys.stderr, flush=True)
            if temporary:
                shutil.rmtree(data_root, ignore_errors=True)
            listen_failed(failure)

        # The service gathers its listeners' readiness (consuming a failure); take its failure hook.
        root._listen_failed = failed  # type: ignore[method-assign]

        def start() -> None:
            root.startService()
            if "error" not in outcome:
                readies = [s.ready for s in root.listeners() if s.ready is not None]
                defer.gatherResults(readies, consumeErrors=True).addCallback(lambda _: None if "error" in outcome else listening(None))

        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
        reactor.run()
        if "error" in outcome:
            raise CommandError(outcome["error"])
        return 0
    finally:
        if temporary:
            shutil.rmtree(data_root, ignore_errors=True)


def _human(info: dict[str, Any], temporary: bool) -> str:
    host = info["host"]
    lines = ["mailsuite capture server: every address is a mailbox, any password logs in, nothing is relayed"]
    for name, port in info["ports"].items():
        if name != "http":
            lines.append(f"  {name:<12} {host}:{port}")
    if info["ui"]:
        lines.append(f"  {'web UI':<12} {info['ui']}")
        lines.append(f"  {'JSON API':<12} {info['api']}")
    lines.append(f"  {'mail':<12} {info['data']}" + (" (removed at exit)" if temporary else ""))
    lines.append("Stop with Ctrl-C or SIGTERM.")
    return "\n".join(lines)
