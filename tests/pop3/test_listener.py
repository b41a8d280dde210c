"""The POP3 listener factory: what it needs from the server context."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import task

from mailsuite.config import parse
from mailsuite.pop3.listener import build_factory
from mailsuite.service import ServerContext
from mailsuite.testing.capture import CaptureAuthenticator, CaptureDirectory
from mailsuite.testing.process import render_toml


def _context(root: Path) -> ServerContext:
    config = parse(render_toml({"hostname": "mail.example.test", "domains": ["example.test"], "data_root": str(root)}), str(root / "c.toml"))
    return ServerContext(config=config, reactor=task.Clock())


def test_a_context_without_authenticator_is_refused_at_build_time(tmp_path: Path) -> None:
    """No stand-in that fails every login at run time: service.py always opens the auth part first."""
    context = _context(tmp_path)
    with pytest.raises(RuntimeError, match="authenticator"):
        build_factory(context, "pop3", context.config.listener("pop3"))


def test_the_sessions_get_the_contexts_authenticator(tmp_path: Path) -> None:
    context = _context(tmp_path)
    context.authenticator = CaptureAuthenticator(CaptureDirectory("example.test"), context)
    factory = build_factory(context, "pop3", context.config.listener("pop3"))
    assert factory.settings.authenticator is context.authenticator
