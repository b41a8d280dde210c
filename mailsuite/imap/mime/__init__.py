"""The IMAP message model: MIME structure, ENVELOPE, BODYSTRUCTURE and BODY[section].

Modules, one concern each: :mod:`.limits` (bounds, message types),
:mod:`.octets` (reading octets, header blocks and fields), :mod:`.lexer`
(structured header values), :mod:`.tree` (the structure parser),
:mod:`.addresses` (addresses, ENVELOPE), :mod:`.structures` (BODY, BODYSTRUCTURE), :mod:`.sections` (BODY[section],
RFC822.*, BINARY) and :mod:`.decoded` (content for SEARCH).

Public API (FETCH calls these; pure functions, no reactor, no store):

* ``envelope(header: bytes) -> bytes``: the ENVELOPE list (RFC 3501 7.4.2),
  from the header block alone.
* ``bodystructure(message, extended=True) -> bytes``: BODYSTRUCTURE
  (``extended=True``) or BODY (``extended=False``); ``extensible=`` is
  accepted as a synonym.
* ``section(message, part, specifier="", names=(), *, binary=False) -> bytes``:
  the octets of ``BODY[part.specifier]`` (RFC 3501 6.4.5); ``part`` is a
  tuple of part numbers, or a whole section text (``"1.2.HEADER.FIELDS (FROM)"``)
  with the other arguments left out.  ``binary`` decodes the
  Content-Transfer-Encoding (RFC 3516 BINARY[]); an unknown encoding raises
  :class:`UnknownTransferEncoding` (``NO [UNKNOWN-CTE]``).
* ``binary_size(message, part) -> int`` for BINARY.SIZE.
* ``rfc822_header`` / ``rfc822_text`` / ``rfc822_size`` for the RFC822.* items.
* ``partial(data, origin, octets) -> bytes``: the ``<origin.octets>`` slice.
* ``read_header(fp) -> bytes``: the header block of an open message, reading
  no further than the blank line.
* ``header_fields(header, names, exclude=False) -> bytes``: HEADER.FIELDS[.NOT].
* ``parse(message) -> Part``: the structure tree (byte offsets), for search
  and tests; ``Part.walk()`` yields ``(part numbers, Part)``.
* ``decoded_body(buf, part) -> bytes`` / ``body_text(buf, part) -> str``:
  a leaf part's content with the transfer encoding (and charset) undone.

``message`` is ``bytes``-like (an ``mmap`` too) or a seekable binary file; files with a
``fileno`` are memory-mapped rather than read, so only the pages a request
touches are loaded.

Implementation notes:

* Structure is parsed from the raw octets in one pass (RFC 2045, 2046):
  sections are returned byte-exact from the stored message, never
  re-serialised.  The CRLF before a boundary delimiter belongs to the
  delimiter (RFC 2046 5.1.1); the epilogue belongs to the multipart.
* Boundaries are matched innermost first against the whole stack of open
  multiparts, so a part missing its close delimiter ends at its parent's
  next delimiter, and a message with no final boundary ends at EOF.  A
  delimiter line is ``--boundary`` [``--``] plus only transport padding
  (RFC 2046 5.1.1; Dovecot also accepts trailing junk, we do not).
  Nesting is limited to :data:`MAX_DEPTH` levels and :data:`MAX_PARTS`
  parts; deeper content is treated as an opaque leaf.
* Work is linear in the message size whatever its shape: delimiters are
  found by one regex per boundary stack, headers end at a blank line or a
  delimiter searched in :attr:`_Parser.WINDOW` windows, each body is scanned
  once, and line counts (body-fld-lines) are computed only for text and
  message/rfc822 parts, from their children's counts.
* Part numbers follow RFC 3501 6.4.5: a non-multipart message is its own
  part 1; the parts of a message/rfc822 are those of the encapsulated
  message; HEADER/TEXT on a message/rfc822 part address the encapsulated
  message, MIME the part's own header.  A part that does not exist is the
  empty string.
* Content-* headers are honoured with or without MIME-Version; an
  unparsable Content-Type falls back to text/plain (RFC 2045 5.2); a
  multipart without a boundary is a leaf; message/rfc822 is always parsed
  as an encapsulated message (its BODYSTRUCTURE needs envelope and body).
* Output follows Dovecot where RFC 3501 leaves a choice: type and parameter
  text as written in the message, ``("charset" "us-ascii")`` added to text
  parts without a charset, RFC 2231 continuations merged into ``name*``,
  Content-Language always a list, MD5 NIL unless a Content-MD5 header exists,
  missing address parts as ``MISSING_MAILBOX``/``MISSING_DOMAIN``, the
  last occurrence of an envelope header wins, encoded words left as they are.
* Nothing here raises on malformed input except :class:`UnknownTransferEncoding`
  for BINARY; structure and envelope degrade to the RFC defaults.
"""

from __future__ import annotations


from mailsuite.imap.mime.structures import bodystructure, structure_of
from mailsuite.imap.mime.decoded import body_text, charset_decoder, decoded_body
from mailsuite.imap.mime.addresses import envelope, parse_addresses
from mailsuite.imap.mime.lexer import content_type, single_token
from mailsuite.imap.mime.limits import MAX_DEPTH, MAX_HEADER_PARSED, MAX_PARTS, Message, UnknownTransferEncoding
from mailsuite.imap.mime.octets import (Field, header_end, header_fields, header_value, partial, read_header, split_fields,
                                        unfold)
from mailsuite.imap.mime.sections import (binary_size, decode_transfer, find_part, rfc822_header, rfc822_size, rfc822_text,
                                          section, section_range, shallow_root)
from mailsuite.imap.mime.tree import Part, parse

__all__ = [
    "Part", "UnknownTransferEncoding", "parse", "envelope", "bodystructure", "section", "partial",
    "binary_size", "rfc822_header", "rfc822_text", "rfc822_size", "read_header", "header_fields", "decoded_body", "body_text", "header_value",
    "split_fields", "unfold", "section_range", "shallow_root", "find_part", "structure_of", "parse_addresses", "Field", "Message",
    "MAX_DEPTH", "MAX_PARTS", "MAX_HEADER_PARSED", "charset_decoder", "content_type", "single_token", "header_end", "decode_transfer",
]
