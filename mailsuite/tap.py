"""`twistd mailsuite`: command-line options to a running MultiService."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from mailsuite import config as config_module
from mailsuite.errors import ConfigError


class Options(usage.Options):
    """Options of `twistd mailsuite`."""

    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file (default: the example config, data under ./var)."],
    ]

    def postOptions(self) -> None:
        path = self["config"] or config_module.default_config_path()
        try:
            self["loaded"] = config_module.load(path)
        except ConfigError as e:
            sys.stderr.write(f"mailsuite: configuration error: {e}\n")
            raise SystemExit(2) from None


def makeService(options: Options) -> Any:
    """Build the server for twistd; the reactor is twistd's global one."""
    from twisted.internet import reactor

    from mailsuite.service import build

    return build(options["loaded"], reactor)
