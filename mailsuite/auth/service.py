"""Opening the user directory and the login machinery (a PARTS opener).

``open_auth(context)`` sets ``context.directory`` (SQLite at
``<data_root>/users.sqlite3``), ``context.throttle``, ``context.portal`` and
``context.authenticator``, and returns the service that runs the thread
pool on which hashing and SQLite work happen.

With the embedded default configuration (the example config, no
``--config``) and an empty directory, a demo user with a random password is
created and printed once on the terminal (stderr, not the log).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any

from twisted.application import service

from mailsuite.auth.directory import SQLiteDirectory
from mailsuite.auth.login import Authenticator
from mailsuite.auth.portal import make_portal
from mailsuite.auth.throttle import LoginThrottle
from mailsuite.config import Config, default_config_path
from mailsuite.errors import ConfigError
from mailsuite.threads import LeanThreadPool

#: Password checks at once (argon2id: CPU-bound, 64 MiB each); the gate in
#: front of them (mailsuite.auth.gate) keeps the rest waiting, fairly.
AUTH_THREADS = max(2, min(4, os.cpu_count() or 2))
#: The pool has one thread more than the checks may use, so that directory
#: lookups (SMTP RCPT, aliases) never wait behind password hashing.
POOL_THREADS = AUTH_THREADS + 1


def directory_path(config: Config) -> Path:
    """Where the SQLite directory lives."""
    return config.data_path / "users.sqlite3"


def open_directory(config: Config, *, reactor: Any = None, pool: Any = None) -> SQLiteDirectory:
    """The directory for a config (the CLI uses it without reactor or pool)."""
    return SQLiteDirectory(directory_path(config), extra_domains=config.domains, reactor=reactor, pool=pool)


class AuthService(service.Service):
    """Runs the hashing/SQLite thread pool for as long as the server runs."""

    name = "auth"

    def __init__(self, pool: LeanThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # twisted.application is untyped
        self.pool.start()

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        if self.pool.started:
            self.pool.stop()


def is_embedded_default(config: Config) -> bool:
    """True when the server runs on the example config shipped in the package."""
    try:
        return Path(config.source).resolve() == default_config_path()
    except OSError:
        return False


def ensure_demo_user(directory: SQLiteDirectory, config: Config) -> str | None:
    """Create ``demo@<first domain>`` with a random password if the directory has no users.

    Only for the embedded default config, so that the quick start has someone
    to log in as.  The password goes to the terminal once, never to the log.
    """
    if not is_embedded_default(config) or directory.list_users() or not config.domains:
        return None
    address = f"demo@{config.domains[0]}"
    password = secrets.token_urlsafe(12)
    directory.add_user(address, password)
    sys.stderr.write(
        "\n  mailsuite demo user created (embedded default config only):\n"
        f"    address:  {address}\n    password: {password}\n"
        "  change it with: mailsuite user passwd " + address + "\n\n"
    )
    sys.stderr.flush()
    return address


def open_auth(context: Any) -> AuthService:
    """Set context.directory, .throttle, .portal and .authenticator."""
    config = context.config
    pool = LeanThreadPool(POOL_THREADS, name="mailsuite-auth")
    try:
        directory = open_directory(config, reactor=context.reactor, pool=pool)
        ensure_demo_user(directory, config)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(config.source, "data_root", f"cannot open the user directory {directory_path(config)}: {e}") from None
    context.directory = directory
    context.throttle = LoginThrottle.from_config(config.auth, context.reactor)
    context.portal = make_portal(context, directory)
    context.authenticator = Authenticator(context.portal, context.throttle, context.reactor, slots=AUTH_THREADS)
    return AuthService(pool)
