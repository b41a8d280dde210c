"""SEARCH criteria (RFC 3501 6.4.4, RFC 7162 3.1.5): parse into a tree, evaluate per message.

Modules, each one concern (each imports only those above it):

* :mod:`.text`: header text as keys match it (RFC 2047 words, case folding, address forms).
* :mod:`.structure`: a message's text leaves and header ranges, parsed as little as possible.
* :mod:`.context`: one message during one evaluation (lazy reads, shared cache entry).
* :mod:`.keys`: the key tree and :class:`Query`.
* :mod:`.parser`: the criteria syntax into a :class:`Query`.
* :mod:`.evaluate`: a query over a folder's candidates (cache, batch pre-filters).

Public API:

* ``parse_search(data: bytes) -> Query``: ``[CHARSET x SP] key *(SP key)``
  exactly as it follows ``SEARCH `` in the command (literals in place, as
  :mod:`mailsuite.imap.wire` describes).  Syntax errors raise
  :class:`wire.ParseError` (``BAD``); a charset other than UTF-8/US-ASCII
  raises :class:`BadCharset` (``NO [BADCHARSET (UTF-8 US-ASCII)]``, its
  ``code`` attribute).
* ``Query.key`` is the tree (:class:`Key` nodes, each with ``needs`` =
  "meta", "header" or "body"); ``Query.uses_modseq`` says whether the
  response must carry ``(MODSEQ n)``; ``Query.bind(resolve)`` turns the
  sequence sets into UID sets with the session's resolver, after which the
  key is independent of ``*`` (useful when evaluating in batches).
* ``SearchMessage(seq, info, recent, header, message)``: one message as the
  evaluator sees it; ``header`` and ``message`` are zero-argument callables
  returning the header block / the whole message as bytes, called only when
  a key needs them (at most once each).
* ``matches(query, message, *, last_seq, last_uid) -> bool``.
* ``parse(args, resolve) -> Query`` (``args`` has ``data``/``pos``) and
  ``evaluate(query, candidates, source, headers=None, cache=None, folder=None)
  -> [(seq, uid, modseq)]`` (``source``: the store's ``IMessageOctets``);
  with ``cache`` (the store's :mod:`mailsuite.facts`, from ``IFolder.facts()``)
  what is learnt of each message is shared across searches and sessions.

Implementation notes:

* Flag, size, date, UID, sequence and MODSEQ keys read only the
  :class:`MessageInfo`; header keys read only the header; BODY and TEXT the
  whole message.  AND groups test cheap keys first, so ``SEEN FROM x`` reads
  no header of an unseen message.
* Strings match as case-insensitive substrings (RFC 3501 6.4.4) after
  Unicode case folding.  Header values are matched unfolded with RFC 2047
  encoded words decoded (8-bit octets as UTF-8, else Latin-1); BODY and TEXT
  look at the text parts with their transfer encoding and charset undone,
  TEXT also at the headers (of the message and of encapsulated messages).
* HEADER with an empty string matches every message that has the field.
* BEFORE/ON/SINCE use the internal date's own calendar day; SENTBEFORE/
  SENTON/SENTSINCE the Date: header's day in its own zone ("disregarding
  time and timezone"); a message without a parsable Date: never matches
  those keys.
* ``$`` (SEARCHRES) is not supported and is a ParseError.

Speed without changing an answer (tests/imap/test_search_cache.py compares
every shortcut with a full decode):

* Decoded, folded header values and the Date: day are cached per message
  (:mod:`mailsuite.facts`, keyed by folder incarnation, UID, Maildir name and
  size); so is the MIME structure (header ranges, text leaves with their
  transfer encoding and codec) of messages that needed work to find it.  A
  message without any Content-* header field is one text/plain us-ascii leaf;
  a single-part one is read from its first Content-Type and
  Content-Transfer-Encoding fields; only multiparts and message/rfc822 take a
  full :func:`mime.parse`.
* A field is found by a regex when the header's lines end in LF or CRLF only
  (as :func:`mime.split_fields` would split them; a bare CR takes the
  split_fields path).
* A text part with no transfer encoding to undo, an ASCII-safe stateless
  codec and only ASCII octets is matched as bytes (ASCII case-folds like
  ``bytes.lower()``).
* Negative pre-filters from raw octets, only where decoding cannot create the
  needle: a header block that is ASCII without encoded words, for header
  keys; a whole message that is ASCII with no base64/quoted-printable, only
  readable ASCII-safe charsets and (TEXT) no encoded words, for BODY/TEXT.
  Non-ASCII octets are never pre-filtered: Unicode case folding maps some of
  them to ASCII letters (KELVIN SIGN to "k", LONG S to "s").
"""

from mailsuite.imap.search.evaluate import SENT, evaluate, facts_answer, header_fields_needed, matches, parse
from mailsuite.imap.search.keys import BadCharset, Key, Query
from mailsuite.imap.search.parser import parse_search
from mailsuite.imap.search.structure import (SearchMessage, message_structure, parsed_structure, raw_excludes,
                                             simple_structure, single_part_structure)
from mailsuite.imap.search.context import unfolded_field
from mailsuite.imap.search.text import decode_header_text

__all__ = [
    "BadCharset", "Key", "Query", "SearchMessage", "parse_search", "matches", "parse", "evaluate",
    "decode_header_text", "unfolded_field", "raw_excludes", "simple_structure", "single_part_structure",
    "parsed_structure", "message_structure", "header_fields_needed", "facts_answer", "SENT",
]
