"""A real mailsuite server for other projects' integration tests.

``MailServer`` starts the complete server (SMTP, submission, POP3, IMAP, the
real Maildir store) on ephemeral loopback ports with a temporary data root,
from a plain synchronous test or from Twisted tests, and lets the test look
at what arrived.  The pytest plugin (``mailsuite.testing.pytest_plugin``,
registered through the ``pytest11`` entry point) wraps it in fixtures.
"""

from mailsuite.testing.faults import Fault, FaultPlan
from mailsuite.testing.server import CapturedMessage, MailServer

__all__ = ["CapturedMessage", "Fault", "FaultPlan", "MailServer"]
