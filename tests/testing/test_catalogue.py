"""Mailpit's search syntax and the grouping of per-mailbox copies into one message (no server needed)."""

from __future__ import annotations

import datetime

import pytest

from mailsuite.testing import mimeview
from mailsuite.testing.catalogue import Entry, _created, _transaction_bytes, matcher

RECEIVED = ("Received: from [127.0.0.1] ([127.0.0.1])\r\n\tby mail.example.test (mailsuite) with ESMTP id {qid}\r\n"
            "\tfor <x@example.test>;\r\n\tMon, 07 Dec 2026 23:46:25 -0000\r\n")


def entry(entry_id: str, headers: str, body: str = "body\r\n", *, qid: str = "1a252e6c63e09df601") -> Entry:
    raw = ("Return-Path: <s@sender.example>\r\nDelivered-To: x@example.test\r\n" + RECEIVED.format(qid=qid) + headers + "\r\n" + body).encode()
    tx = _transaction_bytes(raw)
    view = mimeview.view(tx)
    return Entry(entry_id, tx, view, _created(view))


MESSAGES = [
    entry("a", "From: Alice Example <alice@sender.example>\r\nTo: bob@example.test\r\nSubject: Welcome aboard\r\n",
          "Your meeting notes are ready.\r\n"),
    entry("b", "From: dave@sender.example\r\nTo: Erin <erin@example.test>\r\nCc: frank@example.test\r\nSubject: Invoice 42\r\n"
               "Message-ID: <inv-42@sender.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n",
          "--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\nContent-Type: application/pdf\r\n"
          "Content-Disposition: attachment; filename=invoice.pdf\r\n\r\n%PDF\r\n--XX--\r\n"),
    entry("c", "From: alice@sender.example\r\nTo: bob@example.test\r\nSubject: Reminder: invoice due\r\n"),
]


@pytest.mark.parametrize(("query", "expected"), [
    ("invoice", ["b", "c"]),
    ("INVOICE", ["b", "c"]),
    ("from:alice", ["a", "c"]),
    ("-from:alice", ["b"]),
    ("!from:alice", ["b"]),
    ("to:erin", ["b"]),
    ("to:Erin", ["b"]),
    ("cc:frank", ["b"]),
    ("subject:invoice", ["b", "c"]),
    ('subject:"invoice 42"', ["b"]),
    ('"meeting notes"', ["a"]),
    ("meeting notes", ["a"]),
    ("from:alice subject:reminder", ["c"]),
    ("message-id:inv-42", ["b"]),
    ("has:attachment", ["b"]),
    ("-has:attachment", ["a", "c"]),
    ("is:unread", ["b", "c"]),
    ("is:read", ["a"]),
    ("larger:10000", []),
    ("smaller:10k", ["a", "b", "c"]),
    ("nothing-like-this", []),
    ("-", ["a", "b", "c"]),  # no letters or digits: ignored, as in Mailpit
    ('subject:"unbalanced', []),
])
def test_search_syntax(query: str, expected: list[str]) -> None:
    test = matcher(query, read={"a"})
    assert [e.id for e in MESSAGES if test(e)] == expected


def test_copies_differ_only_in_delivered_to() -> None:
    head = "Return-Path: <s@sender.example>\r\nDelivered-To: {to}\r\nSubject: x\r\n\r\nbody\r\n"
    one, two = (_transaction_bytes(head.format(to=to).encode()) for to in ("a@example.test", "b@example.test"))
    assert one == two == b"Return-Path: <s@sender.example>\r\nSubject: x\r\n\r\nbody\r\n"


def test_created_to_the_millisecond_from_the_queue_id() -> None:
    precise = MESSAGES[0].created
    assert precise == datetime.datetime(2026, 12, 7, 23, 46, 25, 470000, tzinfo=datetime.timezone.utc)
    # An id whose clock part does not agree with the Received date is not trusted: the date alone counts.
    other = entry("d", "Subject: x\r\n", qid="0000000000009df601")
    assert other.created == datetime.datetime(2026, 12, 7, 23, 46, 25, tzinfo=datetime.timezone.utc)
