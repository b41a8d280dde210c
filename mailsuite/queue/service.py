"""Opening the relay queue for a running server (a PART of mailsuite.service).

``open_queue(context)`` sets ``context.queue`` (the
:class:`~mailsuite.queue.runner.RelayQueue`, spool under
``<data_root>/queue``, MX lookups through the server's one resolver,
``context.resolver``) and returns the queue as the service that delivers:
started with the server, it resumes everything in the spool.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.ssl import CertificateOptions, optionsForClientTLS

from mailsuite.queue.runner import RelayQueue
from mailsuite.queue.spool import Spool
from mailsuite.threads import LeanThreadPool

#: Worker threads for spool writes (fsync-bound) and body reads.
QUEUE_THREADS = 4


def tls_options_factory(context: Any) -> Any:
    """``(hostname, verify) -> TLS options`` from the server's TLS provider, with a plain fallback."""

    def options(hostname: str, verify: bool) -> Any:
        provider = context.tls
        if provider is not None and hasattr(provider, "client_options"):
            return provider.client_options(hostname, verify)
        if verify:
            return optionsForClientTLS(hostname)
        return CertificateOptions(verify=False)

    return options


def open_queue(context: Any) -> RelayQueue:
    """Set ``context.queue``; return the delivering service."""
    config = context.config
    pool = LeanThreadPool(QUEUE_THREADS, name="mailsuite-queue")  # started and stopped by the queue service
    queue = RelayQueue(context, Spool(config.data_path / "queue"), context.resolver, pool, tls_options_factory(context))
    context.queue = queue
    return queue
