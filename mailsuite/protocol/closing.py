"""Closing a connection whose peer may not read its last replies.

Implementation notes:

- ``loseConnection`` closes only once everything written has been sent.
  A client that stopped reading never lets the write buffer drain, so the
  connection would stay open for ever: the caller's deadline is set to
  ``grace`` seconds and, when it expires on a connection still open, the
  caller aborts it (``abortConnection``).
- The protocol is unregistered as the transport's producer first: while a
  registered producer is paused, Twisted keeps the transport open after
  ``loseConnection`` (TLS transports included).
"""

from __future__ import annotations

from typing import Any

from mailsuite.protocol.deadline import Deadline


def close_with_grace(transport: Any, deadline: Deadline, grace: float, *, unregister: bool = True) -> None:
    """Close ``transport`` once its output is sent; ``deadline`` expires after ``grace`` seconds for the abort."""
    if unregister:
        transport.unregisterProducer()
    transport.loseConnection()
    deadline.set(grace)
