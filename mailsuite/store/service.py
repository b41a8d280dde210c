"""Opening the store for a running server (a PART of mailsuite.service).

``open_store(context)`` builds the Maildir store under ``<data root>/mail``
with its own thread pool (disk work never runs on the reactor thread), the
configured default quota and the user directory for per-user overrides, sets
``context.store`` and returns the service that starts and stops the pool.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service

from mailsuite.store.maildir import MaildirStore
from mailsuite.store.quota import QuotaLimits
from mailsuite.store.spares import SPARE_DIRNAME, SparePool
from mailsuite.threads import LeanThreadPool, Runner

#: Worker threads for disk work.  A delivery spends nearly all its time waiting
#: in fsync (file, then directory), and the filesystem's journal commits
#: concurrent fsyncs together, so throughput grows with the deliveries in
#: flight: with 8 threads, 20 SMTP clients queued behind the pool and got
#: 8 / (fsync latency) messages/s.  More threads than needed cost CPU in GIL
#: hand-offs (measured: 64 threads used ~10% more CPU per message than 16 at
#: the same rate), so the pool is sized for a few dozen deliveries in flight.
STORE_THREADS = 24

#: Empty files kept ready for deliveries (mailsuite.store.spares): more than
#: the deliveries that can be in flight at once, so a burst rarely finds none.
SPARE_FILES = 32


class StoreService(service.Service):
    """Starts the store's thread pool with the server and stops pool and watcher with it."""

    name = "store"

    def __init__(self, store: MaildirStore, pool: LeanThreadPool, spares: SparePool | None = None) -> None:
        self.store = store
        self.pool = pool
        self.spares = spares

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # twisted.application is untyped
        self.pool.start()
        self.store.runner.run(self.store.clean_incoming)
        if self.spares is not None:
            # deliveries create their own files until the pool is filled
            self.store.spares = self.spares
            self.store.runner.run(self.spares.start).addErrback(
                lambda f: self.store.log.failure("spare message files unavailable", f))

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        self.store.close()
        if self.pool.started:
            self.pool.stop()
        if self.spares is not None:
            self.store.spares = None
            self.spares.stop()


def open_store(context: Any) -> StoreService:
    """Set ``context.store`` to the Maildir store of the configured data root."""
    config = context.config
    pool = LeanThreadPool(STORE_THREADS, name="mailsuite-store")
    store = MaildirStore(
        config.data_path / "mail",
        runner=Runner(context.reactor, pool),
        clock=context.reactor,
        default_quota=QuotaLimits(config.quota.bytes, config.quota.messages),
        directory=_DirectoryRef(context),
    )
    context.store = store
    return StoreService(store, pool, SparePool(os.path.join(store.root, SPARE_DIRNAME), SPARE_FILES))


class _DirectoryRef:
    """Looks the directory up on the context at call time (capture mode may replace it after us)."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def get_user(self, address: str) -> Any:
        directory = self._context.directory
        if directory is None or not hasattr(directory, "get_user"):
            return None
        return directory.get_user(address)
