"""The outbound relay queue: spool, routing, SMTP client delivery, retries, DSN bounces.

Storage layout under ``<data_root>/queue/`` (documented for operators and the CLI):

- ``messages/<id>``: the message exactly as it will be sent (header prefix,
  e.g. the Received line, then the bytes as received; CRLF line ends).
- ``envelopes/<id>.json``: sender, per-recipient state, attempts, times,
  last error (see :class:`mailsuite.queue.spool.QueueEntry`).
- ``tmp/``: files being written; anything here at start-up is debris.
- ``control/``: requests from ``mailsuite queue flush|delete`` to a running
  server (``flush-all``, ``flush-<id>``, ``delete-<id>``), polled twice a
  second and removed once acted upon.
- ``lock``: flock()ed by the running server; the CLI acts on the files
  directly only when it can take this lock itself.

Invariants a contributor must keep:

1. A message is in the queue if and only if its envelope file exists.  The
   message file is written and fsynced first, then the envelope is written to
   ``tmp/``, fsynced and renamed into ``envelopes/`` and the directory
   fsynced; only then does ``enqueue`` fire (the SMTP side says 250 after).
2. Envelope updates are whole-file atomic replacements (tmp + fsync + rename),
   so a crash leaves either the old or the new state.  Removal deletes the
   envelope first, then the message.  Message files without an envelope are
   removed at start-up.
3. A DSN is spooled (fsynced) before the original's envelope records the
   failure, so a crash can duplicate a bounce but never lose one.  A remote
   250 is recorded right after it arrives; a crash in between re-sends (the
   one duplicate RFC 5321 6.1 accepts).
4. A null-sender message is never bounced (RFC 5321 4.5.5, RFC 3464 2).
5. Only the running server changes envelopes; the CLI reads them and sends
   requests through ``control/`` (or edits directly when no server runs).
"""
