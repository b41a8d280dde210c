"""The store contract for the message-access methods the protocols read through
(``IFolder.read_headers``, ``with_messages``, ``facts``): Maildir and in-memory alike
(``any_store``), plus the Maildir specifics of its header cache.

IMAP opens no file itself: header-only FETCH and header SEARCH take header blocks from
``read_headers``, SEARCH evaluates inside ``with_messages``, and what SEARCH learns is kept in
the cache ``facts()`` hands out, which belongs to the store.
"""

from __future__ import annotations

import os

import pytest
from zope.interface.verify import verifyObject

from mailsuite.errors import NoSuchMessage
from mailsuite.facts import FactsCache
from mailsuite.interfaces import FolderFacts, IMessageOctets

from .conftest import deliver_bytes, msg, result

ALICE = "alice@example.test"
BOB = "bob@example.test"

#: Header blocks the contract must reproduce exactly: CRLF, bare LF, no body, no header end.
MESSAGES = [
    msg(1),
    b"Subject: lf\nX-A: 1\n\nbody\n",
    b"Subject: no body\r\n\r\n",
    b"Subject: never ends\r\nX-B: 2\r\n",
]


def expected_header(data: bytes) -> bytes:
    """Up to and including the first empty line (CRLF or LF), else the whole message."""
    out = []
    for line in data.splitlines(keepends=True):
        out.append(line)
        if line in (b"\r\n", b"\n"):
            break
    return b"".join(out)


def stored(any_store, messages=MESSAGES):
    """The messages as the store keeps them (bare LF made CRLF by delivery), with an open INBOX."""
    for data in messages:
        deliver_bytes(any_store, ALICE, data)
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    octets = result(folder.map_messages([m.uid for m in folder.messages()], lambda uid, o: bytes(o)))
    return folder, octets


def test_read_headers_gives_each_header_block_and_leaves_out_missing_messages(any_store):
    """Header blocks end at the first empty line (whole message without one); unknown and
    expunged UIDs are left out, also when asked again (served from the store's cache)."""
    folder, octets = stored(any_store)
    want = {uid: expected_header(data) for uid, data in octets.items()}
    assert result(folder.read_headers([1, 2, 3, 4, 99])) == want
    assert result(folder.read_headers([4, 2])) == {4: want[4], 2: want[2]}
    result(folder.store_flags([2], ["\\Deleted"], "add"))
    result(folder.expunge())
    assert result(folder.read_headers([1, 2, 3])) == {1: want[1], 3: want[3]}


def test_read_headers_with_max_size_leaves_out_longer_blocks(any_store):
    """With ``max_size`` a longer header block is left out (FETCH takes another way for it)."""
    long_header = b"Subject: long\r\nX-Pad: " + b"x" * 5000 + b"\r\n\r\nbody\r\n"
    folder, octets = stored(any_store, [msg(1), long_header])
    assert result(folder.read_headers([1, 2], max_size=1000)) == {1: expected_header(octets[1])}
    assert result(folder.read_headers([1, 2])) == {1: expected_header(octets[1]), 2: expected_header(octets[2])}


def test_with_messages_reads_headers_and_messages_on_demand(any_store):
    """The function gets an IMessageOctets: header blocks and whole messages by UID, exactly the
    stored octets, NoSuchMessage for a message that is not (or no longer) there."""
    folder, octets = stored(any_store)

    def work(source):
        verifyObject(IMessageOctets, source)
        out = {uid: (source.header(uid), source.message(uid)) for uid in octets}
        with pytest.raises(NoSuchMessage):
            source.message(99)
        with pytest.raises(NoSuchMessage):
            source.header(99)
        return out

    assert result(folder.with_messages(work)) == {uid: (expected_header(d), d) for uid, d in octets.items()}
    result(folder.store_flags([1], ["\\Deleted"], "add"))
    result(folder.expunge())
    with pytest.raises(NoSuchMessage):
        result(folder.with_messages(lambda source: source.message(1)))


def test_facts_name_one_folder_incarnation_in_the_stores_cache(any_store):
    """Every session on a folder gets the same number in the store's one cache; another folder,
    another user or a new UIDVALIDITY (folder deleted and made again) gets another."""
    deliver_bytes(any_store, ALICE, msg(1))
    deliver_bytes(any_store, BOB, msg(1))
    mailbox = any_store.user_mailbox(ALICE)
    result(mailbox.create_folder("Box"))
    first = result(mailbox.open_folder("Box")).facts()
    assert isinstance(first, FolderFacts) and isinstance(first.cache, FactsCache)
    again = result(mailbox.open_folder("Box", read_only=True)).facts()
    assert again == first
    inbox = result(mailbox.open_folder("INBOX")).facts()
    bobs = result(any_store.user_mailbox(BOB).open_folder("INBOX")).facts()
    assert inbox.cache is first.cache is bobs.cache
    assert len({first.folder, inbox.folder, bobs.folder}) == 3
    result(mailbox.delete_folder("Box"))
    result(mailbox.create_folder("Box"))
    assert result(mailbox.open_folder("Box")).facts().folder != first.folder


def test_maildir_header_blocks_come_from_the_cache_once_read(store, tmp_path):
    """A header block read once is answered from the store's header cache for every session
    (no file read: it still comes after the file is gone)."""
    deliver_bytes(store, ALICE, msg(1))
    folder = result(store.user_mailbox(ALICE).open_folder("INBOX"))
    block = expected_header(msg(1))
    assert result(folder.read_headers([1])) == {1: block}
    other = result(store.user_mailbox(ALICE).open_folder("INBOX", read_only=True))
    for where in ("new", "cur"):
        for name in os.listdir(tmp_path / "mail" / "example.test" / "alice" / where):
            os.unlink(tmp_path / "mail" / "example.test" / "alice" / where / name)
    assert result(other.read_headers([1])) == {1: block}
    with pytest.raises(NoSuchMessage):
        result(other.with_messages(lambda source: source.header(1)))


def test_a_reader_applies_then_to_the_octets_it_read(any_store):
    """``IMessageReader.read(start, length, then)`` fires with ``then(octets)`` (worked out where
    the store reads: POP3 byte-stuffs there); an exception in ``then`` fails the Deferred."""
    data = msg(1, b"0123456789" * 100)
    deliver_bytes(any_store, ALICE, data)
    folder = result(any_store.user_mailbox(ALICE).open_folder("INBOX"))
    reader = result(folder.open_reader(1))
    assert result(reader.read(5, 10, lambda octets: octets.upper() + b"!")) == data[5:15].upper() + b"!"
    assert result(reader.read(len(data), 10, len)) == 0
    with pytest.raises(ZeroDivisionError):
        result(reader.read(0, 10, lambda octets: 1 / 0))
    reader.close()
