"""SEARCH FROM/TO/CC/BCC look in the envelope's address structure (RFC 3501 6.4.4), HEADER in the text.

Found by Dovecot's imaptest (search-addresses): ``SEARCH FROM user-from@domain.org`` must find
``From: <user-from (comment)@ (comment) domain.org>``, whose envelope address is
``user-from@domain.org`` although its text never spells it.
"""

from __future__ import annotations

import pytest

from mailsuite.facts import FactsCache as SearchCache
from tests.imap.test_search_cache import run

MESSAGES = [
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: a@b.test\r\nSubject: one\r\n\r\nbody\r\n",
    b"From: Plain Person <user-from@domain.org>\r\nTo: a@b.test\r\nSubject: two\r\n\r\nbody\r\n",
    b"From: other@domain.org\r\nTo: a@b.test\r\nSubject: three\r\n\r\nbody\r\n",
    b'From: "Quoted, Name" <"john doe"@example.org>\r\nCc: user-from @ domain.org\r\nSubject: four\r\n\r\nbody\r\n',
    b"From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.org>\r\nBcc: undisclosed: hidden@example.org;\r\nSubject: five\r\n\r\nbody\r\n",
]


@pytest.mark.parametrize("variant", ["no cache", "cold", "warm", "blocks"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"FROM user-from@domain.org", [1, 2]),  # the commented address by its envelope form
        (b"FROM comment", [1]),  # the field's own text still counts
        (b'FROM "john doe@example.org"', [4]),  # quoting undone
        (b'FROM "Quoted, Name"', [4]),
        (b"CC user-from@domain.org", [4]),  # blanks around '@' undone
        (b"FROM jurgen@example.org", [5]),
        (b'CHARSET UTF-8 FROM "J\xc3\xbcrgen <jurgen@"', [5]),  # decoded display name in the envelope form
        (b"BCC hidden@example.org", [5]),  # addresses inside a group
        (b"FROM nobody@domain.org", []),
        (b"HEADER FROM user-from@domain.org", [2]),  # HEADER matches the text after the colon only
        (b"FROM user-from@domain.org SUBJECT one", [1]),
    ],
)
def test_address_keys_match_the_envelope(query: bytes, expected: list[int], variant: str) -> None:
    cache = SearchCache() if variant != "no cache" else None
    if variant == "warm":
        run(MESSAGES, query, cache)
    assert run(MESSAGES, query, cache, blocks=variant == "blocks") == expected
