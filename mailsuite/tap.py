"""`twistd mailsuite`: command-line options to a running MultiService.

Configuration problems (the TOML file, or a TLS certificate/key it names)
end start-up with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.python import usage

from mailsuite import config as config_module
from mailsuite.errors import ConfigError

#: Exit status for an unusable configuration (the same as `mailsuite check-config`).
CONFIG_ERROR_EXIT = 2


def fail(error: ConfigError) -> NoReturn:
    """Print one clear line about a configuration problem and leave with status 2."""
    sys.stderr.write(f"mailsuite: configuration error: {error}\n")
    sys.stderr.flush()
    raise SystemExit(CONFIG_ERROR_EXIT)


class Options(usage.Options):
    """Options of `twistd mailsuite`."""

    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file (default: the example config, data under ./var)."],
    ]
    optFlags = [
        ["capture", None, "Capture server for development and tests: accept mail for any address, relay nothing, "
         "let any address log in with any password, serve the HTTP JSON API (capture.http_port)."],
    ]

    def postOptions(self) -> None:
        path = self["config"] or config_module.default_config_path()
        try:
            loaded = config_module.load(path)
        except ConfigError as e:
            fail(e)
        if self["capture"]:
            loaded = capture_mode(loaded)
        self["loaded"] = loaded
        twistd_options = getattr(self, "parent", None)  # set when run as `twistd mailsuite`
        if twistd_options is not None:
            from mailsuite.logs import configure_twistd

            configure_twistd(twistd_options, loaded.log.level)


def capture_mode(config: config_module.Config) -> config_module.Config:
    """The same configuration switched to capture mode (``--capture``)."""
    from dataclasses import replace

    return replace(
        config,
        capture=replace(config.capture, enabled=True, http_enabled=True),
        tls=replace(config.tls, allow_plaintext_auth=True),
    )


def makeService(options: Options) -> Any:
    """Build the server for twistd; the reactor is twistd's global one."""
    from twisted.internet import reactor

    from mailsuite.service import build

    try:
        return build(options["loaded"], reactor)
    except ConfigError as e:
        fail(e)
