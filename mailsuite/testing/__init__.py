"""A real mailsuite server for other projects' integration tests.

``MailServer`` starts the complete server (SMTP, submission, POP3, IMAP, the
real Maildir store) on ephemeral loopback ports with a temporary data root,
from a plain synchronous test or from Twisted tests, and lets the test look
at what arrived.  The pytest plugin (``mailsuite.testing.pytest_plugin``,
registered through the ``pytest11`` entry point) wraps it in fixtures.

Names are imported lazily so that the server process started by the fixture
(``python -m mailsuite.testing.runner``) does not pay for the client side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Attachment", "CapturedMessage", "Fault", "FaultPlan", "MailServer", "MailServerError"]

_HOMES = {
    "Attachment": "mailsuite.testing.mailroom",
    "CapturedMessage": "mailsuite.testing.mailroom",
    "Fault": "mailsuite.testing.faults",
    "FaultPlan": "mailsuite.testing.faults",
    "MailServer": "mailsuite.testing.server",
    "MailServerError": "mailsuite.testing.server",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mailsuite.testing' has no attribute {name!r}")
