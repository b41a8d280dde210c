"""The ``mailsuite`` admin command: ``mailsuite [--config PATH] COMMAND ...``.

Commands come from modules listed in :data:`COMMAND_MODULES`; each has a
function ``register(subparsers)`` that receives the ``argparse`` subparsers
object of the top-level parser and adds its commands to it, e.g.::

    def register(subparsers):
        parser = subparsers.add_parser("queue", help="...", description="...")
        parser.set_defaults(func=run_queue)      # func(args) -> int exit status

    def run_queue(args):
        config = mailsuite.cli.load_config(args)   # the parsed --config, checked
        ...
        return 0

A command's ``func`` gets the parsed ``argparse.Namespace`` and returns the
exit status.  It loads the configuration itself with :func:`load_config`
(only commands that need it pay for it) and reports a problem by raising
:class:`CommandError` (message to stderr, exit status 1 unless given);
:class:`mailsuite.errors.ConfigError` becomes exit status 2.  A module that
does not exist (a package not written yet) is skipped.

Exit statuses: 0 done, 1 the operation failed (duplicate, unknown user...),
2 bad usage or an unusable configuration.

The core commands live here: ``check-config`` and ``gen-cert``.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from pathlib import Path
from typing import Sequence

from mailsuite import config as config_module
from mailsuite.config import Config
from mailsuite.errors import ConfigError, MailError

#: Modules contributing commands through ``register(subparsers)``.
COMMAND_MODULES = ("mailsuite.auth.cli", "mailsuite.queue.cli", "mailsuite.mailauth.cli", "mailsuite.testing.capture_cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A command cannot do what was asked; the message is for the admin."""

    def __init__(self, message: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def config_path(args: argparse.Namespace) -> Path:
    """The --config path, or the embedded example configuration."""
    path = getattr(args, "config", None)
    return Path(path) if path else config_module.default_config_path()


def load_config(args: argparse.Namespace) -> Config:
    """The checked configuration named by ``--config`` (ConfigError if unusable)."""
    return config_module.load(config_path(args))


def read_password(args: argparse.Namespace, *, confirm: bool = True) -> str:
    """A new password from stdin (``--password-stdin``: first line) or a prompt; never from argv."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        if not sys.stdin.isatty():
            raise CommandError("no terminal to ask for the password on: pipe it in with --password-stdin", EXIT_USAGE)
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise CommandError("the passwords do not match")
    if not password:
        raise CommandError("the password is empty")
    return password


# -- core commands -------------------------------------------------------------

def _check_config(args: argparse.Namespace) -> int:
    config = config_module.load(args.path)
    enabled = [n for n in config_module.LISTENER_NAMES if config.listener(n).enabled]
    print(f"{args.path}: OK ({len(enabled)} listener(s) enabled: {', '.join(enabled) or 'none'}; data under {config.data_path})")
    if config.tls.certificate:
        from mailsuite.tls import load_server_context

        load_server_context(config.path(config.tls.certificate), config.path(config.tls.key), config.source)
        print(f"TLS certificate and key OK: {config.tls.certificate}")
    return EXIT_OK


def _gen_cert(args: argparse.Namespace) -> int:
    from mailsuite.tls import default_paths, generate_self_signed

    config = load_config(args)
    if bool(args.cert) != bool(args.key):
        raise CommandError("--cert and --key go together", EXIT_USAGE)
    cert_path, key_path = (Path(args.cert), Path(args.key)) if args.cert else default_paths(config)
    if (cert_path.exists() or key_path.exists()) and not args.force:
        raise CommandError(f"{cert_path} or {key_path} exists already: use --force to replace it")
    hostname = args.hostname or config.hostname
    try:
        generate_self_signed(cert_path, key_path, hostname, days=args.days)
    except OSError as e:
        raise CommandError(f"cannot write the certificate: {e}") from None
    print(f"self-signed certificate for {hostname} written to {cert_path} (key: {key_path})")
    print("a running server picks it up on SIGHUP (systemctl reload mailsuite)")
    return EXIT_OK


def _register_core(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "check-config", help="check a configuration file and exit",
        description="Run the same checks as server start-up on PATH; exit 0 if usable, 2 otherwise.",
    )
    parser.add_argument("path", metavar="PATH", help="the TOML configuration file")
    parser.set_defaults(func=_check_config)

    parser = subparsers.add_parser(
        "gen-cert", help="make a self-signed TLS certificate",
        description="Write a self-signed certificate and key (by default where the server looks when "
        "tls.certificate is empty: <data_root>/tls/cert.pem and key.pem).",
    )
    parser.add_argument("--hostname", help="name for the certificate (default: the configured hostname)")
    parser.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    parser.add_argument("--cert", help="certificate path (with --key)")
    parser.add_argument("--key", help="key path (with --cert)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.set_defaults(func=_gen_cert)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: core commands plus every available command module."""
    parser = argparse.ArgumentParser(
        prog="mailsuite",
        description="Administer a mailsuite mail server: users, aliases, domains, configuration, certificates.",
        epilog="Run `mailsuite COMMAND --help` for a command's options.",
    )
    parser.add_argument("--config", "-c", metavar="PATH", help="configuration file (default: the embedded example config, data under ./var)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _register_core(subparsers)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    action = getattr(args, f"{args.command}_command", None)
    name = f"{args.command} {action}" if action else args.command
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"mailsuite: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"mailsuite {name}: error: {e}", file=sys.stderr)
        return e.exit_status
    except MailError as e:
        print(f"mailsuite {name}: error: {e.text}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the imported module's main, so command modules that import
    # mailsuite.cli share its CommandError class with the code catching it.
    from mailsuite.cli import main as _main

    sys.exit(_main())
