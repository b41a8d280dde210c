"""SEARCH as the command handlers call it: parse, evaluate, format the answer.

The SEARCH key grammar and its evaluation belong to
:mod:`mailsuite.imap.search`.  This adapter is the one place that feeds the engine the session's view (sequence
numbers, cached flags, \\Recent) and the store's message reader, and formats
``* SEARCH`` (RFC 3501 7.2.5) with CONDSTORE's ``(MODSEQ n)`` (RFC 7162
3.1.5).  CHARSET must be UTF-8 or US-ASCII (RFC 3501 6.4.4); anything else
is answered ``NO [BADCHARSET (UTF-8 US-ASCII)]``.

Searches that only look at flags, sizes, dates or UIDs run on the reactor
thread from cached data; those that read headers or bodies run on a worker
thread in batches, so the reactor keeps serving other sessions.  What they
learn of each message (decoded header values, the MIME structure) is kept in
the shared :mod:`mailsuite.imap.search_cache`; header blocks are taken from
:mod:`mailsuite.imap.header_cache` (a client's header FETCH fills it) only
for messages whose facts are not cached yet.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import threads

from mailsuite.imap import header_cache, search_cache
from mailsuite.imap import search as engine
from mailsuite.imap.args import Arguments
from mailsuite.imap.fetch import read_headers
from mailsuite.imap.responses import bad

#: Messages evaluated per worker-thread trip when the criteria read files.
BATCH = 1000


async def search(server: Any, selected: Any, args: Arguments, *, uid: bool) -> bytes:
    """The ``* SEARCH ...`` line for the criteria in ``args``."""
    if args.accept(b"CHARSET "):
        charset = args.astring().decode("ascii", "replace").upper()
        if charset not in ("UTF-8", "US-ASCII"):
            raise engine.BadCharset(charset)  # answered in responses.failure_response
        args.space()
    if args.accept(b"RETURN "):
        raise bad("ESEARCH is not supported")
    try:
        criteria = engine.parse(args, lambda ranges, is_uid: selected.resolve(ranges, uid=is_uid))
    except ValueError as e:  # an invalid sequence number (or a parse error)
        raise bad(str(e) or "Invalid search") from None
    if criteria.uses_modseq:
        server.condstore = True  # RFC 7162 3.1
    recent = selected.recent()
    candidates = [(i + 1, u, selected.info[u], u in recent) for i, u in enumerate(selected.uids)]
    folder = selected.folder

    def opener(message_uid: int) -> Any:
        return lambda: folder.open_message(message_uid)

    if criteria.key.needs == "meta":
        matches = engine.evaluate(criteria, candidates, opener)
    else:
        cache = search_cache.CACHE
        folder_id = cache.folder_id(header_cache.folder_key(server, folder))
        names = engine.header_fields_needed(criteria.key)
        # whole messages in one read where the store offers it (Maildir), else through open_message
        reader = getattr(folder, "read_message", None)
        matches = []
        pool = getattr(server.reactor, "getThreadPool", None)
        for start in range(0, len(candidates), BATCH):
            chunk = candidates[start : start + BATCH]
            headers = None
            if criteria.key.needs == "header":
                # header blocks through the shared cache (a client's header FETCH filled it),
                # only for messages whose decoded fields are not known yet
                if cache.knows_folder(folder_id):
                    get = cache.get_quiet
                    answer = engine.facts_answer
                    unknown = [c[1] for c in chunk if not answer(get((folder_id, c[1], c[2].key, c[2].size)), names)]
                else:
                    unknown = [c[1] for c in chunk]  # nothing learnt about this folder yet
                if unknown:
                    headers = await read_headers(server, folder, unknown)
            if pool is None:
                matches.extend(engine.evaluate(criteria, chunk, opener, headers, cache, folder_id, reader))
            else:
                matches.extend(await threads.deferToThreadPool(
                    server.reactor, pool(), engine.evaluate, criteria, chunk, opener, headers, cache, folder_id, reader))
    numbers = [m[1] if uid else m[0] for m in matches]
    line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if criteria.uses_modseq and matches:
        line += b" (MODSEQ %d)" % max(m[2] for m in matches)
    return line + b"\r\n"



