"""SEARCH as the command handlers call it: parse, evaluate, format the answer.

The SEARCH key grammar and its evaluation belong to
:mod:`mailsuite.imap.search`.  This adapter is the one place that feeds the engine the session's view (sequence
numbers, cached flags, \\Recent) and the store's message reader, and formats
``* SEARCH`` (RFC 3501 7.2.5) with CONDSTORE's ``(MODSEQ n)`` (RFC 7162
3.1.5).  CHARSET must be UTF-8 or US-ASCII (RFC 3501 6.4.4); anything else
is answered ``NO [BADCHARSET (UTF-8 US-ASCII)]``.

Searches that only look at flags, sizes, dates or UIDs run on the reactor
thread from cached data; those that read headers or bodies run on the
store's threads in batches (``IFolder.with_messages``: the evaluator reads
each message's header or octets only when a key needs them), so the reactor
keeps serving other sessions.  What they learn of each message (decoded
header values, the MIME structure) is kept in the store's facts cache
(``IFolder.facts()``); header blocks come from ``IFolder.read_headers`` (the
store's header cache, which a client's header FETCH fills) only for messages
whose facts are not cached yet.  No file is opened here.
"""

from __future__ import annotations

from typing import Any

from mailsuite.imap import search as engine
from mailsuite.imap.args import Arguments
from mailsuite.imap.responses import bad

#: Messages evaluated per trip to the store's threads when the criteria read messages.
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

    if criteria.key.needs == "meta":
        matches = engine.evaluate(criteria, candidates, None)
    else:
        facts = folder.facts()
        cache, folder_id = facts.cache, facts.folder
        names = engine.header_fields_needed(criteria.key)
        matches = []
        for start in range(0, len(candidates), BATCH):
            chunk = candidates[start : start + BATCH]
            headers = None
            if criteria.key.needs == "header":
                # header blocks through the store's header cache (a client's header FETCH filled
                # it), only for messages whose decoded fields are not known yet
                if cache.knows_folder(folder_id):
                    get = cache.get_quiet
                    answer = engine.facts_answer
                    unknown = [c[1] for c in chunk if not answer(get((folder_id, c[1], c[2].key, c[2].size)), names)]
                else:
                    unknown = [c[1] for c in chunk]  # nothing learnt about this folder yet
                if unknown:
                    headers = await folder.read_headers(unknown)
            matches.extend(await folder.with_messages(
                lambda source, chunk=chunk, headers=headers: engine.evaluate(criteria, chunk, source, headers, cache, folder_id)))
    numbers = [m[1] if uid else m[0] for m in matches]
    line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if criteria.uses_modseq and matches:
        line += b" (MODSEQ %d)" % max(m[2] for m in matches)
    return line + b"\r\n"
