"""pytest plugin (entry point ``pytest11``): ``mail_server`` fixtures backed by a real mailsuite.

- ``mail_server``: a fresh server for one test (function scope).
- ``mail_server_session``: one server for the whole session, purged before each test.
- ``@pytest.mark.mailsuite(strict=True)`` on a test, or ``--mailsuite-strict``
  on the command line, selects strict mode (production policies) instead of
  capture mode; the marker also takes ``domains`` and ``config``.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from mailsuite.testing.server import MailServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailsuite")
    group.addoption("--mailsuite-strict", action="store_true", default=False, help="run mail_server fixtures in strict mode (real policies) instead of capture mode")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mailsuite(strict=False, domains=None, config=None): options for the mail_server fixture")


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The MailServer keywords for this test: --mailsuite-strict, then the test's mailsuite marker."""
    options: dict[str, Any] = {"strict": bool(request.config.getoption("--mailsuite-strict"))}
    marker = request.node.get_closest_marker("mailsuite")
    if marker is not None:
        options.update({k: v for k, v in marker.kwargs.items() if v is not None})
    return options


def _key(options: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in options.items()))


@pytest.fixture
def mail_server(request: pytest.FixtureRequest) -> Iterator[MailServer]:
    """A complete mail server (SMTP, submission, POP3, IMAP, HTTP API) for this test only."""
    with MailServer(**_options(request)) as server:
        yield server


@pytest.fixture(scope="session")
def _mailsuite_session_servers() -> Iterator[dict[str, MailServer]]:
    """The session's shared servers, one per set of options (capture, strict...), started on first use."""
    servers: dict[str, MailServer] = {}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def mail_server_session(request: pytest.FixtureRequest, _mailsuite_session_servers: dict[str, MailServer]) -> MailServer:
    """The session's shared mail server for this test's options (the mailsuite marker counts),
    emptied before the test: messages, faults and failed-login records."""
    options = _options(request)
    server = _mailsuite_session_servers.get(_key(options))
    if server is None:
        server = _mailsuite_session_servers[_key(options)] = MailServer(**options).start()
    server.purge()
    if server.strict:
        server.reset_throttle()
    return server
